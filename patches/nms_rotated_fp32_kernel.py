"""nms-rotated-fp32-kernel: run ``nms_rotated``'s kernel on fp32 copies of its inputs.

mmrotate under AMP gives ``nms_rotated`` fp16 boxes and scores: the CPU kernel raises
"NotImplementedError: "nms_rotated" not implemented for 'Half'" and the CUDA one returns
wrong results (mmcv #1663). The kernel call (the CPU and CUDA one; the NPU/MLU and parrots
calls are left alone) now gets fp32 copies; ``dets`` is still made from the caller's own
tensors, so fp32 callers see no change at all.

Releases: from mmcv 1.2.1 (when ``nms_rotated`` arrived) to 1.7.1 without labels, from
1.7.2 to 2.2.0 and in every onedl-mmcv with ``input_labels``.
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

_NO_LABELS = Edit(
    "keep_inds = ext_module.nms_rotated(dets_wl, scores, order, dets_sorted, iou_threshold, multi_label)",
    "keep_inds = ext_module.nms_rotated(dets_wl.float(), scores.float(), order, dets_sorted.float(), iou_threshold, multi_label)",
)
_LABELS = Edit(
    "keep_inds = ext_module.nms_rotated(dets_wl, scores, order, dets_sorted, input_labels, iou_threshold, multi_label)",
    "keep_inds = ext_module.nms_rotated(dets_wl.float(), scores.float(), order, dets_sorted.float(), input_labels, iou_threshold, multi_label)",
)
_MMCV = (Affected("1.2.1", "1.7.1", counts=(1, 0)), Affected("1.7.2", "2.2.0", counts=(0, 1)))

PATCH = Patch(
    id="nms-rotated-fp32-kernel",
    summary="nms_rotated: give the kernel fp32 boxes and scores (fp16 is not implemented on CPU, wrong on CUDA)",
    affected=per_distribution(_MMCV, (Affected("2.3.0", "2.3.6", counts=(0, 1)),)),
    file="ops/nms.py",
    function="nms_rotated",
    edits=(_NO_LABELS, _LABELS),
    error="`NotImplementedError: \"nms_rotated\" not implemented for 'Half'`; `... for 'BFloat16'` on CPU, wrong results on CUDA (mmrotate)",
    case=Case(
        op="nms_rotated",
        args=(Tensor("rotated-boxes", 1500, amp=True), Tensor("scores", 1500, amp=True), 0.3),
        gave="nms_rotated: 1500 {amp} rotated boxes and scores",
    ),
    examples=(
        Example.of(
            """
            def nms_rotated(dets, scores, iou_threshold, labels=None, clockwise=True):
                keep_inds = ext_module.nms_rotated(dets_wl, scores, order, dets_sorted,
                                                   input_labels, iou_threshold,
                                                   multi_label)
            """,
            """
            def nms_rotated(dets, scores, iou_threshold, labels=None, clockwise=True):
                keep_inds = ext_module.nms_rotated(dets_wl.float(), scores.float(), order, dets_sorted.float(),
                                                   input_labels, iou_threshold,
                                                   multi_label)
            """,
            why="mmcv 1.7.2 to 2.2.0: with labels",
        ),
        Example.of(
            """
            def nms_rotated(dets, scores, iou_threshold, labels=None):
                keep_inds = ext_module.nms_rotated(dets_wl, scores, order, dets_sorted, iou_threshold, multi_label)
            """,
            """
            def nms_rotated(dets, scores, iou_threshold, labels=None):
                keep_inds = ext_module.nms_rotated(dets_wl.float(), scores.float(), order, dets_sorted.float(), iou_threshold, multi_label)
            """,
            why="mmcv 1.2.1 to 1.7.1: without labels",
        ),
    ),
    untouched=(
        Untouched.of(
            """
            def nms_rotated(dets, scores, iou_threshold, labels=None, clockwise=True):
                keep_inds = ext_module.nms_rotated(dets, scores, labels, iou_threshold, multi_label)
            """,
            why="the NPU and MLU call, whose kernel takes what it gets",
        ),
        Untouched.of(
            """
            def other(dets, scores):
                keep_inds = ext_module.nms_rotated(dets_wl, scores, order, dets_sorted, iou_threshold, multi_label)
            """,
            why="the statement outside nms_rotated",
        ),
    ),
    proofs=Proofs(
        grids=(nms_grid(("nms_rotated",), "NotImplementedError: \"nms_rotated\" not implemented for '{name}'"),),
        upstream=("tests/test_ops/test_nms_rotated.py",),
    ),
)
