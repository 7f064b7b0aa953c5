"""mmcv's RoIAlign or RoIAlignRotated (7x7, spatial scale 1/8, as mmdet's and mmrotate's RoI
extractors build them) on seeded features and RoIs: ``run(layer, features, rois)`` with each
in the dtype named. Answers the output's and the features' gradient's dtypes, digests and
differences from the same values in fp32, and the copies the layer made."""

from __future__ import annotations

from typing import Any, Dict

import torch
from mmcv import ops

from tests.e2e_ops.prelude import DTYPES, Copies, answer, difference, digest

g = torch.Generator().manual_seed(5)
features = torch.rand(2, 16, 64, 64, generator=g)
images = torch.randint(0, 2, (300, 1), generator=g).float()
xy, sizes = torch.rand(300, 2, generator=g) * 400, torch.rand(300, 2, generator=g) * 100 + 1
angles = (torch.rand(300, 1, generator=g) - 0.5) * 3
ROIS = {
    "RoIAlign": torch.cat([images, xy, xy + sizes], 1),
    "RoIAlignRotated": torch.cat([images, xy, sizes, angles], 1),
}


def run(layer_name: str, features_dtype: str, rois_dtype: str) -> Dict[str, Any]:
    layer, rois = getattr(ops, layer_name)((7, 7), 0.125, 2), ROIS[layer_name]
    x = features.to(DTYPES[features_dtype]).detach().clone().requires_grad_()
    given = rois.to(DTYPES[rois_dtype])
    Copies.count = 0
    with Copies():  # the layer's own copies only
        out = layer(x, given)
    out.float().sum().backward()
    reference_x = x.detach().float().requires_grad_()
    reference = layer(reference_x, given.float())  # the same values in fp32
    reference.sum().backward()
    return {
        "dtypes": [str(out.dtype), str(x.grad.dtype)],
        "differences": [difference(out, reference), difference(x.grad, reference_x.grad)],
        "digests": [digest(out), digest(x.grad)],
        "copies": Copies.count,
    }


answer(run)
