"""A real client of soft_nms: ``run()`` calls mmdet's YOLOXHead.predict_by_feat with fp16 class
and objectness outputs (what the head gives under AMP) and a soft_nms test cfg, as YOLOX and
ByteTrack configs use. Answers how many boxes it kept and their scores' dtype."""

from __future__ import annotations

from typing import Any, Dict

import torch
from mmdet.models.dense_heads import YOLOXHead
from mmengine.config import ConfigDict

from tests.e2e_ops.prelude import answer


def run() -> Dict[str, Any]:
    torch.manual_seed(0)
    head = YOLOXHead(
        num_classes=80,
        in_channels=8,
        feat_channels=8,
        test_cfg=ConfigDict(score_thr=0.01, nms=dict(type="soft_nms", iou_threshold=0.65)),
    )
    sizes = [40, 20, 10]  # a 320x320 image at strides 8, 16, 32
    cls_scores = [torch.randn(1, 80, s, s).half() for s in sizes]
    bbox_preds = [torch.randn(1, 4, s, s) for s in sizes]
    objectnesses = [torch.randn(1, 1, s, s).half() for s in sizes]
    metas = [dict(img_shape=(320, 320), scale_factor=(1.0, 1.0))]
    [result] = head.predict_by_feat(cls_scores, bbox_preds, objectnesses, metas, rescale=False, with_nms=True)
    return {"boxes": len(result.bboxes), "scores_dtype": str(result.scores.dtype)}


answer(run)
