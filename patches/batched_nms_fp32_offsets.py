"""batched-nms-fp32-offsets: compute ``batched_nms``'s per-class offsets in fp32.

To run one NMS over all classes, ``batched_nms`` shifts each class's boxes by
``idxs * (max_coordinate + 1)``. With fp16 boxes and many class ids (COCO's 80) the offsets
pass 65504 and become ``inf``, so boxes of different classes suppress each other: silently
wrong results, no error. The offsets (and so ``boxes_for_nms``) are now fp32, which never
overflows and equals the fp32 run on the same values; fp32 callers see no change at all.

Releases: ``max_coordinate + 1`` in mmcv 1.0.0 to 1.2.0; ``max_coordinate +
torch.tensor(1).to(boxes)`` from 1.2.1, once up to 1.5.2 and twice (the rotated-box branch
too) from 1.5.3 to 2.2.0 and in every onedl-mmcv.
"""

from mmcv_patcher.model import Affected, Edit, Patch, per_distribution

_PLAIN = Edit("offsets = idxs.to(boxes) * (max_coordinate + 1)", "offsets = idxs.to(boxes.float()) * (max_coordinate.float() + 1)")
_TENSOR = Edit(
    "offsets = idxs.to(boxes) * (max_coordinate + torch.tensor(1).to(boxes))",
    "offsets = idxs.to(boxes.float()) * (max_coordinate.float() + torch.tensor(1).to(boxes))",
)
_MMCV = (
    Affected("1.0.0", "1.2.0", counts=(1, 0)),
    Affected("1.2.1", "1.5.2", counts=(0, 1)),
    Affected("1.5.3", "2.2.0", counts=(0, 2)),
)

PATCH = Patch(
    id="batched-nms-fp32-offsets",
    summary="batched_nms: class offsets in fp32, so fp16 boxes of many classes do not overflow to inf",
    affected=per_distribution(_MMCV, (Affected("2.3.0", "2.3.6", counts=(0, 2)),)),
    file="ops/nms.py",
    function="batched_nms",
    edits=(_PLAIN, _TENSOR),
    error="(no error: boxes of different classes suppress each other when offsets overflow fp16)",
    examples=(
        (
            "def batched_nms(boxes, scores, idxs, nms_cfg, class_agnostic=False):\n"
            "    if boxes.size(-1) == 5:\n"
            "        max_coordinate = boxes[..., :2].max() + boxes[..., 2:4].max()\n"
            "        offsets = idxs.to(boxes) * (\n"
            "            max_coordinate + torch.tensor(1).to(boxes))\n"
            "    else:\n"
            "        max_coordinate = boxes.max()\n"
            "        offsets = idxs.to(boxes) * (\n"
            "            max_coordinate + torch.tensor(1).to(boxes))\n"
            "        boxes_for_nms = boxes + offsets[:, None]\n",
            "def batched_nms(boxes, scores, idxs, nms_cfg, class_agnostic=False):\n"
            "    if boxes.size(-1) == 5:\n"
            "        max_coordinate = boxes[..., :2].max() + boxes[..., 2:4].max()\n"
            "        offsets = idxs.to(boxes.float()) * (\n"
            "            max_coordinate.float() + torch.tensor(1).to(boxes))  # mmcv-patcher: batched-nms-fp32-offsets sha256={sha256}\n"
            "    else:\n"
            "        max_coordinate = boxes.max()\n"
            "        offsets = idxs.to(boxes.float()) * (\n"
            "            max_coordinate.float() + torch.tensor(1).to(boxes))  # mmcv-patcher: batched-nms-fp32-offsets sha256={sha256}\n"
            "        boxes_for_nms = boxes + offsets[:, None]\n",
        ),
    ),
    untouched=(
        # already fp32: onedl-mmcv's fix
        "def batched_nms(boxes, scores, idxs, nms_cfg):\n    offsets = idxs.to(boxes.float()) * (max_coordinate.float() + torch.tensor(1).to(boxes))\n",
        # the statement in another function
        "def batched_nms_rotated(boxes, idxs):\n    offsets = idxs.to(boxes) * (max_coordinate + torch.tensor(1).to(boxes))\n",
    ),
)
