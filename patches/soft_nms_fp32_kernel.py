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

from mmcv_patcher.model import Affected, Edit, Patch, per_distribution

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
        Edit("dets = dets[:inds.size(0)]", "dets = dets[:inds.size(0)].to(torch.promote_types(boxes.dtype, scores.dtype))"),
    ),
    error="RuntimeError: expected scalar type Float but found Half",
    examples=(
        (
            "def soft_nms(boxes, scores, iou_threshold=0.3, sigma=0.5, min_score=1e-3, method='linear', offset=0):\n"
            "    dets, inds = SoftNMSop.apply(boxes.cpu(), scores.cpu(),\n"
            "                                 float(iou_threshold), float(sigma),\n"
            "                                 float(min_score), method_dict[method],\n"
            "                                 int(offset))\n"
            "\n"
            "    dets = dets[:inds.size(0)]\n",
            "def soft_nms(boxes, scores, iou_threshold=0.3, sigma=0.5, min_score=1e-3, method='linear', offset=0):\n"
            "    dets, inds = SoftNMSop.apply(boxes.cpu().float(), scores.cpu().float(),\n"
            "                                 float(iou_threshold), float(sigma),\n"
            "                                 float(min_score), method_dict[method],\n"
            "                                 int(offset))  # mmcv-patcher: soft-nms-fp32-kernel sha256={sha256}\n"
            "\n"
            "    dets = dets[:inds.size(0)].to(torch.promote_types(boxes.dtype, scores.dtype))  # mmcv-patcher: soft-nms-fp32-kernel sha256={sha256}\n",
        ),
    ),
    untouched=(
        # the slicing of dets in another function
        "def nms(boxes, scores):\n    dets = dets[:inds.size(0)]\n",
        # already fixed
        "def soft_nms(boxes, scores, iou_threshold=0.3, sigma=0.5, min_score=1e-3, method='linear', offset=0):\n    dets = dets[:inds.size(0)].to(torch.promote_types(boxes.dtype, scores.dtype))\n",
    ),
)
