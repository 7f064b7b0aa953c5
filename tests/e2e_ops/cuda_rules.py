"""The simulation of CUDA's autocast (scripts/cuda_rules.py) against torch's own CUDA autocast:
``run(target, dtype)`` runs ``target`` (a group of calls, or a model's forward pass) once on
CPU tensors under the simulation, once on fake CUDA tensors under torch's real CUDA autocast,
and once on CPU tensors under torch's CPU autocast, each recording every op that runs below
autocast with its result's dtype. Answers how many ops ran, the first place the simulation
and CUDA differ (None: nowhere), how many ops' dtypes CPU autocast gives otherwise than
CUDA, and for a model the dtypes of its weights' gradients after a simulated step.

``run("fp32-arithmetic", "float16")`` checks the simulation's fp16 ops computed as a GPU's
kernels compute them (``CudaAutocast(..., fp32_arithmetic=True)``, what model steps run under)."""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves, tree_map

from scripts.cuda_rules import CudaAutocast, real_cuda_autocast, twin
from tests.e2e_ops.prelude import DTYPES, answer

Record = List[Tuple[str, str]]


class Ops(TorchDispatchMode):  # type: ignore[misc]
    """Records each op that runs, with its outputs' dtypes."""

    def __init__(self) -> None:
        super().__init__()
        self.ran: Record = []

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        # a cast's effect shows in the dtypes of the ops after it, and CUDA's kernels cast
        # inside where the CPU's cast first (log_softmax's half_to_float)
        if func.namespace != "prim" and func is not torch.ops.aten._to_copy.default:
            # the result (CUDA's batch norm keeps its saved statistics in fp32, the CPU's not)
            first = next(t for t in tree_leaves(out) if isinstance(t, torch.Tensor)) if tree_leaves(out) else None
            self.ran.append((str(func), str(first.dtype) if isinstance(first, torch.Tensor) else ""))
        return out


class MetaKernels(TorchDispatchMode):  # type: ignore[misc]
    """Runs an op whose fake CUDA kernel asks for a CUDA device (a non-contiguous clone, a
    convolution) on meta tensors of the same shapes, strides and dtypes instead, and gives
    back fake CUDA tensors of the results' (what the dtypes are is all that is compared)."""

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        try:
            return func(*args, **(kwargs or {}))
        except RuntimeError as error:
            if "not linked with support for cuda" not in str(error):
                raise
        meta = tree_map(lambda t: twin(t, "meta"), (args, kwargs or {}))
        out = func(*meta.select(0, 0), **meta[1])
        return tree_map(twin, out)


@contextlib.contextmanager
def bindings_by_dispatch() -> Iterator[None]:
    """``Tensor.contiguous`` of a non-contiguous tensor, and ``tensor[i]``, as the ops they
    dispatch: their Python bindings ask a fake CUDA tensor's device for a guard first, which
    this build has not."""
    contiguous, getitem = torch.Tensor.contiguous, torch.Tensor.__getitem__

    def contiguous_op(self: Any, memory_format: Any = torch.contiguous_format) -> Any:
        if self.is_contiguous(memory_format=memory_format):
            return self
        return torch.ops.aten.clone.default(self, memory_format=memory_format)

    def getitem_op(self: Any, index: Any) -> Any:
        return torch.ops.aten.select.int(self, 0, index) if isinstance(index, int) else getitem(self, index)

    torch.Tensor.contiguous, torch.Tensor.__getitem__ = contiguous_op, getitem_op
    try:
        yield
    finally:
        torch.Tensor.contiguous, torch.Tensor.__getitem__ = contiguous, getitem


def _rand(*shape: int, device: str, dtype: torch.dtype = torch.float32) -> Any:
    """A tensor of 0.5s (a fake CUDA tensor has no values, and no generator to draw them: the
    rules look at dtypes alone)."""
    return torch.full(shape, 0.5, device=device, dtype=dtype)


