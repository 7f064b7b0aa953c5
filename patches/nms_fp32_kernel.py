"""nms-fp32-kernel: run ``nms``'s kernel on fp32 copies of fp16 boxes and scores.

mmcv's NMS kernels (CPU and CUDA) read ``data_ptr<float>()``, so ``nms`` with fp16 boxes
(a head that decodes boxes in half under AMP) fails with "RuntimeError: expected scalar
type Float but found Half". The kernel now gets ``boxes.float()`` and ``scores.float()``;
``dets`` is still made from the caller's own tensors, so it has the dtype it always had,
and fp32 callers see no change at all (``.float()`` of an fp32 tensor is the tensor itself).

Releases: ``NMSop.apply`` with four arguments in mmcv 1.0.3 to 1.3.5, with six (score
threshold and max_num) from 1.3.6 to 2.2.0 and in every onedl-mmcv; 1.0.0 to 1.0.2 call
the extension differently.
"""

from mmcv_patcher.model import (
    Affected,
    Case,
    Edit,
    Example,
    Patch,
    Proofs,
    Step,
    Tensor,
    Untouched,
    per_distribution,
)

from ._grids import nms_grid

_OLD = Edit(
    "inds = NMSop.apply(boxes, scores, iou_threshold, offset)",
    "inds = NMSop.apply(boxes.float(), scores.float(), iou_threshold, offset)",
)
_NEW = Edit(
    "inds = NMSop.apply(boxes, scores, iou_threshold, offset, score_threshold, max_num)",
    "inds = NMSop.apply(boxes.float(), scores.float(), iou_threshold, offset, score_threshold, max_num)",
)
_MMCV = (Affected("1.0.3", "1.3.5", counts=(1, 0)), Affected("1.3.6", "2.2.0", counts=(0, 1)))

PATCH = Patch(
    id="nms-fp32-kernel",
    summary="nms: give the kernel fp32 boxes and scores (fp16 boxes crash it)",
    affected=per_distribution(_MMCV, (Affected("2.3.0", "2.3.6", counts=(0, 1)),)),
    file="ops/nms.py",
    function="nms",
    edits=(_OLD, _NEW),
    error=(
        "`RuntimeError: expected scalar type Float but found Half`; `... found BFloat16`"
        " (boxes in the AMP dtype: the RPN of Faster R-CNN under bf16 autocast)"
    ),
    case=Case(
        op="nms",
        args=(Tensor("boxes", 3000, amp=True), Tensor("scores", 3000, amp=True), 0.5),
        gave="nms: 3000 {amp} boxes and scores",
    ),
    examples=(
        Example.of(
            """
            def nms(boxes, scores, iou_threshold, offset=0, score_threshold=0, max_num=-1):
                inds = NMSop.apply(boxes, scores, iou_threshold, offset,
                                   score_threshold, max_num)
                dets = torch.cat((boxes[inds], scores[inds].reshape(-1, 1)), dim=1)
            """,
            """
            def nms(boxes, scores, iou_threshold, offset=0, score_threshold=0, max_num=-1):
                inds = NMSop.apply(boxes.float(), scores.float(), iou_threshold, offset,
                                   score_threshold, max_num)
                dets = torch.cat((boxes[inds], scores[inds].reshape(-1, 1)), dim=1)
            """,
            why="mmcv 1.3.6 to 2.2.0: six arguments",
        ),
        Example.of(
            """
            def nms(boxes, scores, iou_threshold, offset=0):
                inds = NMSop.apply(boxes, scores, iou_threshold, offset)
            """,
            """
            def nms(boxes, scores, iou_threshold, offset=0):
                inds = NMSop.apply(boxes.float(), scores.float(), iou_threshold, offset)
            """,
            why="mmcv 1.0.3 to 1.3.5: four arguments",
        ),
    ),
    untouched=(
        Untouched.of(
            """
            def nms(boxes, scores, iou_threshold, offset=0, score_threshold=0, max_num=-1):
                inds = NMSop.apply(boxes.float(), scores.float(), iou_threshold, offset, score_threshold, max_num)
            """,
            why="already fp32",
        ),
        Untouched.of(
            """
            def nms(boxes, scores, iou_threshold, offset=0):
                inds = nms_ext.nms(boxes, scores, iou_threshold, offset)
            """,
            why="mmcv 1.0.0 to 1.0.2 call the extension another way",
        ),
    ),
    proofs=Proofs(
        grids=(nms_grid(("nms",), "RuntimeError: expected scalar type Float but found {name}"),),
        # its RPN's proposals meet the kernel; once they pass, its RoI head needs RoIAlign's fix
        steps=(
            Step("faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py", "mmcv/ops/nms.py", after=("roi-align-fp32-kernel",)),
        ),
        upstream=("tests/test_ops/test_nms.py",),
    ),
)
