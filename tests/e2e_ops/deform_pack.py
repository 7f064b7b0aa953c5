"""mmcv's DeformConv2dPack or ModulatedDeformConv2dPack (3x3, 16 channels: the layer with its
own offset conv, as mmdet's DCN heads and backbones build it): ``run(layer, dtype)`` on seeded
features in that dtype, under CPU autocast in it unless it is fp32. Answers the dtypes of the
output and of the features' and the weight's gradients, their digests and their differences
from the same step in fp32, and the copies the kernel call itself made."""

from __future__ import annotations

from typing import Any, Dict, Tuple

import torch
from mmcv import ops

from tests.e2e_ops.prelude import DTYPES, Copies, answer, difference, digest

features = torch.rand(2, 16, 24, 24, generator=torch.Generator().manual_seed(5))


def step(layer: Any, dtype: Any) -> Tuple[Any, Any, Any]:
    """The layer's output and the features' and the weight's gradients, in ``dtype``."""
    layer.zero_grad()
    x = features.to(dtype).detach().clone().requires_grad_()
    with torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32):
        out = layer(x)
    out.float().sum().backward()
    return out, x.grad, layer.weight.grad.clone()


def kernel_call(layer: Any, name: str, dtype: Any) -> None:
    """The kernel call alone, with the offsets the layer makes in ``dtype``."""
    x = features.to(dtype)
    with torch.no_grad(), torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32):
        offset = layer.conv_offset(x)
    with torch.no_grad():
        if name == "DeformConv2dPack":
            ops.deform_conv2d(x, offset, layer.weight, 1, 1, 1, 1, 1, False, 32)
        else:
            o1, o2, mask = torch.chunk(offset, 3, dim=1)
            ops.modulated_deform_conv2d(
                x, torch.cat((o1, o2), 1), mask.sigmoid(), layer.weight, layer.bias, 1, 1, 1, 1, 1
            )


def run(name: str, dtype_name: str) -> Dict[str, Any]:
    torch.manual_seed(0)
    layer = getattr(ops, name)(16, 16, 3, 1, 1)
    torch.nn.init.normal_(layer.conv_offset.weight, std=0.1)  # mmcv zero-inits it: real offsets, not a grid
    dtype = DTYPES[dtype_name]
    found = step(layer, dtype)
    reference = step(layer, torch.float32)
    Copies.count = 0
    with Copies():
        kernel_call(layer, name, dtype)
    return {
        "dtypes": [str(each.dtype) for each in found],
        "differences": [difference(ours, theirs) for ours, theirs in zip(found, reference)],
        "digests": [digest(each) for each in found],
        "copies": Copies.count,
    }


answer(run)
