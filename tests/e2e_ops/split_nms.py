"""The seed's crash as users report it: ``run(n)`` calls batched_nms on ``n`` seeded boxes in
fp32 with fp16 scores (what AMP gives it), 4 classes, and on the same inputs with fp32 scores.
Answers the fp32 run's kept indices and scores, and the AMP run's kept indices, dets and
their dtype."""

from __future__ import annotations

from typing import Any, Dict

import torch
from mmcv.ops import batched_nms

from tests.e2e_ops.prelude import answer


def run(n: int) -> Dict[str, Any]:
    g = torch.Generator().manual_seed(1)
    xy = torch.rand(n, 2, generator=g) * 1000
    boxes = torch.cat([xy, xy + torch.rand(n, 2, generator=g) * 100 + 1], 1)
    scores = torch.rand(n, generator=g).half()
    idxs = torch.randint(0, 4, (n,), generator=g)
    cfg = dict(type="nms", iou_threshold=0.5)
    reference_dets, reference_keep = batched_nms(boxes, scores.float(), idxs, dict(cfg))
    found: Dict[str, Any] = {"ref_keep": reference_keep.tolist(), "ref_scores": reference_dets[:, -1].tolist()}
    dets, keep = batched_nms(boxes, scores, idxs, dict(cfg))
    return dict(found, keep=keep.tolist(), dets=dets.tolist(), dtype=str(dets.dtype))


answer(run)
