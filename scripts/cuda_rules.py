"""CUDA's autocast on the CPU, simulated: what a step under ``torch.autocast('cuda')`` gives each op, on CPU tensors.

CPU autocast and CUDA autocast cast different ops: CUDA runs ``sum``, ``softmax``, ``exp``,
``log``, ``pow``, the norms and more in fp32, and ``addmv``, ``baddbmm``, the convolutions
and the matmuls in the low dtype; CPU autocast has other lists. :class:`CudaAutocast` runs
CPU tensors under CUDA's rules, taken from the installed torch itself rather than from a
list typed or parsed here: torch registers its CUDA autocast kernels (``autocast_mode.cpp``)
in every build, the CPU-only wheel included, and they run on fake tensors that claim to be
on CUDA (``FakeTensorMode``: shapes and dtypes, no data, no GPU).

While it is active, every op that CPU or CUDA autocast registers a kernel for runs through
one Python kernel at the ``AutocastCPU`` dispatch key, the key CPU autocast itself uses:
- the op is called once on fake CUDA twins of its arguments (same shapes, strides and
  dtypes) with CUDA autocast on, and stopped at the next key down (``AutogradCUDA``), where
  what CUDA's kernel handed on is recorded: the op (or the overload that takes a dtype),
  each tensor's dtype and any ``dtype`` it set (cached by the op and its arguments' dtypes);
- the real CPU arguments are cast to those dtypes, and the op runs below autocast.

So an op of CUDA's lists gets its inputs cast and runs its insides without autocast; any
other op (and every function written in Python on top of ops, ``F.multi_head_attention_forward``
for one) runs with the rules still applied to what it calls; the casts go through autograd
(the autocast key is above it), as CUDA's do; in-place ops and explicit ``dtype=`` calls are
left alone, as CUDA's kernels leave them; an op CUDA autocast refuses
(``binary_cross_entropy``) raises CUDA's own message. Ops only CPU autocast lists run
uncast. CUDA autocast's own flag is on while it is active, so code that turns it off around
a call (``torch.autocast('cuda', enabled=False)``) gets its ops uncast there, as on CUDA. :class:`MmcvKernels` holds mmcv's compiled ops to the dtypes their CUDA launchers
take, and :func:`simulated` puts both together. What it cannot show: CUDA's kernels'
numerics and speed (docs/cuda-rules.md).
"""

from __future__ import annotations

import contextlib
import json
import sys
import warnings
from pathlib import Path
from types import TracebackType
from typing import Any, Callable, Dict, Iterator, List, Optional, Set, Tuple, Type

import torch
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils._python_dispatch import _disable_current_modes
from torch.utils._pytree import tree_leaves, tree_map

from scripts.mmcv_references import REFERENCES

#: The dispatch keys whose kernels the simulation replaces (CPU's), consults (CUDA's), and
#: stops a fake CUDA call at once CUDA's have cast its arguments (the next one down).
CPU_KEY, CUDA_KEY, HANDED_KEY = "AutocastCPU", "AutocastCUDA", "AutogradCUDA"
_BELOW_AUTOCAST = torch._C.DispatchKeySet(torch._C.DispatchKey.AutocastCPU)


def registered(key: str) -> List[str]:
    """The ops (``aten::name.overload``) that have a kernel at dispatch key ``key``."""
    return sorted(torch._C._dispatch_get_registrations_for_dispatch_key(key))


def _overload(name: str) -> Any:
    """The op overload ``aten::name.overload`` (``aten::sum``: ``torch.ops.aten.sum.default``)."""
    namespace, _, rest = name.partition("::")
    op, _, overload = rest.partition(".")
    return getattr(getattr(getattr(torch.ops, namespace), op), overload or "default")


