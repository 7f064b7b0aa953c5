"""qbox2rbox-fp32-points: give OpenCV fp32 points in mmrotate's ``qbox2rbox``.

``qbox2rbox`` turns quadrilateral boxes into rotated ones with ``cv2.minAreaRect``, on the
boxes as a NumPy array. Under AMP the boxes come in the AMP dtype (Oriented R-CNN's proposals,
decoded from fp16 or bf16 deltas): NumPy has no bfloat16 ("TypeError: Got unsupported
ScalarType BFloat16"), and OpenCV takes no float16 ("cv2.error: ... (depth == CV_32F ||
depth == CV_32S) in function 'convexHull'"). The points now go to OpenCV as fp32; the rotated
boxes are still made with ``boxes.new_tensor``, so they come back in the boxes' own dtype, and
fp32 boxes see no change (``.float()`` of an fp32 tensor is the tensor itself). It breaks
mmrotate 1.x's own AMP config, ``oriented_rcnn/oriented-rcnn-le90_r50_fpn_amp-1x_dota.py``.

Releases: mmrotate 1.0.0rc0 and 1.0.0rc1 (the index has no 1.x but these pre-releases) and
every onedl-mmrotate from 1.1.0rc0 to 1.2.1 have the statement byte for byte; mmrotate 0.x
has no ``structures`` package.
"""

from mmcv_patcher.model import Affected, Case, Edit, Example, Patch, Proofs, Step, Tensor, Untouched

PATCH = Patch(
    id="qbox2rbox-fp32-points",
    summary="mmrotate qbox2rbox: give cv2.minAreaRect fp32 points (fp16 and bf16 boxes crash it)",
    affected={
        "mmrotate": (Affected(introduced="1.0.0rc0", last_affected="1.0.0rc1"),),
        "onedl-mmrotate": (Affected(introduced="1.1.0rc0", last_affected="1.2.1"),),
    },
    file="structures/bbox/box_converters.py",
    function="qbox2rbox",
    edits=(
        Edit(
            "points = boxes.cpu().numpy().reshape(-1, 4, 2)",
            "points = boxes.cpu().float().numpy().reshape(-1, 4, 2)",
        ),
    ),
    error=(
        "`TypeError: Got unsupported ScalarType BFloat16`; fp16: `cv2.error: ... (-215:Assertion failed) ..."
        " in function 'convexHull'` (Oriented R-CNN's proposals, mmrotate's own AMP config)"
    ),
    case=Case(
        op="qbox2rbox",
        module="mmrotate.structures.bbox",
        args=(Tensor("features", (200, 8), amp=True),),
        compare="values",
        gave="qbox2rbox: 200 {amp} quadrilateral boxes",
    ),
    examples=(
        Example.of(
            """
            def qbox2rbox(boxes: Tensor) -> Tensor:
                original_shape = boxes.shape[:-1]
                points = boxes.cpu().numpy().reshape(-1, 4, 2)
                rboxes = []
            """,
            """
            def qbox2rbox(boxes: Tensor) -> Tensor:
                original_shape = boxes.shape[:-1]
                points = boxes.cpu().float().numpy().reshape(-1, 4, 2)
                rboxes = []
            """,
            why="as released",
        ),
    ),
    untouched=(
        Untouched.of(
            """
            def qbox2hbox(boxes: Tensor) -> Tensor:
                points = boxes.cpu().numpy().reshape(-1, 4, 2)
            """,
            why="the statement in another converter",
        ),
    ),
    proofs=Proofs(
        steps=(
            Step(
                "mmrotate::oriented_rcnn/oriented-rcnn-le90_r50_fpn_amp-1x_dota.py",
                "mmrotate/structures/bbox/box_converters.py",
                # the mmcv ops its RPN and rotated RoI head call, after the proposals
                after=(
                    "nms-fp32-kernel",
                    "nms-rotated-fp32-kernel",
                    "roi-align-rotated-fp32-kernel",
                    "box-iou-rotated-fp32-kernel",
                ),
            ),
        ),
        upstream=("tests/test_structures/test_bbox/test_box_converters.py",),
    ),
    package="mmrotate",
)
