"""focal-loss-bce-fp32: run the binary cross-entropy of mmdet's ``py_focal_loss_with_prob`` in fp32 with CUDA's autocast off, where it is on.

mmdet's ``FocalLoss`` with ``activated=True`` (TOOD's classification loss) computes the
focal loss of probabilities with ``F.binary_cross_entropy``, and mmdet 3.x runs every head's
loss under autocast (2.x forced it to fp32 with ``@force_fp32``). CUDA's autocast refuses that
call in either dtype: "RuntimeError: torch.nn.functional.binary_cross_entropy and
torch.nn.BCELoss are unsafe to autocast" (upstream's open-mmlab/mmdetection#10203, "AMP in
TOOD"). The call now runs as mmdet's own SimOTA assigner runs its one: with CUDA's autocast
off, on fp32 inputs, giving an fp32 loss; only while CUDA's autocast is on, so every call
that works today (fp32, CPU autocast) is the call as released.

Not run on a GPU here: the tests run TOOD's step under CUDA's rules, simulated
(``scripts/cuda_rules.py``).

Releases: mmdet 3.0.0 to 3.3.0 and onedl-mmdetection 3.4.0 to 3.5.1 have the statement
byte for byte; in mmdet 2.x head losses ran under ``@force_fp32``, where autocast never reaches.
"""

from mmcv_patcher.model import Case, Example, Patch, Proofs, Step, Tensor, Untouched

from ._bce_fp32 import CUDA_ONLY, REFUSED, UNDER, bce_fp32
from ._mmdet_heads import MMDET_3

PATCH = Patch(
    id="focal-loss-bce-fp32",
    summary="mmdet py_focal_loss_with_prob: binary cross-entropy in fp32, CUDA's autocast off (CUDA AMP crash)",
    affected=MMDET_3,
    file="models/losses/focal_loss.py",
    function="py_focal_loss_with_prob",
    edits=(bce_fp32("loss = F.binary_cross_entropy(pred, target, reduction='none') * focal_weight"),),
    error=(
        "`RuntimeError: torch.nn.functional.binary_cross_entropy and torch.nn.BCELoss are unsafe to autocast`"
        " in mmdet's `py_focal_loss_with_prob` (TOOD) under CUDA's autocast (fp16 and bf16)"
    ),
    case=Case(
        op="FocalLoss",
        module="mmdet.models.losses",
        init={"use_sigmoid": True, "activated": True},
        args=(Tensor("features", (64, 3), amp=True), Tensor("labels", 64, scale=3)),
        compare="loss",
        backward=True,
        gave=f"FocalLoss(activated=True){UNDER}: {{amp}} probabilities of 64 priors, 3 classes",
        **CUDA_ONLY,
    ),
    examples=(
        Example.of(
            """
            def py_focal_loss_with_prob(pred, target, weight=None, gamma=2.0, alpha=0.25, reduction='mean', avg_factor=None):
                focal_weight = (alpha * target + (1 - alpha) *
                                (1 - target)) * pt.pow(gamma)
                loss = F.binary_cross_entropy(
                    pred, target, reduction='none') * focal_weight
                return loss
            """,
            """
            def py_focal_loss_with_prob(pred, target, weight=None, gamma=2.0, alpha=0.25, reduction='mean', avg_factor=None):
                focal_weight = (alpha * target + (1 - alpha) *
                                (1 - target)) * pt.pow(gamma)
                loss = (F.binary_cross_entropy if not torch.is_autocast_enabled() else lambda *a, **k: torch.autocast("cuda", enabled=False)(F.binary_cross_entropy)(*(t.float() for t in a), **k))(
                    pred, target, reduction='none') * focal_weight
                return loss
            """,
            why="as released",
        ),
    ),
    untouched=(
        Untouched.of(
            """
            def py_sigmoid_focal_loss(pred, target, weight=None, gamma=2.0, alpha=0.25, reduction='mean', avg_factor=None):
                loss = F.binary_cross_entropy_with_logits(
                    pred, target, reduction='none') * focal_weight
            """,
            why="the loss on logits, which CUDA's autocast runs in fp32",
        ),
    ),
    proofs=Proofs(
        steps=(
            Step(
                "tood/tood_r50_fpn_1x_coco.py",
                "mmdet/models/losses/focal_loss.py",
                after=("deform-conv-fp32-kernel",),  # TOOD's head samples with it first
                rules="cuda",
                says=REFUSED,
            ),
        ),
        upstream=(
            "tests/test_models/test_losses/test_loss.py",
            "tests/test_models/test_dense_heads/test_tood_head.py",
        ),
    ),
    package="mmdet",
)
