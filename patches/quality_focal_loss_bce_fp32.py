"""quality-focal-loss-bce-fp32: run the binary cross-entropies of mmdet's quality focal loss of probabilities in fp32 with CUDA's autocast off, where it is on.

mmdet's ``QualityFocalLoss`` with ``activated=True`` (DDQ's classification loss) computes the
loss of probabilities with ``F.binary_cross_entropy`` in ``quality_focal_loss_with_prob``
(targets as labels and scores) and ``quality_focal_loss_tensor_target`` (targets as a
tensor), and mmdet 3.x runs every head's loss under autocast (2.x forced it to fp32 with
``@force_fp32``). CUDA's autocast refuses that call in either dtype: "RuntimeError:
torch.nn.functional.binary_cross_entropy and torch.nn.BCELoss are unsafe to autocast". The
calls now run as mmdet's own SimOTA assigner runs its one: with CUDA's autocast off, on fp32
inputs, giving an fp32 loss, into which the positives' losses are written in fp32 too; only
while CUDA's autocast is on, so every call that works today (fp32, CPU autocast) is the call
as released.

Not run on a GPU here: the tests run DDQ's step under CUDA's rules, simulated
(``scripts/cuda_rules.py``), with the patches of its earlier crashes applied first.

Releases: mmdet 3.0.0 to 3.3.0 and onedl-mmdetection 3.4.0 to 3.5.1 have the statements
byte for byte; in mmdet 2.x head losses ran under ``@force_fp32``, where autocast never
reaches.
"""

from mmcv_patcher.model import Case, Example, Patch, Proofs, Step, Tensor, Untouched

from ._bce_fp32 import CUDA_ONLY, REFUSED, UNDER, bce_fp32
from ._mmdet_heads import MMDET_3

PATCH = Patch(
    id="quality-focal-loss-bce-fp32",
    summary="mmdet quality focal loss of probabilities: BCE in fp32, CUDA's autocast off (CUDA AMP crash)",
    affected=MMDET_3,
    file="models/losses/gfocal_loss.py",
    function="quality_focal_loss_with_prob",
    edits=(
        bce_fp32("loss = F.binary_cross_entropy(pred, zerolabel, reduction='none') * scale_factor.pow(beta)"),
        bce_fp32(
            "loss[pos, pos_label] = F.binary_cross_entropy(pred[pos, pos_label], score[pos], reduction='none')"
            " * scale_factor.abs().pow(beta)"
        ),
        bce_fp32("loss_function = F.binary_cross_entropy", function="quality_focal_loss_tensor_target"),
    ),
    error=(
        "`RuntimeError: torch.nn.functional.binary_cross_entropy and torch.nn.BCELoss are unsafe to autocast`"
        " in mmdet's `quality_focal_loss_with_prob` (DDQ) under CUDA's autocast (fp16 and bf16)"
    ),
    case=Case(
        op="QualityFocalLoss",
        module="mmdet.models.losses",
        init={"use_sigmoid": True, "activated": True},
        args=(Tensor("features", (64, 3), amp=True), [Tensor("labels", 64, scale=4), Tensor("scores", 64)]),
        compare="loss",
        backward=True,
        gave=f"QualityFocalLoss(activated=True){UNDER}: {{amp}} probabilities of 64 priors, 3 classes, labels and scores",
        **CUDA_ONLY,
    ),
    examples=(
        Example.of(
            """
            def quality_focal_loss_tensor_target(pred, target, beta=2.0, activated=False):
                if activated:
                    pred_sigmoid = pred
                    loss_function = F.binary_cross_entropy
                else:
                    pred_sigmoid = pred.sigmoid()
                    loss_function = F.binary_cross_entropy_with_logits


            def quality_focal_loss_with_prob(pred, target, beta=2.0):
                zerolabel = scale_factor.new_zeros(pred.shape)
                loss = F.binary_cross_entropy(
                    pred, zerolabel, reduction='none') * scale_factor.pow(beta)
                scale_factor = score[pos] - pred_sigmoid[pos, pos_label]
                loss[pos, pos_label] = F.binary_cross_entropy(
                    pred[pos, pos_label], score[pos],
                    reduction='none') * scale_factor.abs().pow(beta)
            """,
            """
            def quality_focal_loss_tensor_target(pred, target, beta=2.0, activated=False):
                if activated:
                    pred_sigmoid = pred
                    loss_function = (F.binary_cross_entropy if not torch.is_autocast_enabled() else lambda *a, **k: torch.autocast("cuda", enabled=False)(F.binary_cross_entropy)(*(t.float() for t in a), **k))
                else:
                    pred_sigmoid = pred.sigmoid()
                    loss_function = F.binary_cross_entropy_with_logits


            def quality_focal_loss_with_prob(pred, target, beta=2.0):
                zerolabel = scale_factor.new_zeros(pred.shape)
                loss = (F.binary_cross_entropy if not torch.is_autocast_enabled() else lambda *a, **k: torch.autocast("cuda", enabled=False)(F.binary_cross_entropy)(*(t.float() for t in a), **k))(
                    pred, zerolabel, reduction='none') * scale_factor.pow(beta)
                scale_factor = score[pos] - pred_sigmoid[pos, pos_label]
                loss[pos, pos_label] = (F.binary_cross_entropy if not torch.is_autocast_enabled() else lambda *a, **k: torch.autocast("cuda", enabled=False)(F.binary_cross_entropy)(*(t.float() for t in a), **k))(
                    pred[pos, pos_label], score[pos],
                    reduction='none') * scale_factor.abs().pow(beta)
            """,
            why="as released",
        ),
    ),
    untouched=(
        Untouched.of(
            """
            def quality_focal_loss(pred, target, beta=2.0):
                loss = F.binary_cross_entropy_with_logits(
                    pred, zerolabel, reduction='none') * scale_factor.pow(beta)
            """,
            why="the loss on logits, which CUDA's autocast runs in fp32",
        ),
    ),
    proofs=Proofs(
        steps=(
            Step(
                "ddq/ddq-detr-4scale_r50_8xb2-12e_coco.py",
                "mmdet/models/losses/gfocal_loss.py",
                size="128x128",
                after=(
                    "ms-deform-attn-fp32-kernel",
                    "sigmoid-focal-loss-fp32-kernel",
                    "ddq-aux-bbox-targets-amp-dtype",
                ),
                rules="cuda",
                says=REFUSED,
            ),
        ),
        upstream=(
            "tests/test_models/test_losses/test_loss.py",
            "tests/test_models/test_dense_heads/test_ddq_detr_head.py",
        ),
    ),
    package="mmdet",
)