class _Handed(Exception):
    """Raised where a fake CUDA call reaches the op below CUDA autocast (at ``AutogradCUDA``):
    the op autocast's kernel handed on (the op itself, or for the fp32 ops that take an
    output dtype the overload that does) and its arguments, cast. Nothing of a fake CUDA
    tensor runs beyond that (a convolution's fake kernel asks for a CUDA device)."""

    def __init__(self, op: Any, args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> None:
        super().__init__(op)
        self.op, self.bound = op, _bound(op, args, kwargs)


def _bound(op: Any, args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> Dict[str, Any]:
    """The arguments of a call of ``op`` by their names in its schema."""
    names = [argument.name for argument in op._schema.arguments]
    return {**dict(zip(names, args)), **kwargs}


def _call(op: Any, bound: Dict[str, Any]) -> Any:
    """``op`` called with arguments by name: the positional ones in order, the rest by keyword."""
    positional = [a.name for a in op._schema.arguments if not a.kwarg_only and a.name in bound]
    return op(*(bound[name] for name in positional), **{k: v for k, v in bound.items() if k not in positional})


def _below_autocast(op: Any, args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> Any:
    """``op`` run as it is, below the autocast keys."""
    with torch._C._ExcludeDispatchKeyGuard(_BELOW_AUTOCAST):
        return op(*args, **kwargs)


class CudaAutocast:
    """``with CudaAutocast(torch.float16):`` runs CPU tensors under CUDA's autocast rules in
    that dtype (see the module's docstring); it enters CPU autocast too, whose key it uses.

    With ``fp32_arithmetic``, an op that CUDA's autocast runs in fp16 (it hands fp32 inputs on
    as fp16: the convolutions, the matmuls, ``linear``...) computes as a GPU's fp16 kernels
    do, cuDNN's and cuBLAS's, which accumulate in fp32: in fp32 on its fp16 inputs, its output
    rounded to fp16. The CPU's own fp16 convolutions and large matmuls are 20 to 50 times
    slower than its fp32 ones on CPUs without fp16 arithmetic, which makes an fp16 model step
    take minutes. Every op gets the inputs and gives the outputs it does without; inside
    such an op the arithmetic is fp32."""

    def __init__(self, dtype: torch.dtype, fp32_arithmetic: bool = False) -> None:
        self.dtype = dtype
        self.fp32_arithmetic = fp32_arithmetic and dtype is torch.float16
        self._fake = FakeTensorMode(allow_non_fake_inputs=True)
        self._cuda = set(registered(CUDA_KEY))
        #: (op, the arguments' dtypes) -> the dtype CUDA hands the op for each tensor, or CUDA's error
        self._plans: Dict[Tuple[Any, ...], Any] = {}
        #: (op, the arguments' dtypes) -> whether CUDA runs the op in fp16 (``fp32_arithmetic``)
        self._lowered: Dict[Tuple[Any, ...], bool] = {}
        self._library: Optional[torch.library.Library] = None
        self._autocast: Optional[torch.autocast] = None
        #: CUDA autocast's flag and dtype as they were before
        self._cuda_state: Tuple[bool, torch.dtype] = (False, dtype)

    def __enter__(self) -> "CudaAutocast":
        # CUDA's own flag says autocast is on, as on a GPU: code that turns it off around a
        # call (``torch.autocast('cuda', enabled=False)``) turns the rules off there
        self._cuda_state = torch.is_autocast_enabled("cuda"), torch.get_autocast_dtype("cuda")
        torch.set_autocast_enabled("cuda", True)
        torch.set_autocast_dtype("cuda", self.dtype)
        self._library = torch.library.Library("aten", "IMPL")
        with warnings.catch_warnings():  # each replaces CPU autocast's kernel while active
            warnings.simplefilter("ignore")
            for name in sorted(set(registered(CPU_KEY)) | self._cuda):
                op = _overload(name)
                kernel = self._cast_like_cuda(op) if name in self._cuda else self._uncast(op)
                self._library.impl(name.partition("::")[2], kernel, CPU_KEY)
            for name in sorted(_siblings(self._cuda)):  # where CUDA autocast hands a fake call on
                self._library.impl(name, _stop(_overload(f"aten::{name}")), HANDED_KEY)
        self._autocast = torch.autocast("cpu", dtype=self.dtype)
        self._autocast.__enter__()
        return self

    def __exit__(
        self, kind: Optional[Type[BaseException]], error: Optional[BaseException], trace: Optional[TracebackType]
    ) -> None:
        assert self._autocast is not None and self._library is not None
        self._autocast.__exit__(kind, error, trace)
        self._library._destroy()  # CPU autocast's own kernels are the ones registered again
        torch.set_autocast_enabled("cuda", self._cuda_state[0])
        torch.set_autocast_dtype("cuda", self._cuda_state[1])

    @staticmethod
    def _uncast(op: Any) -> Any:
        """An op only CPU autocast lists: on CUDA the dispatcher passes it by, so it runs as
        it is. One made of other ops (``cross_entropy``: ``log_softmax``, ``nll_loss``) runs
        its decomposition, whose ops meet the rules; any other runs below autocast."""
        composite = torch._C._dispatch_has_kernel_for_dispatch_key(op.name(), "CompositeImplicitAutograd")

        def kernel(*args: Any, **kwargs: Any) -> Any:
            if composite and torch.is_autocast_enabled("cuda"):
                return op.decompose(*args, **kwargs)
            return _below_autocast(op, args, kwargs)

        return kernel

    def _cast_like_cuda(self, op: Any) -> Any:
        def kernel(*args: Any, **kwargs: Any) -> Any:
            if not torch.is_autocast_enabled("cuda"):  # turned off around this call
                return _below_autocast(op, args, kwargs)
            bound = _bound(op, args, kwargs)
            plan = self._plan(op, bound)
            if isinstance(plan, BaseException):
                raise type(plan)(*plan.args)
            target, handed = plan
            given = dict(bound)
            for name, value in handed.items():
                given[name] = _cast(bound[name], value) if name in bound else value
            with torch._C._ExcludeDispatchKeyGuard(_BELOW_AUTOCAST):
                if self.fp32_arithmetic and self._lowers(op, bound):
                    widened = {name: _fp32(value) for name, value in given.items()}
                    return tree_map(_fp16, _call(target, widened))
                return _call(target, given)

        return kernel

    def _lowers(self, op: Any, bound: Dict[str, Any]) -> bool:
        """Whether CUDA's autocast runs a call of ``op`` in fp16: it hands the call's fp16
        tensors on as fp16 when they are fp32 (asked once per op and arguments' dtypes, with
        fp32 twins of them on the meta device, made where no dispatch mode sees them)."""
        key = (op, tuple((name, _kind(value)) for name, value in bound.items()))
        if key not in self._lowered:
            with _disable_current_modes():
                widened = {name: _fp32_twin(value) for name, value in bound.items()}
            plan = self._plan(op, widened)
            self._lowered[key] = not isinstance(plan, BaseException) and torch.float16 in tree_leaves(
                list(plan[1].values())
            )
        return self._lowered[key]

    def _plan(self, op: Any, bound: Dict[str, Any]) -> Any:
        """What CUDA autocast hands on for a call of ``op``: the op, and by name each of its
        arguments (a tensor's dtype, a list's dtypes, any other value as it is), or the
        error it raises; found once per op and arguments' dtypes, on fake CUDA twins."""
        key = (op, tuple((name, _kind(value)) for name, value in bound.items()))
        if key not in self._plans:
            self._plans[key] = self._ask_cuda(op, bound)
        return self._plans[key]

    def _ask_cuda(self, op: Any, bound: Dict[str, Any]) -> Any:
        try:
            with real_cuda_autocast(self.dtype), self._fake:
                _call(op, {name: twin(value) for name, value in bound.items()})
        except _Handed as handed:
            return handed.op, {name: _dtypes(value) for name, value in handed.bound.items()}
        except Exception as error:  # CUDA autocast refused the op (binary_cross_entropy)
            return error
        return op, {}  # it ran through, uncast (a sum of booleans: nothing to cast)


def _siblings(names: Set[str]) -> Set[str]:
    """Every overload of the ops ``names`` (``aten::norm.Scalar``): ``norm.ScalarOpt_dtype``..."""
    found = set()
    for name in names:
        packet = name.partition("::")[2].partition(".")[0]
        for overload in getattr(torch.ops.aten, packet).overloads():
            found.add(packet if overload == "default" else f"{packet}.{overload}")
    return found


def _stop(op: Any) -> Any:
    def kernel(*args: Any, **kwargs: Any) -> Any:
        raise _Handed(op, args, kwargs)

    return kernel


def _dtypes(value: Any) -> Any:
    """A tensor's dtype, a list's tensors' dtypes (None for the rest), any other value as it is."""
    if isinstance(value, torch.Tensor):
        return value.dtype
    if isinstance(value, (list, tuple)) and any(isinstance(each, torch.Tensor) for each in value):
        return [each.dtype if isinstance(each, torch.Tensor) else None for each in value]
    return value


@contextlib.contextmanager
def real_cuda_autocast(dtype: torch.dtype) -> Iterator[None]:
    """torch's own CUDA autocast on in ``dtype`` (for fake CUDA tensors: there is no GPU) and
    CPU autocast off, with no dispatch mode of the caller's seeing what runs; each put back
    as it was after."""
    cpu_enabled = torch.is_autocast_enabled("cpu")
    cuda_enabled, cuda_dtype = torch.is_autocast_enabled("cuda"), torch.get_autocast_dtype("cuda")
    with _disable_current_modes():
        try:
            torch.set_autocast_enabled("cpu", False)
            torch.set_autocast_enabled("cuda", True)
            torch.set_autocast_dtype("cuda", dtype)
            yield
        finally:
            torch.set_autocast_enabled("cuda", cuda_enabled)
            torch.set_autocast_dtype("cuda", cuda_dtype)
            torch.set_autocast_enabled("cpu", cpu_enabled)


def twin(value: Any, device: str = "cuda") -> Any:
    """A tensor of ``value``'s shape, strides and dtype on ``device`` and without values (under
    a fake mode, a fake CUDA tensor), each of a list so; any other value as it is."""
    if isinstance(value, torch.Tensor):
        return torch.empty_strided(value.shape, value.stride(), dtype=value.dtype, device=device)
    if isinstance(value, (list, tuple)):
        return type(value)(twin(each, device) for each in value)
    return value


def _cast(value: Any, handed: Any) -> Any:
    """``value`` as CUDA autocast handed its twin on: a tensor cast to the dtype handed (a
    list element by element), a ``dtype`` the one autocast set; any other value as given."""
    if isinstance(value, torch.Tensor):
        return value.to(handed) if value.dtype != handed else value
    if isinstance(value, (list, tuple)) and isinstance(handed, list):
        return type(value)(_cast(each, to) if to is not None else each for each, to in zip(value, handed))
    return handed if isinstance(handed, torch.dtype) else value


def _fp32(value: Any) -> Any:
    """An fp16 tensor as fp32 (the cast recorded by autograd), each of a list so; any other
    value as it is."""
    return tree_map(lambda each: each.float() if _is_fp16(each) else each, value)


def _fp16(value: Any) -> Any:
    """An fp32 tensor as fp16 (the cast recorded by autograd); any other value as it is."""
    return value.half() if isinstance(value, torch.Tensor) and value.dtype is torch.float32 else value


def _fp32_twin(value: Any) -> Any:
    """An fp16 tensor as an fp32 tensor of its shape and strides on the meta device (no
    data), each of a list so; any other value as it is."""
    return tree_map(
        lambda each: (
            torch.empty_strided(each.shape, each.stride(), dtype=torch.float32, device="meta")
            if _is_fp16(each)
            else each
        ),
        value,
    )


def _is_fp16(value: Any) -> bool:
    return isinstance(value, torch.Tensor) and value.dtype is torch.float16


def _kind(value: Any) -> Any:
    """What of an argument decides a rule: a tensor's dtype, a dtype itself, each of a list's, else its type."""
    if isinstance(value, torch.Tensor):
        return value.dtype
    if isinstance(value, (list, tuple)):
        return tuple(_kind(each) for each in value)
    return value if isinstance(value, torch.dtype) else type(value)


@contextlib.contextmanager
def simulated(dtype: Optional[torch.dtype], fp32_arithmetic: bool = False) -> Iterator[None]:
    """CUDA's rules: where mmcv is installed, its kernels' dtypes (:class:`MmcvKernels`) and
    the branches that take them (:class:`CudaBranches`); in ``dtype`` (None: fp32, no
    autocast), its autocast (:class:`CudaAutocast`); with ``fp32_arithmetic``, fp16 computed
    in fp32 where the two would compute in fp16, as a GPU's fp16 kernels accumulate."""
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(MmcvKernels(fp32_arithmetic))
        except ImportError:  # no mmcv, or one without compiled ops
            pass
        else:
            stack.enter_context(CudaBranches())
        if dtype is not None:
            stack.enter_context(CudaAutocast(dtype, fp32_arithmetic))
        yield


#: The branches of mmdet and mmcv that call a CUDA-only kernel of mmcv when their tensors are
#: on CUDA, and a PyTorch path (or an assertion) otherwise: the file, as its package's path
#: under site-packages, and the function that asks.
CUDA_BRANCHES = (
    ("mmdet/models/losses/focal_loss.py", "forward"),  # FocalLoss: mmcv's sigmoid_focal_loss
    ("mmcv/ops/multi_scale_deform_attn.py", "forward"),  # MultiScaleDeformableAttention: its kernel
    ("mmcv/ops/carafe.py", "backward"),  # CARAFENaiveFunction: asserts it
)


#: The functions that move a tensor they make to CUDA with ``.cuda()``, whatever device their
#: inputs are on (Co-DETR's, in a checkout of mmdet: ``projects/CO-DETR/codetr``): the file,
#: as its path from its project's package on, and the function.
CUDA_MOVES = (("codetr/co_dino_head.py", "get_aux_targets"),)


def _asked_from(places: Tuple[Tuple[str, str], ...], depth: int) -> bool:
    """Whether the function ``depth`` frames up is one of ``places``."""
    code = sys._getframe(depth + 1).f_code
    path = Path(code.co_filename).as_posix()
    return any(path.endswith("/" + file) and code.co_name == function for file, function in places)


class CudaBranches:
    """``with CudaBranches():`` the branches of :data:`CUDA_BRANCHES` take their CUDA path:
    asked from there, and only there, a tensor's ``is_cuda`` and ``torch.cuda.is_available()``
    say True; mmcv's ``IS_CUDA_AVAILABLE``, which only its multi-scale deformable attention
    asks, says True while it is active. A ``.cuda()`` of :data:`CUDA_MOVES` (a stand-in for
    the move to a GPU, which cannot run here) keeps its tensor on the CPU, with the others."""

    def __enter__(self) -> "CudaBranches":
        released_is_cuda, self._is_available = torch._C.TensorBase.is_cuda, torch.cuda.is_available
        released_cuda = torch._C.TensorBase.cuda

        def is_cuda(tensor: torch.Tensor) -> bool:
            return _asked_from(CUDA_BRANCHES, 1) or bool(released_is_cuda.__get__(tensor))

        def is_available() -> bool:
            return _asked_from(CUDA_BRANCHES, 1) or self._is_available()

        def cuda(tensor: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
            return tensor if _asked_from(CUDA_MOVES, 1) else released_cuda(tensor, *args, **kwargs)

        torch.Tensor.is_cuda = property(is_cuda)
        torch.cuda.is_available = is_available
        torch.Tensor.cuda = cuda
        import mmcv.ops.multi_scale_deform_attn as attention

        self._attention, self._available = attention, attention.IS_CUDA_AVAILABLE
        attention.IS_CUDA_AVAILABLE = True
        return self

    def __exit__(self, *exc: Any) -> None:
        del torch.Tensor.is_cuda
        torch.cuda.is_available = self._is_available
        del torch.Tensor.cuda
        self._attention.IS_CUDA_AVAILABLE = self._available


#: torch's names of dtypes in its messages
_NAMES = {
    torch.float16: "Half",
    torch.bfloat16: "BFloat16",
    torch.float32: "Float",
    torch.float64: "Double",
    torch.int32: "Int",
    torch.int64: "Long",
}


class MmcvKernels:
    """``with MmcvKernels():`` holds each op of ``mmcv._ext`` to the dtypes its CUDA launcher
    takes, read from mmcv's sources at the installed tag by ``scripts/mmcv_cuda_dtypes.py``
    (``scripts/mmcv_cuda_dtypes-vVERSION.json``): an argument CUDA's kernel would refuse raises
    CUDA's message; otherwise the CPU kernel runs, on fp32 copies where it lacks a dtype
    CUDA's takes (what it writes into its arguments is copied back into them, in their own
    dtypes; an argument it leaves as it was is not written, so autograd sees no change), and
    a floating result comes back in the dispatched argument's dtype. An op with no CPU kernel
    (the focal losses, CARAFE, deformable RoI pooling, multi-scale deformable attention) runs
    its reference (``scripts/mmcv_references.py``). With ``fp32_arithmetic``,
    a CPU kernel dispatched on fp16 runs on fp32 copies too (the CPU's fp16 kernels are many
    times slower than its fp32 ones), as :class:`CudaAutocast`'s fp16 ops do."""

    def __init__(self, fp32_arithmetic: bool = False) -> None:
        self.fp32_arithmetic = fp32_arithmetic
        import mmcv
        import mmcv._ext

        table = Path(__file__).resolve().parent / f"mmcv_cuda_dtypes-v{mmcv.__version__}.json"
        if not table.is_file():
            raise RuntimeError(
                f"no table of mmcv {mmcv.__version__}'s CUDA dtypes: run scripts/mmcv_cuda_dtypes.py on its source"
            )
        self._ext = mmcv._ext
        self._ops: Dict[str, Dict[str, Any]] = json.loads(table.read_text())["ops"]
        self._released: Dict[str, Any] = {}

    def __enter__(self) -> "MmcvKernels":
        for op, rules in self._ops.items():
            if hasattr(self._ext, op):
                self._released[op] = getattr(self._ext, op)
                held = _held(self._released[op], rules, REFERENCES.get(op), self.fp32_arithmetic)
                setattr(self._ext, op, held)
        return self

    def __exit__(self, *exc: Any) -> None:
        for op, kernel in self._released.items():
            setattr(self._ext, op, kernel)


def _held(kernel: Any, rules: Dict[str, Any], reference: Optional[Callable[..., Any]], fp32_arithmetic: bool) -> Any:
    """``kernel`` (an op of ``mmcv._ext``) held to its CUDA launcher's ``rules``; ``reference``
    runs in its place where the op has no CPU kernel; with ``fp32_arithmetic``, fp16 runs on
    fp32 copies (:class:`MmcvKernels`)."""

    def call(*args: Any, **kwargs: Any) -> Any:
        bound = {**dict(zip(rules["params"], args)), **kwargs}
        dispatched = bound.get(rules.get("dispatched", ""))
        if isinstance(dispatched, torch.Tensor) and str(dispatched.dtype).split(".")[1] not in rules["dtypes"]:
            raise NotImplementedError(f"\"{rules['kernel']}\" not implemented for '{_NAMES.get(dispatched.dtype)}'")
        for name, rule in rules["args"].items():
            tensor = bound.get(name)
            if not isinstance(tensor, torch.Tensor):
                continue
            expected = dispatched.dtype if rule == "dispatched" and dispatched is not None else getattr(torch, rule)
            if tensor.dtype != expected:
                raise RuntimeError(f"expected scalar type {_NAMES.get(expected)} but found {_NAMES.get(tensor.dtype)}")
        if reference is not None:
            return reference(*args, **kwargs)
        if not (fp32_arithmetic and _is_fp16(dispatched)):
            try:
                return kernel(*args, **kwargs)
            except (RuntimeError, NotImplementedError) as error:
                if "not implemented for" not in str(error) and "expected scalar type" not in str(error):
                    raise
        copies = [a.float() if isinstance(a, torch.Tensor) and a.is_floating_point() else a for a in args]
        result = kernel(*copies, **kwargs)
        for given, copy in zip(args, copies):  # what the kernel wrote into, and only that
            if copy is not given and not torch.equal(copy.to(given.dtype), given):
                given.copy_(copy)
        if isinstance(result, torch.Tensor) and result.is_floating_point() and dispatched is not None:
            return result.to(dispatched.dtype)
        return result

    return call
