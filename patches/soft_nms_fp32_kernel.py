"""soft-nms-fp32-kernel: run ``soft_nms``'s kernel in fp32, return the caller's dtype.

The soft-NMS kernel always runs on the CPU and reads ``float``, so ``soft_nms`` (and
``batched_nms`` with a ``soft_nms`` config, as YOLOX and ByteTrack test configs use) fails
under AMP with "RuntimeError: expected scalar type Float but found Half". The kernel now
gets fp32 boxes and scores, and the ``dets`` it returns are cast to
``torch.promote_types(boxes.dtype, scores.dtype)``: what ``torch.cat`` of the caller's
tensors gives, so fp32 callers see no change at all.

Releases: ``SoftNMSop`` exists from mmcv 1.2.3 on; older releases call the extension
directly (not affected here). Both statements are byte for byte the same up to 2.2.0 and in
every onedl-mmcv.
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

_MMCV = (Affected("1.2.3", "2.2.0"),)

PATCH = Patch(
    id="soft-nms-fp32-kernel",
    summary="soft_nms: run the kernel on fp32 copies, cast dets back to the inputs' dtype",
    affected=per_distribution(_MMCV, (Affected("2.3.0", "2.3.6"),)),
    file="ops/nms.py",
    function="soft_nms",
    edits=(
        Edit(
            "dets, inds = SoftNMSop.apply(boxes.cpu(), scores.cpu(), float(iou_threshold), float(sigma), float(min_score), method_dict[method], int(offset))",
            "dets, inds = SoftNMSop.apply(boxes.cpu().float(), scores.cpu().float(), float(iou_threshold), float(sigma), float(min_score), method_dict[method], int(offset))",
        ),
        Edit(
            "dets = dets[:inds.size(0)]",
            "dets = dets[:inds.size(0)].to(torch.promote_types(boxes.dtype, scores.dtype))",
        ),
    ),
    error=(
        "`RuntimeError: expected scalar type Float but found Half`; `... found BFloat16`"
        " (YOLOX/ByteTrack test cfgs with `soft_nms`, directly or through `batched_nms`)"
    ),
    case=Case(
        op="soft_nms",
        args=(Tensor("boxes", 3000), Tensor("scores", 3000, amp=True), 0.5, 0.5, 0.05),
        gave="soft_nms: 3000 fp32 boxes, {amp} scores",
    ),
    examples=(
        Example.of(
            """
            def soft_nms(boxes, scores, iou_threshold=0.3, sigma=0.5, min_score=1e-3, method='linear', offset=0):
                dets, inds = SoftNMSop.apply(boxes.cpu(), scores.cpu(),
                                             float(iou_threshold), float(sigma),
                                             float(min_score), method_dict[method],
                                             int(offset))

                dets = dets[:inds.size(0)]
            """,
            """
            def soft_nms(boxes, scores, iou_threshold=0.3, sigma=0.5, min_score=1e-3, method='linear', offset=0):
                dets, inds = SoftNMSop.apply(boxes.cpu().float(), scores.cpu().float(),
                                             float(iou_threshold), float(sigma),
                                             float(min_score), method_dict[method],
                                             int(offset))

                dets = dets[:inds.size(0)].to(torch.promote_types(boxes.dtype, scores.dtype))
            """,
            why="as released: both statements",
        ),
    ),
    untouched=(
        Untouched.of(
            """
            def nms(boxes, scores):
                dets = dets[:inds.size(0)]
            """,
            why="the slicing of dets in another function",
        ),
        Untouched.of(
            """
            def soft_nms(boxes, scores, iou_threshold=0.3, sigma=0.5, min_score=1e-3, method='linear', offset=0):
                dets = dets[:inds.size(0)].to(torch.promote_types(boxes.dtype, scores.dtype))
            """,
            why="the fix already there",
        ),
    ),
    proofs=Proofs(
        grids=(
            nms_grid(
                ("soft_nms", "batched_nms(soft_nms)"),
                "RuntimeError: expected scalar type Float but found {name}",
                dets="float32",
            ),
        ),
        upstream=("tests/test_ops/test_nms.py",),
    ),
)
