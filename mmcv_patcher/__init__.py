"""Fix mmcv's ops (batched_nms, box_iou_rotated, carafe, DeformConv2d, DeformRoIPoolPack, ModulatedDeformConv2d, MultiScaleDeformableAttention, nms, nms_rotated, RoIAlign, RoIAlignRotated, rotated_feature_align, sigmoid_focal_loss, soft_nms, softmax_focal_loss), mmdet's AutoAssignHead, DDQAuxLoss, FocalLoss, FocalLossCost, FreeAnchorRetinaHead, QualityFocalLoss, VFNetHead and YOLACT and mmrotate's GDLoss, GDLoss_v1, KFLoss, qbox2rbox and rbbox_overlaps under mixed precision (fp16 and bf16), in place and reversibly."""

import importlib.util
import os
import sys

__version__ = "0.1.0"


def _map_checkout_patches() -> None:
    """Maps ``patches/`` as ``mmcv_patcher.patches`` when running from a source checkout.

    Installed, setup.cfg's ``package_dir`` puts ``patches/`` inside this package. In the
    repository it sits beside it, and ``python -m mmcv_patcher`` run there puts the checkout
    first on ``sys.path`` (even over an installed copy), so map it the same way here.
    """
    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.dirname(here)
    beside = os.path.join(root, "patches", "__init__.py")
    if os.path.isdir(os.path.join(here, "patches")) or not (
        os.path.isfile(beside) and os.path.isfile(os.path.join(root, "setup.cfg"))
    ):
        return
    spec = importlib.util.spec_from_file_location(
        f"{__name__}.patches", beside, submodule_search_locations=[os.path.dirname(beside)]
    )
    if spec is None or spec.loader is None or spec.name in sys.modules:
        return
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)


_map_checkout_patches()
