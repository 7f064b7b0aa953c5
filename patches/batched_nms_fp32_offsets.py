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

from mmcv_patcher.model import (
    Affected,
    Case,
    Edit,
    Example,
    Patch,
    Proofs,
    Tensor,
    Untouched,
    per_distribution,
)

from ._grids import nms_grid

_PLAIN = Edit(
    "offsets = idxs.to(boxes) * (max_coordinate + 1)", "offsets = idxs.to(boxes.float()) * (max_coordinate.float() + 1)"
)
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
    error=(
        "no error: with fp16 boxes and many classes (COCO's 80) the class offsets overflow to `inf`"
        " (bf16: lose their low bits) and boxes of different classes suppress each other"
    ),
    case=Case(
        op="batched_nms",
        args=(
            Tensor("boxes", 2000, amp=True),
            Tensor("scores", 2000, amp=True),
            Tensor("labels", 2000, scale=80),
            {"type": "nms", "iou_threshold": 0.5, "split_thr": 10000},
        ),
        gave="batched_nms: 2000 {amp} boxes and scores, 80 classes",
    ),
    examples=(
        Example.of(
            """
            def batched_nms(boxes, scores, idxs, nms_cfg, class_agnostic=False):
                if boxes.size(-1) == 5:
                    max_coordinate = boxes[..., :2].max() + boxes[..., 2:4].max()
                    offsets = idxs.to(boxes) * (
                        max_coordinate + torch.tensor(1).to(boxes))
                else:
                    max_coordinate = boxes.max()
                    offsets = idxs.to(boxes) * (
                        max_coordinate + torch.tensor(1).to(boxes))
                    boxes_for_nms = boxes + offsets[:, None]
            """,
            """
            def batched_nms(boxes, scores, idxs, nms_cfg, class_agnostic=False):
                if boxes.size(-1) == 5:
                    max_coordinate = boxes[..., :2].max() + boxes[..., 2:4].max()
                    offsets = idxs.to(boxes.float()) * (
                        max_coordinate.float() + torch.tensor(1).to(boxes))
                else:
                    max_coordinate = boxes.max()
                    offsets = idxs.to(boxes.float()) * (
                        max_coordinate.float() + torch.tensor(1).to(boxes))
                    boxes_for_nms = boxes + offsets[:, None]
            """,
            why="mmcv 1.5.3 to 2.2.0: both branches, over two lines",
        ),
        Example.of(
            """
            def batched_nms(boxes, scores, idxs, nms_cfg, class_agnostic=False):
                offsets = idxs.to(boxes) * (max_coordinate + 1)
            """,
            """
            def batched_nms(boxes, scores, idxs, nms_cfg, class_agnostic=False):
                offsets = idxs.to(boxes.float()) * (max_coordinate.float() + 1)
            """,
            why="mmcv 1.0.0 to 1.2.0: a plain 1",
        ),
    ),
    untouched=(
        Untouched.of(
            """
            def batched_nms(boxes, scores, idxs, nms_cfg):
                offsets = idxs.to(boxes.float()) * (max_coordinate.float() + torch.tensor(1).to(boxes))
            """,
            why="already fp32 (onedl-mmcv's fix)",
        ),
        Untouched.of(
            """
            def batched_nms_rotated(boxes, idxs):
                offsets = idxs.to(boxes) * (max_coordinate + torch.tensor(1).to(boxes))
            """,
            why="the statement in another function",
        ),
    ),
    proofs=Proofs(
        grids=(
            # with the kernel fixed, the class offsets of 80 classes overflow fp16 (and lose bf16's
            # low bits): boxes of other classes suppress each other, with no error
            nms_grid(("batched_nms(80 classes)",), None, dets="float32", after=("nms-fp32-kernel",)),
        ),
        upstream=("tests/test_ops/test_nms.py",),
    ),
)
