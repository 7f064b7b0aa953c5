"""mmcv's compiled ops held to their CUDA launchers' dtypes (scripts/cuda_rules.py's
``MmcvKernels``): ``run(op, dtypes)`` calls ``op`` with its tensors in the dtypes named, under
the rules, and answers the result's dtype or the error."""

from __future__ import annotations

from typing import Any, Callable, Dict, List

import torch
from mmcv.ops import nms, roi_align

from scripts.cuda_rules import MmcvKernels
from tests.e2e_ops.prelude import DTYPES, answer

g = torch.Generator().manual_seed(3)
corners = torch.rand(50, 2, generator=g) * 100
BOXES = torch.cat([corners, corners + torch.rand(50, 2, generator=g) * 50 + 1], 1)
SCORES = torch.rand(50, generator=g)
FEATURES = torch.rand(1, 4, 32, 32, generator=g)
ROIS = torch.cat([torch.zeros(10, 1), BOXES[:10] / 8], 1)

CALLS: Dict[str, Callable[..., Any]] = {
    "nms": lambda boxes, scores: nms(BOXES.to(boxes), SCORES.to(scores), 0.5)[1],
    "roi_align": lambda features, rois: roi_align(FEATURES.to(features), ROIS.to(rois), (7, 7), 1.0, 2),
}


def run(op: str, dtypes: List[str]) -> Dict[str, Any]:
    with MmcvKernels():
        result = CALLS[op](*(DTYPES[each] for each in dtypes))
    return {"dtype": str(result.dtype)}


answer(run)