#: Calls of ops of every kind of CUDA's and CPU's lists, on ``a`` (fp32 or the low dtype), ``b``
#: (fp32) and ``images`` (``a``'s dtype)
CALLS: Dict[str, Callable[[Any, Any, Any, str], Any]] = {
    "matmul": lambda a, b, images, device: (a @ b, torch.mm(a, b), torch.addmm(b, a, b), torch.matmul(a, b)),
    "batched": lambda a, b, images, device: (
        torch.bmm(a.unsqueeze(0), b.unsqueeze(0)),
        torch.baddbmm(b.unsqueeze(0), a.unsqueeze(0), b.unsqueeze(0)),
    ),
    "vectors": lambda a, b, images, device: (
        torch.addmv(b.select(0, 0), a, b.select(0, 0)),
        torch.addr(b, a.select(0, 0), b.select(0, 0)),
        torch.dot(a.select(0, 0), b.select(0, 0)),
        torch.vdot(a.select(0, 0), b.select(0, 0)),
    ),
    "contractions": lambda a, b, images, device: (
        torch.einsum("ij,jk->ik", a, b),
        torch.chain_matmul(a, b, a),
        torch.tensordot(a, b, 1),
        F.linear(a, b),
    ),
    "convolutions": lambda a, b, images, device: (
        F.conv2d(images, _rand(6, 4, 3, 3, device=device), padding=1),
        F.conv_transpose2d(images, _rand(4, 6, 2, 2, device=device)),
    ),
    "pointwise": lambda a, b, images, device: (
        a.exp(),
        a.log(),
        a.log1p(),
        a.pow(2),
        a.rsqrt(),
        a.reciprocal(),
        a.acos(),
        torch.atan2(a, b),
        F.softplus(a),
    ),
    "reductions": lambda a, b, images, device: (
        a.sum(),
        a.sum(0),
        a.sum(dtype=torch.float32),
        a.cumsum(0),
        a.cumprod(0),
        a.prod(),
        a.mean(),
        a.var(),
        a.norm(),
        torch.linalg.vector_norm(a),
        torch.logsumexp(a, 0),
        a.max(),
        a.topk(3),
    ),
    "softmax": lambda a, b, images, device: (
        F.softmax(a, 0),
        F.log_softmax(a, 0),
        F.softmax(a, 0, dtype=torch.float32),
    ),
    "norms": lambda a, b, images, device: (
        F.layer_norm(a, (8,)),
        F.group_norm(images, 2),
        F.batch_norm(images, None, None, training=True),
    ),
    "resampling": lambda a, b, images, device: (
        F.interpolate(images, scale_factor=2, mode="bilinear"),
        F.interpolate(images, scale_factor=2, mode="nearest"),
    ),
    "losses": lambda a, b, images, device: (
        F.cross_entropy(a, torch.arange(8, device=device)),
        F.mse_loss(a, b),
        F.l1_loss(a, b),
        F.smooth_l1_loss(a, b),
        F.binary_cross_entropy_with_logits(a, b),
        F.kl_div(a, b),
    ),
    "distances": lambda a, b, images, device: (F.cosine_similarity(a, b), torch.cdist(a, b), torch.dist(a, b)),
    "mixed": lambda a, b, images, device: (
        torch.cat([a, b]),
        torch.stack([a, b]),
        torch.addcmul(b, a, b),
        torch.addcdiv(b, a, b),
        torch.where(a > 1, a, b),
        a + b,
        a * b,
    ),
    "indexing": lambda a, b, images, device: (
        a.index_put((torch.arange(2, device=device),), a.select(0, 0)),
        torch.scatter_add(b, 0, (b * 4).long() % 8, b),
    ),
    # code that turns CUDA's autocast off around some calls (mmdet's SimOTA assigner does)
    "autocast-off": lambda a, b, images, device: (_without_cuda_autocast(lambda: (a @ a, torch.exp(a))), a @ a),
}


def _without_cuda_autocast(calls: Callable[[], Any]) -> Any:
    """``calls()`` with CUDA's autocast turned off."""
    with torch.autocast("cuda", enabled=False):
        return calls()


def _calls(names: List[str]) -> Callable[[str], None]:
    """The calls ``names`` of :data:`CALLS`, on fp32 and on low-dtype ``a``."""

    def corpus(device: str) -> None:
        low = torch.get_autocast_dtype(device)
        for dtype in (torch.float32, low):
            a = _rand(8, 8, device=device, dtype=dtype) + 0.5
            b, images = _rand(8, 8, device=device), _rand(2, 4, 8, 8, device=device, dtype=dtype)
            for name in names:
                CALLS[name](a, b, images, device)

    return corpus


