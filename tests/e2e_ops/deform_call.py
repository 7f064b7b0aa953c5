"""mmcv's deform_conv2d or modulated_deform_conv2d called directly, as a layer whose inputs come
from layers in other dtypes calls it: ``run(op, features, offsets[, mask])`` on seeded inputs,
each in the dtype named, with an fp32 weight (and bias). Answers the dtypes of the output and
of each input's gradient, their digests and their differences from the same values in fp32,
and the copies the call made."""

from __future__ import annotations

from typing import Any, Dict, List

import torch
from mmcv import ops

from tests.e2e_ops.prelude import DTYPES, Copies, answer, difference, digest

g = torch.Generator().manual_seed(5)
INPUTS = {
    "features": torch.rand(2, 16, 24, 24, generator=g),
    "offsets": torch.randn(2, 18, 24, 24, generator=g),
    "mask": torch.rand(2, 9, 24, 24, generator=g),
    "weight": torch.randn(16, 16, 3, 3, generator=g) * 0.1,
}
bias = torch.zeros(16)


def call(op: str, tensors: Dict[str, Any]) -> Any:
    features, offsets, weight = tensors["features"], tensors["offsets"], tensors["weight"]
    if op == "deform_conv2d":
        return ops.deform_conv2d(features, offsets, weight, 1, 1, 1, 1, 1, False, 32)
    return ops.modulated_deform_conv2d(features, offsets, tensors["mask"], weight, bias, 1, 1, 1, 1, 1)


def run(op: str, *dtype_names: str) -> Dict[str, Any]:
    dtypes = dict(zip(("features", "offsets", "mask"), (DTYPES[name] for name in dtype_names)))
    tensors = {
        name: value.to(dtypes.get(name, torch.float32)).detach().clone().requires_grad_()
        for name, value in INPUTS.items()
    }
    Copies.count = 0
    with Copies():
        out = call(op, tensors)
    copies = Copies.count
    out.float().sum().backward()
    reference_tensors = {name: tensor.detach().float().requires_grad_() for name, tensor in tensors.items()}
    reference = call(op, reference_tensors)  # the same values in fp32
    reference.sum().backward()
    used: List[str] = [name for name in INPUTS if op != "deform_conv2d" or name != "mask"]
    found = [out, *(tensors[name].grad for name in used)]
    expected = [reference, *(reference_tensors[name].grad for name in used)]
    return {
        "dtypes": [str(each.dtype) for each in found],
        "differences": [difference(ours, theirs) for ours, theirs in zip(found, expected)],
        "digests": [digest(each) for each in found],
        "copies": copies,
    }


answer(run)
