"""batched-nms-amp-dtype: cast NMS scores back to the buffer's dtype in ``batched_nms``.

Under AMP the scores are fp16 while the boxes are fp32, so ``dets`` (boxes and scores
concatenated) is fp32. At or above ``split_thr`` boxes ``batched_nms`` writes ``dets[:, -1]``
into ``scores_after_nms``, a buffer made from the fp16 scores, and ``index_put`` fails with
"Index put requires the source and destination dtypes match, got Half for the destination
and Float for the source." Casting the source to the destination's dtype is exactly what the
non-split branch already gets implicitly; nothing else changes.

Releases: every mmcv / mmcv-full release 1.3.4 to 1.7.2 and mmcv / mmcv-lite 2.0.0 to 2.2.0
have the statement byte for byte; 1.3.3 and older never write scores back. The fork
onedl-mmcv has it up to 2.3.5 and the fix (split over two lines) from 2.3.6.
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

_MMCV_RANGE = (Affected(introduced="1.3.4", last_affected="2.2.0"),)  # upstream never fixed it

PATCH = Patch(
    id="batched-nms-amp-dtype",
    summary="batched_nms: cast dets[:, -1] to the fp16 score buffer's dtype (AMP crash above split_thr)",
    affected=per_distribution(_MMCV_RANGE, (Affected(fixed="2.3.6"),)),
    file="ops/nms.py",
    function="batched_nms",
    edits=(
        Edit(
            "scores_after_nms[mask[keep]] = dets[:, -1]",
            "scores_after_nms[mask[keep]] = dets[:, -1].to(scores_after_nms.dtype)",
        ),
    ),
    error=(
        "`RuntimeError: Index put requires the source and destination dtypes match, got Half for the destination and Float for the source`;"
        " `... got BFloat16 for the destination ...` (at or above `split_thr` boxes)"
    ),
    case=Case(
        op="batched_nms",
        args=(
            Tensor("boxes", "boxes"),
            Tensor("scores", "boxes", amp=True),
            Tensor("labels", "boxes", scale=3),
            {"type": "nms", "iou_threshold": 0.5, "split_thr": 10000},
        ),
        gave="batched_nms: {boxes} fp32 boxes, {amp} scores, 3 classes (split_thr 10000)",
    ),
    examples=(
        Example.of(
            """
            def batched_nms(boxes):
                for id in ids:
                    scores_after_nms[mask[keep]] = dets[:, -1]
            """,
            """
            def batched_nms(boxes):
                for id in ids:
                    scores_after_nms[mask[keep]] = dets[:, -1].to(scores_after_nms.dtype)
            """,
            why="as released",
        ),
        Example.of(
            """
            def batched_nms(boxes):
                scores_after_nms[ mask[ keep ] ]=(dets[:,
                    -1])  # keep
            """,
            """
            def batched_nms(boxes):
                scores_after_nms[ mask[ keep ] ]=(dets[:,
                    -1]).to(scores_after_nms.dtype)  # keep
            """,
            why="its own spacing, brackets and comment kept",
        ),
    ),
    untouched=(
        Untouched.of(
            """
            def batched_nms(boxes):
                dets, keep = nms(boxes, scores)
                scores = dets[:, -1]
            """,
            why="the branch below split_thr: dets has the scores' own dtype there",
        ),
        Untouched.of(
            """
            def other(boxes):
                scores_after_nms[mask[keep]] = dets[:, -1]
            """,
            why="the statement in another function",
        ),
        Untouched.of(
            """
            def batched_nms(boxes):
                scores_after_nms[mask[keep]] = dets[:, -1].to(scores_after_nms.dtype)
            """,
            why="the fix already there",
        ),
    ),
    proofs=Proofs(
        grids=(
            nms_grid(
                ("batched_nms(split)",),
                "RuntimeError: Index put requires the source and destination dtypes match, got {name} for the destination and Float for the source.",
                dets="float32",
            ),
        ),
        upstream=("tests/test_ops/test_nms.py",),
    ),
)