def _on_cuda(module: nn.Module) -> None:
    """Gives a module made under the fake mode fake CUDA weights in place of its CPU ones
    (a fake tensor has no values to move, and ``Module.to`` cannot swap one)."""
    for each in module.modules():
        for name, weight in list(each._parameters.items()):
            if weight is not None:
                each._parameters[name] = nn.Parameter(_rand(*weight.shape, device="cuda"), requires_grad=False)
        for name, buffer in list(each._buffers.items()):
            if buffer is not None:
                each._buffers[name] = twin(buffer)


class _Joined(nn.Module):  # type: ignore[misc]
    """Modules called by a function of their outputs."""

    def __init__(self, function: Callable[..., Any], *parts: nn.Module) -> None:
        super().__init__()
        self.function, self.parts = function, nn.ModuleList(parts)

    def forward(self, *inputs: Any) -> Any:
        return self.function(*inputs)


def _transformer(device: str) -> Any:
    model = nn.Transformer(16, 2, 1, 1, 32, dropout=0.0)
    return model, (_rand(6, 2, 16, device=device), _rand(4, 2, 16, device=device))


def _detection_head(device: str) -> Any:
    """A DETR-like head: queries attend to features, then class and box losses."""
    attention, classes, boxes = nn.MultiheadAttention(16, 2), nn.Linear(16, 4), nn.Linear(16, 4)

    def head(queries: Any, features: Any) -> Any:
        decoded = attention(queries, features, features)[0]
        logits, predicted = classes(decoded), boxes(decoded).sigmoid()
        target = torch.zeros_like(predicted) + 0.25
        overlap = (torch.min(predicted, target) - torch.max(predicted, target)).clamp(min=0).prod(-1)
        return (
            F.binary_cross_entropy_with_logits(logits, torch.zeros_like(logits))
            + F.l1_loss(predicted, target)
            + (1 - overlap / (predicted.prod(-1) + target.prod(-1) - overlap)).mean()
            + logits.softmax(-1).log().sum()
        )

    return _Joined(head, attention, classes, boxes), (_rand(5, 2, 16, device=device), _rand(9, 2, 16, device=device))


def _mlp(device: str) -> Any:
    model = nn.Sequential(nn.Linear(8, 32), nn.LayerNorm(32), nn.GELU(), nn.Linear(32, 5), nn.LogSoftmax(-1))
    return model, (_rand(4, 8, device=device),)


#: Models: (the module, its inputs) on a device
MODELS: Dict[str, Callable[[str], Any]] = {"transformer": _transformer, "detection-head": _detection_head, "mlp": _mlp}


def _forward(make: Callable[[str], Any]) -> Callable[[str], Callable[[], None]]:
    """A model's forward, made on a device (CUDA: its weights fake), without the autograd
    records a fake CUDA tensor cannot make."""

    def made(device: str) -> Callable[[], None]:
        torch.manual_seed(0)
        model, inputs = make(device)
        if device == "cuda":
            _on_cuda(model)

        def forward() -> None:
            with torch.no_grad():
                model(*inputs)

        return forward

    return made


def _at_once(call: Callable[[str], None]) -> Callable[[str], Callable[[], None]]:
    """Calls that make their own inputs, on a device."""
    return lambda device: lambda: call(device)


#: What is compared: made on a device, then run (and recorded)
TARGETS: Dict[str, Callable[[str], Callable[[], None]]] = {
    **{name: _at_once(_calls([name])) for name in CALLS},
    **{name: _forward(make) for name, make in MODELS.items()},
}


def _recorded(run: Callable[[], None]) -> Record:
    """The ops ``run`` runs, with their outputs' dtypes, and last the error it raised, if any
    (CPU autocast fails where CUDA's casts make dtypes agree: ``chain_matmul`` of fp16 and fp32)."""
    ops = Ops()
    try:
        with ops:
            run()
    except RuntimeError as error:
        ops.ran.append(("raised", str(error).splitlines()[0]))
    return ops.ran


def _first_difference(ours: Record, theirs: Record) -> Optional[str]:
    for index, (one, other) in enumerate(zip(ours, theirs)):
        if one != other:
            return "op %d: simulated %s, CUDA %s" % (index, one, other)
    return None if len(ours) == len(theirs) else "simulated %d ops, CUDA %d" % (len(ours), len(theirs))


def _gradients(make: Callable[[str], Any], low: torch.dtype) -> List[str]:
    """The dtypes of a model's weights' gradients after a simulated step (forward and backward)."""
    with CudaAutocast(low):
        torch.manual_seed(0)
        model, inputs = make("cpu")
        output = model(*inputs)
        output.float().pow(2).sum().backward()
    return sorted({str(weight.grad.dtype) for weight in model.parameters() if weight.grad is not None})


