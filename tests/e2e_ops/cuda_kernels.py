"""The real mmcv's Python around a kernel it builds for CUDA only, run on the CPU under CUDA's
rules, simulated (``scripts/cuda_rules.py``: the kernel held to its CUDA launcher's dtypes,
its named reference computing where CUDA's kernel would, and CUDA's autocast in the AMP
dtype, fp32 with no autocast). So it claims what the patch changes, the dtypes the kernel
gets and what comes back, and nothing about the kernels themselves (``verify --device cuda``
runs those).

``run(op, dtype, weighted, reduction)``: the op on logits or values in ``dtype`` (class
weights in fp32 when ``weighted``) with that reduction (the focal losses). Answers the dtypes
the kernel got (``kernel``), the output's and the gradient's dtypes, digests and differences
from the same values in fp32, and the copies."""

from __future__ import annotations

import contextlib
from typing import Any, Dict, Iterator, List, Optional, Tuple

import mmcv._ext
import torch
from mmcv.ops import focal_loss, multi_scale_deform_attn

from scripts.cuda_rules import CudaAutocast, simulated
from tests.e2e_ops.prelude import DTYPES, Copies, answer, difference, digest

#: the kernels each op calls, forward and backward
KERNELS = {
    "sigmoid_focal_loss": ("sigmoid_focal_loss_forward", "sigmoid_focal_loss_backward"),
    "softmax_focal_loss": ("softmax_focal_loss_forward", "softmax_focal_loss_backward"),
    "ms_deform_attn": ("ms_deform_attn_forward", "ms_deform_attn_backward"),
}

g = torch.Generator().manual_seed(5)
logits, targets = torch.randn(64, 10, generator=g) * 2, torch.randint(0, 10, (64,), generator=g)
class_weights = torch.rand(10, generator=g) + 0.5
levels, starts = torch.tensor([[8, 8], [4, 4]]), torch.tensor([0, 64])
value = torch.rand(2, 80, 4, 8, generator=g)
locations = torch.rand(2, 30, 4, 2, 4, 2, generator=g)
attention = torch.rand(2, 30, 4, 2, 4, generator=g).softmax(-1)


@contextlib.contextmanager
def kernels_seen(op: str, seen: List[str]) -> Iterator[None]:
    """Adds to ``seen`` the dtype of every floating tensor ``op``'s kernels are given."""
    held = {name: getattr(mmcv._ext, name) for name in KERNELS[op]}

    def recording(kernel: Any) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            seen.extend(str(a.dtype) for a in (*args, *kwargs.values()) if torch.is_tensor(a) and a.is_floating_point())
            return kernel(*args, **kwargs)

        return call

    for name, kernel in held.items():
        setattr(mmcv._ext, name, recording(kernel))
    try:
        yield
    finally:
        for name, kernel in held.items():
            setattr(mmcv._ext, name, kernel)


def call(op: str, dtype: Any, weights: Optional[Any], reduction: str, seen: List[str]) -> Tuple[Any, Any]:
    """The op on inputs as autocast gives them (the logits or values in ``dtype``, the rest
    in fp32), forward under CUDA's autocast in ``dtype`` (none in fp32), then backward, both
    under CUDA's kernels."""
    x = (logits if op != "ms_deform_attn" else value).to(dtype).detach().requires_grad_()
    autocast = CudaAutocast(dtype) if dtype != torch.float32 else contextlib.nullcontext()
    with simulated(None), kernels_seen(op, seen):
        with autocast:
            if op == "sigmoid_focal_loss":
                out = focal_loss.sigmoid_focal_loss(x, targets, 2.0, 0.25, weights, reduction)
            elif op == "softmax_focal_loss":
                out = focal_loss.softmax_focal_loss(x, targets, 2.0, 0.25, weights, reduction)
            else:
                out = multi_scale_deform_attn.MultiScaleDeformableAttnFunction.apply(
                    x, levels, starts, locations, attention, 64
                )
        out.float().sum().backward()
    return x, out


def run(op: str, dtype_name: str, weighted: str, reduction: str = "none") -> Dict[str, Any]:
    dtype, weights = DTYPES[dtype_name], class_weights if weighted == "weighted" else None
    seen: List[str] = []
    x, out = call(op, dtype, weights, reduction, seen)
    Copies.count = 0
    with Copies():
        call(op, dtype, weights, reduction, [])
    reference_x, reference = call(op, torch.float32, weights, reduction, [])
    return {
        "kernel": sorted(set(seen)),
        "dtypes": [str(out.dtype), str(x.grad.dtype)],
        "differences": [difference(out, reference), difference(x.grad, reference_x.grad)],
        "digests": [digest(out), digest(x.grad)],
        "copies": Copies.count,
    }


answer(run)
