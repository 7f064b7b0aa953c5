"""rbbox-overlaps-fp16-bounds: clamp rotated boxes' centres within fp16's range in mmrotate's overlaps.

``rbbox_overlaps`` and ``fake_rbbox_overlaps`` clamp copies of the boxes' centres in place
to +-1e7 before mmcv's ``box_iou_rotated``. Under fp16 autocast the boxes come in fp16
(Oriented R-CNN's proposals, as its assigners compare them), and 1e7 is not a Half:
``RuntimeError: value cannot be converted to type c10::Half without overflow``, whatever the
boxes' values. Each bound is now the nearer of 1e7 and the dtype's own largest value
(``finfo``): in fp16 the clamp takes infinite centres to +-65504, as it takes any larger
value to +-1e7 in the other dtypes; in fp32, bf16 and fp64 the bounds are 1e7 itself, the
same in-place call as released (no copy, bit-identical). The module binds ``finfo`` with its
``from torch import Tensor``.

Releases: mmrotate 1.0.0rc1 (1.0.0rc0 had no such clamp) and every onedl-mmrotate from
1.1.0rc0 to 1.2.1 have the four statements byte for byte; mmrotate 0.x has no ``structures``
package.
"""

from mmcv_patcher.model import Affected, Case, Edit, Example, Fails, Grid, Patch, Proofs, Step, Tensor, Untouched

_OVERLAPS = "rbbox_overlaps"
_FAKE = "fake_rbbox_overlaps"


def _clamp(boxes: str, *, function: str = _OVERLAPS) -> Edit:
    """The centres' clamp of ``boxes``, its bounds within the dtype's range."""
    bounds = f"finfo({boxes}.dtype)"
    return Edit(
        f"{boxes}[:, :2].clamp_(min=-1e7, max=1e7)",
        f"{boxes}[:, :2].clamp_(min=max(-1e7, {bounds}.min), max=min(1e7, {bounds}.max))",
        function=None if function == _OVERLAPS else function,
    )


_CLAMPS = tuple(
    _clamp(boxes, function=function)
    for function in (_OVERLAPS, _FAKE)
    for boxes in ("clamped_bboxes1", "clamped_bboxes2")
)
_IMPORT = Edit("from torch import Tensor", "from torch import Tensor, finfo", binds="finfo")
#: the released functions' clamps, and what they become
_RELEASED, _FIXED = (
    f"""
    from torch import Tensor{imported}


    def rbbox_overlaps(bboxes1, bboxes2, mode='iou', is_aligned=False):
        clamped_bboxes1 = bboxes1.detach().clone()
        clamped_bboxes2 = bboxes2.detach().clone()
        clamped_bboxes1[:, 2:4].clamp_(min=1e-3)
        clamped_bboxes2[:, 2:4].clamp_(min=1e-3)

        # resolve `rbbox_overlaps` abnormal when coordinate value is too large.
        # TODO: fix in mmcv
        clamped_bboxes1[:, :2].clamp_({one})
        clamped_bboxes2[:, :2].clamp_({two})

        return box_iou_rotated(clamped_bboxes1, clamped_bboxes2, mode, is_aligned)


    def fake_rbbox_overlaps(bboxes1, bboxes2, mode='iou', is_aligned=False):
        clamped_bboxes1 = fake_rbboxes1.detach().clone().tensor
        clamped_bboxes2 = fake_rbboxes2.detach().clone().tensor
        clamped_bboxes1[:, :2].clamp_({one})
        clamped_bboxes2[:, :2].clamp_({two})
        return box_iou_rotated(clamped_bboxes1, clamped_bboxes2, mode, is_aligned)
    """
    for imported, one, two in (
        ("", "min=-1e7, max=1e7", "min=-1e7, max=1e7"),
        (
            ", finfo",
            "min=max(-1e7, finfo(clamped_bboxes1.dtype).min), max=min(1e7, finfo(clamped_bboxes1.dtype).max)",
            "min=max(-1e7, finfo(clamped_bboxes2.dtype).min), max=min(1e7, finfo(clamped_bboxes2.dtype).max)",
        ),
    )
)

PATCH = Patch(
    id="rbbox-overlaps-fp16-bounds",
    summary="mmrotate rbbox_overlaps: clamp the boxes' centres within fp16's range (1e7 overflows a Half)",
    affected={
        "mmrotate": (Affected(introduced="1.0.0rc1", last_affected="1.0.0rc1"),),
        "onedl-mmrotate": (Affected(introduced="1.1.0rc0", last_affected="1.2.1"),),
    },
    file="structures/bbox/bbox_overlaps.py",
    function=_OVERLAPS,
    edits=(*_CLAMPS, _IMPORT),
    error=(
        "`RuntimeError: value cannot be converted to type c10::Half without overflow` (Oriented R-CNN's box assignment"
        " under fp16)"
    ),
    case=Case(
        op=_OVERLAPS,
        module="mmrotate.structures.bbox",
        args=(Tensor("rotated-boxes", 300, amp=True), Tensor("rotated-boxes", 200, amp=True)),
        compare="values",
        gave="rbbox_overlaps: 300 and 200 {amp} rotated boxes",
    ),
    examples=(Example.of(_RELEASED, _FIXED, why="as released: the clamps of both functions, and the import"),),
    untouched=(
        Untouched.of(
            """
            from torch import Tensor


            def rbbox_overlaps(bboxes1, bboxes2, mode='iou', is_aligned=False):
                return box_iou_rotated(bboxes1, bboxes2, mode, is_aligned)
            """,
            why="mmrotate 1.0.0rc0: no clamp of the centres",
        ),
        Untouched.of(
            """
            def bbox_overlaps(bboxes1, bboxes2):
                clamped_bboxes1[:, :2].clamp_(min=-1e7, max=1e7)
            """,
            why="the statement in another function",
        ),
    ),
    proofs=Proofs(
        grids=(
            Grid(
                "rbbox_overlaps",
                # bf16 boxes get there once mmcv's kernel takes them
                works=tuple((call, dtype) for call in (_OVERLAPS, _FAKE) for dtype in ("float32", "bfloat16")),
                # once patched: fp16 IoUs, within a rounding of the fp32 kernel's on the same
                # boxes; fake_rbbox_overlaps makes its hulls of them in fp16 first (cos and sin
                # of the angles, at 1/8 px steps around 200 px), a few roundings more
                fails=tuple(
                    Fails(
                        (call, "float16"),
                        "RuntimeError: value cannot be converted to type c10::Half without overflow",
                        ("torch.float16",),
                        tolerance,
                    )
                    for call, tolerance in ((_OVERLAPS, 2**-10), (_FAKE, 2**-7))
                ),
                after=("box-iou-rotated-fp32-kernel",),
            ),
        ),
        steps=(
            Step(
                "mmrotate::oriented_rcnn/oriented-rcnn-le90_r50_fpn_amp-1x_dota.py",
                "mmrotate/structures/bbox/bbox_overlaps.py",
                dtype="fp16",
                size="128x128",
                # the mmcv ops its RPN and rotated RoI head call, and the proposals' conversion
                after=(
                    "nms-fp32-kernel",
                    "nms-rotated-fp32-kernel",
                    "roi-align-rotated-fp32-kernel",
                    "box-iou-rotated-fp32-kernel",
                    "qbox2rbox-fp32-points",
                ),
            ),
        ),
        upstream=("tests/test_models/test_task_modules/test_rotated_iou2d_calculator.py",),
    ),
    package="mmrotate",
)
