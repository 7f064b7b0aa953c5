"""mmcv's compiled ops held to their CUDA launchers' dtypes (scripts/cuda_rules.py's
``MmcvKernels``): ``run(op, dtypes)`` calls ``op`` with its tensors in the dtypes named, under
the rules, and answers the result's dtype or the error."""

from __future__ import annotations

from typing import Any, Callable, Dict, List

import torch
from mmcv.ops import carafe, deform_roi_pool, nms, roi_align, sigmoid_focal_loss
from mmcv.ops.multi_scale_deform_attn import MultiScaleDeformableAttnFunction

from scripts.cuda_rules import MmcvKernels
from tests.e2e_ops.prelude import DTYPES, answer

g = torch.Generator().manual_seed(3)
corners = torch.rand(50, 2, generator=g) * 100
BOXES = torch.cat([corners, corners + torch.rand(50, 2, generator=g) * 50 + 1], 1)
SCORES = torch.rand(50, generator=g)
FEATURES = torch.rand(1, 4, 32, 32, generator=g)
ROIS = torch.cat([torch.zeros(10, 1), BOXES[:10] / 8], 1)

LOGITS, LABELS = torch.randn(30, 5, generator=g), torch.randint(0, 6, (30,), generator=g)
MASKS = torch.rand(1, 9, 64, 64, generator=g)
#: multi-scale deformable attention's value (levels of 8x8 and 4x4), sampling locations and weights
VALUE, LOCATIONS, WEIGHTS = torch.rand(1, 80, 2, 4), torch.rand(1, 10, 2, 2, 2, 2), torch.rand(1, 10, 2, 2, 2)
SHAPES, STARTS = torch.tensor([[8, 8], [4, 4]]), torch.tensor([0, 64])

CALLS: Dict[str, Callable[..., Any]] = {
    "nms": lambda boxes, scores: nms(BOXES.to(boxes), SCORES.to(scores), 0.5)[1],
    "roi_align": lambda features, rois: roi_align(FEATURES.to(features), ROIS.to(rois), (7, 7), 1.0, 2),
    # no CPU kernels: their references run where CUDA's kernels would
    "sigmoid_focal_loss": lambda logits: sigmoid_focal_loss(LOGITS.to(logits), LABELS, 2.0, 0.25, None, "none"),
    "carafe": lambda features, masks: carafe(FEATURES.to(features), MASKS.to(masks), 3, 1, 2),
    "deform_roi_pool": lambda features, rois: deform_roi_pool(FEATURES.to(features), ROIS.to(rois), None, (7, 7)),
    "ms_deform_attn": lambda value, locations: MultiScaleDeformableAttnFunction.apply(
        VALUE.to(value), SHAPES, STARTS, LOCATIONS.to(locations), WEIGHTS.to(value), 64
    ),
}


def run(op: str, dtypes: List[str]) -> Dict[str, Any]:
    with MmcvKernels():
        result = CALLS[op](*(DTYPES[each] for each in dtypes))
    return {"dtype": str(result.dtype)}


answer(run)