def _differences_beyond_fp32_arithmetic(ours: Record, theirs: Record) -> Optional[str]:
    """The first place two records differ otherwise than in an op that ran in fp32 where CUDA
    runs it in fp16 (None: nowhere)."""
    widened = [
        (op, theirs[index][1]) if dtype == "torch.float32" and theirs[index] == (op, "torch.float16") else (op, dtype)
        for index, (op, dtype) in enumerate(ours[: len(theirs)])
    ]
    return _first_difference(widened + ours[len(theirs) :], theirs)


def fp32_arithmetic() -> Dict[str, Any]:
    """The simulation in fp16 with ``fp32_arithmetic`` (what model steps run under): for a
    convolution, a transposed one and a linear layer (biased, learnt) and a batched matmul,
    the dtype of each output, whether each is the fp32 op on its fp16-rounded inputs rounded
    to fp16, and the dtypes of the weights' gradients after a backward pass; for every target,
    where the ops recorded differ from CUDA's otherwise than in running in fp32 (None:
    nowhere), and how many ran in fp32 where CUDA's run in fp16."""
    torch.manual_seed(0)
    conv, deconv, linear = nn.Conv2d(3, 8, 3, padding=1), nn.ConvTranspose2d(8, 4, 2, stride=2), nn.Linear(32, 16)
    images = torch.randn(2, 3, 16, 16)
    with CudaAutocast(torch.float16, fp32_arithmetic=True):
        middle = conv(images)
        out = deconv(middle)
        pooled = out.mean(-1)
        flat = linear(pooled)
        product = torch.bmm(flat, flat.transpose(1, 2))
    product.float().pow(2).sum().backward()

    def rounded(tensor: Any) -> Any:
        return tensor.detach().half().float()

    as_a_gpu = (
        F.conv2d(rounded(images), rounded(conv.weight), rounded(conv.bias), padding=1).half(),
        F.conv_transpose2d(rounded(middle), rounded(deconv.weight), rounded(deconv.bias), stride=2).half(),
        F.linear(rounded(pooled), rounded(linear.weight), rounded(linear.bias)).half(),
        torch.bmm(rounded(flat), rounded(flat).transpose(1, 2)).half(),
    )
    differences, widened = {}, 0
    for target, made in TARGETS.items():
        with sdpa_kernel(SDPBackend.MATH):
            with CudaAutocast(torch.float16, fp32_arithmetic=True):
                ours = _recorded(made("cpu"))
            with real_cuda_autocast(torch.float16), FakeTensorMode(allow_non_fake_inputs=True):
                forward = made("cuda")
                with MetaKernels(), bindings_by_dispatch():
                    theirs = _recorded(forward)
        differences[target] = _differences_beyond_fp32_arithmetic(ours, theirs)
        widened += sum(one != other for one, other in zip(ours, theirs))
    results = (middle, out, flat, product)
    return {
        "dtypes": [str(result.dtype) for result in results],
        "as_a_gpu": [torch.equal(result, expected) for result, expected in zip(results, as_a_gpu)],
        "gradients": sorted(
            {str(weight.grad.dtype) for module in (conv, deconv, linear) for weight in module.parameters()}
        ),
        "differences": {target: found for target, found in differences.items() if found is not None},
        "widened": widened,
    }


def run(target: str, dtype: str) -> Dict[str, Any]:
    if target == "fp32-arithmetic":
        return fp32_arithmetic()
    low = DTYPES[dtype]
    made = TARGETS[target]
    # one attention kernel for all three: which one a device picks is its kernels', not its rules
    with sdpa_kernel(SDPBackend.MATH):
        with CudaAutocast(low):
            simulated = _recorded(made("cpu"))
        with real_cuda_autocast(low), FakeTensorMode(allow_non_fake_inputs=True):
            forward = made("cuda")
            with MetaKernels(), bindings_by_dispatch():
                cuda = _recorded(forward)
        with torch.autocast("cpu", dtype=low):
            cpu = _recorded(made("cpu"))
    return {
        "ops": len(simulated),
        "difference": _first_difference(simulated, cuda),
        "cpu_differs": sum(one != other for one, other in zip(cpu, cuda)) + abs(len(cpu) - len(cuda)),
        **({"gradients": _gradients(MODELS[target], low)} if target in MODELS else {}),
    }


answer(run)
