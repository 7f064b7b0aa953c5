"""What the patches of mmdet's dense heads share: the releases that run head losses under
autocast, and the ``verify`` case that runs a head's loss."""

from typing import Any, Dict, Tuple

from mmcv_patcher.model import Affected, Case, Tensor

#: mmdet 3.x (upstream never fixed these) and the OneDL fork, whose every release has the
#: statements as released: 2.x forced head losses to fp32 with ``@force_fp32``.
MMDET_3: Dict[str, Tuple[Affected, ...]] = {
    "mmdet": (Affected(introduced="3.0.0", last_affected="3.3.0"),),
    "onedl-mmdetection": (Affected(introduced="3.4.0", last_affected="3.5.1"),),
}

#: The strides of the five feature levels mmdet's dense heads default to.
_STRIDES = (8, 16, 32, 64, 128)


def head_loss(head: str, init: Dict[str, Any], under: str = "", **case: Any) -> Case:
    """``verify``'s case for a dense head of mmdet: ``head(**init)``'s ``loss`` on random
    features (8 channels) of five levels of a 256x256 image holding 4 boxes of 3 classes,
    under autocast and through backward, its losses compared with the fp32 run's; ``under``:
    whose autocast shows the crash, if one device's only (" under CUDA's autocast");
    ``case``: the :class:`Case`'s other fields (``devices``, ``skipped``)."""
    return Case(
        op=head,
        module="mmdet.models.dense_heads",
        method="loss",
        init={"num_classes": 3, "in_channels": 8, "feat_channels": 8, "stacked_convs": 1, "norm_cfg": None, **init},
        args=(
            Tensor("levels", tuple((1, 8, 256 // stride, 256 // stride) for stride in _STRIDES), amp=True),
            Tensor("det-samples", 4, scale=256, classes=3),
        ),
        compare="losses",
        backward=True,
        gave=f"{head}.loss{under}: {{amp}} features of five levels of a 256x256 image holding 4 boxes",
        **case,
    )
