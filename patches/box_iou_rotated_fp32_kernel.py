"""box-iou-rotated-fp32-kernel: give ``box_iou_rotated``'s kernel fp32 boxes, whatever dtype they come in.

mmcv's rotated IoU kernels (CPU and CUDA) take fp32 only: fp16 or bf16 boxes, from an
mmrotate head under autocast, or fp32 boxes beside them, fail in its assigners and losses
with ``RuntimeError: expected scalar type Float but found Half`` (``... BFloat16``), and
fp64 ones fail too (mmcv PR #2899, never merged). ``box_iou_rotated`` now gives the kernel
fp32 boxes and an fp32 result, which it returns in the first boxes' dtype, as the release
makes it. Every call that works today (fp32 boxes) gets ``.float()`` and ``.to()`` its own
dtype, which are the tensors themselves: no copy, bit-identical results.

Releases: the function has these statements from mmcv 1.2.3 to 2.2.0 and in every
onedl-mmcv. 1.2.1 and 1.2.2 had another function, whose kernel made the result itself: a
different failure this fix does not take on, so they are not affected by it.
"""

from mmcv_patcher.model import (
    Affected,
    Case,
    Edit,
    Example,
    Fails,
    Grid,
    Patch,
    Proofs,
    Tensor,
    Untouched,
    per_distribution,
)

PATCH = Patch(
    id="box-iou-rotated-fp32-kernel",
    summary="box_iou_rotated: fp32 boxes for the kernel; the IoUs in the first boxes' dtype",
    affected=per_distribution((Affected("1.2.3", "2.2.0"),), (Affected("2.3.0", "2.3.6"),)),
    file="ops/box_iou_rotated.py",
    function="box_iou_rotated",
    edits=(
        Edit(
            "rows = bboxes1.size(0)",
            "rows, ious_dtype, bboxes1, bboxes2 = bboxes1.size(0), bboxes1.dtype, bboxes1.float(), bboxes2.float()",
        ),
        Edit("return ious", "return ious.to(ious_dtype)"),
    ),
    error=(
        "`RuntimeError: expected scalar type Float but found Half` (`... BFloat16`; mmrotate's assigners and losses"
        " under AMP)"
    ),
    case=Case(
        op="box_iou_rotated",
        args=(Tensor("rotated-boxes", 300, amp=True), Tensor("rotated-boxes", 200, amp=True)),
        gave="box_iou_rotated: 300 and 200 {amp} rotated boxes",
        compare="values",
    ),
    examples=(
        Example.of(
            """
            def box_iou_rotated(bboxes1, bboxes2, mode='iou', aligned=False, clockwise=True):
                assert mode in ['iou', 'iof']
                mode_dict = {'iou': 0, 'iof': 1}
                mode_flag = mode_dict[mode]
                rows = bboxes1.size(0)
                cols = bboxes2.size(0)
                if aligned:
                    ious = bboxes1.new_zeros(rows)
                else:
                    ious = bboxes1.new_zeros(rows * cols)
                bboxes1 = bboxes1.contiguous()
                bboxes2 = bboxes2.contiguous()
                ext_module.box_iou_rotated(
                    bboxes1, bboxes2, ious, mode_flag=mode_flag, aligned=aligned)
                if not aligned:
                    ious = ious.view(rows, cols)
                return ious
            """,
            """
            def box_iou_rotated(bboxes1, bboxes2, mode='iou', aligned=False, clockwise=True):
                assert mode in ['iou', 'iof']
                mode_dict = {'iou': 0, 'iof': 1}
                mode_flag = mode_dict[mode]
                rows, ious_dtype, bboxes1, bboxes2 = bboxes1.size(0), bboxes1.dtype, bboxes1.float(), bboxes2.float()
                cols = bboxes2.size(0)
                if aligned:
                    ious = bboxes1.new_zeros(rows)
                else:
                    ious = bboxes1.new_zeros(rows * cols)
                bboxes1 = bboxes1.contiguous()
                bboxes2 = bboxes2.contiguous()
                ext_module.box_iou_rotated(
                    bboxes1, bboxes2, ious, mode_flag=mode_flag, aligned=aligned)
                if not aligned:
                    ious = ious.view(rows, cols)
                return ious.to(ious_dtype)
            """,
            why="as released, without the MLU, NPU and clockwise branches",
        ),
    ),
    untouched=(
        Untouched.of(
            """
            def box_iou_quadri(bboxes1, bboxes2, mode='iou', aligned=False):
                rows = bboxes1.size(0)
                return ious
            """,
            why="the same statements in the quadrilateral IoU beside it",
        ),
    ),
    proofs=Proofs(
        grids=(
            Grid(
                "box_iou_rotated",
                works=(("float32", "float32"),),
                # the kernel takes fp32 only; once patched, the first boxes' dtype within one rounding of an IoU
                fails=tuple(
                    Fails(
                        (first, second),
                        f"RuntimeError: expected scalar type Float but found {found}",
                        (f"torch.{first}",) * 2,
                        2**-8 if first == "bfloat16" else 2**-10,
                    )
                    for first, second, found in (
                        ("float16", "float16", "Half"),
                        ("bfloat16", "bfloat16", "BFloat16"),
                        ("float16", "float32", "Half"),
                        ("float32", "bfloat16", "BFloat16"),
                        ("float64", "float64", "Double"),
                    )
                ),
            ),
        ),
        upstream=("tests/test_ops/test_box_iou_rotated.py",),
    ),
)
