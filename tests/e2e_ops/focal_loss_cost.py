"""mmdet's ``HungarianAssigner`` matching 20 queries to 3 objects with ``FocalLossCost``, as
DETR-family heads match them: ``run(call, dtype)``, ``call`` ``boxes`` (class logits of each
query, with an L1 and a GIoU cost of the boxes) or ``masks`` (mask logits of each query,
``FocalLossCost(binary_input=True)``), ``-confident`` with one query's logit at 9 where its
object is (fp16's sigmoid of it is exactly 1). The logits come in ``dtype``, as CUDA's
autocast gives a head's outputs, and an AMP dtype runs under CUDA's rules, simulated. Answers
the focal cost's dtype and digest, the assignment's digest, how many queries are assigned
otherwise than with the same logits in fp32, and the copies made."""

from __future__ import annotations

import contextlib
from typing import Any, Dict, Tuple

import torch
from mmdet.models.task_modules.assigners import HungarianAssigner
from mmdet.utils import register_all_modules
from mmengine.structures import InstanceData

from scripts.cuda_rules import simulated
from tests.e2e_ops.prelude import DTYPES, Copies, answer, digest

register_all_modules()
g = torch.Generator().manual_seed(11)
QUERIES, CLASSES, SIDE = 20, 5, 8
LOGITS = (torch.rand(QUERIES, CLASSES, generator=g) * 12 - 8).clamp(max=8.0)  # no sigmoid at 1 in fp16
MASKS = (torch.rand(QUERIES, SIDE, SIDE, generator=g) * 12 - 8).clamp(max=8.0)
corners = torch.rand(QUERIES, 2, generator=g) * 60
BOXES = torch.cat([corners, corners + torch.rand(QUERIES, 2, generator=g) * 30 + 5], 1)
OBJECTS = InstanceData(
    bboxes=torch.tensor([[10.0, 10.0, 50.0, 40.0], [30.0, 20.0, 80.0, 90.0], [5.0, 60.0, 25.0, 85.0]]),
    labels=torch.tensor([2, 0, 2]),
    masks=(torch.rand(3, SIDE, SIDE, generator=g) > 0.5).float(),
)
META = {"img_shape": (100, 100)}
ASSIGNERS = {
    "boxes": HungarianAssigner(
        match_costs=[
            {"type": "FocalLossCost", "weight": 2.0},
            {"type": "BBoxL1Cost", "weight": 5.0, "box_format": "xywh"},
            {"type": "IoUCost", "iou_mode": "giou", "weight": 2.0},
        ]
    ),
    "masks": HungarianAssigner(match_costs=[{"type": "FocalLossCost", "weight": 2.0, "binary_input": True}]),
}


def predictions(call: str, dtype: torch.dtype) -> InstanceData:
    """The queries' logits (and boxes) in ``dtype``; ``-confident``: query 4 at 9 for object 0."""
    masks, logits = MASKS.clone(), LOGITS.clone()
    if call.endswith("-confident"):
        logits[4, 2] = 9.0
        masks[4] = 9.0
    if call.startswith("masks"):
        return InstanceData(masks=masks.to(dtype))
    return InstanceData(scores=logits.to(dtype), bboxes=BOXES.to(dtype))


def match(call: str, dtype: torch.dtype) -> Tuple[Any, Any]:
    """The focal cost and the assignment, under CUDA's rules for an AMP dtype."""
    assigner = ASSIGNERS[call.split("-")[0]]
    pred = predictions(call, dtype)
    with contextlib.nullcontext() if dtype is torch.float32 else simulated(dtype):
        cost = assigner.match_costs[0](pred, OBJECTS, META)
        return cost, assigner.assign(pred, OBJECTS, img_meta=META).gt_inds


def run(call: str, dtype: str) -> Dict[str, Any]:
    Copies.count = 0
    with Copies():
        cost, assigned = match(call, DTYPES[dtype])
    _, reference = match(call, torch.float32)
    return {
        "dtypes": [str(cost.dtype)],
        "differences": [float((assigned != reference).sum())],
        "digests": [digest(cost), digest(assigned)],
        "copies": Copies.count,
    }


answer(run)
