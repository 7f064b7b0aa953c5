"""autoassign-bce-fp32: run the binary cross-entropies of mmdet's ``AutoAssignHead`` in fp32 with CUDA's autocast off, where it is on.

mmdet 3.x runs every head's loss under autocast (2.x forced it to fp32 with ``@force_fp32``).
``AutoAssignHead.get_pos_loss_single`` and ``get_neg_loss_single`` call
``F.binary_cross_entropy`` on probabilities, and CUDA's autocast refuses that call in either
dtype: "RuntimeError: torch.nn.functional.binary_cross_entropy and torch.nn.BCELoss are
unsafe to autocast". Both calls now run as mmdet's own SimOTA assigner runs its one: with
CUDA's autocast off, on fp32 inputs, giving an fp32 loss; only while CUDA's autocast is on,
so every call that works today (fp32, CPU autocast) is the call as released.

Not run on a GPU here: the tests run AutoAssign's step under CUDA's rules, simulated
(``scripts/cuda_rules.py``), with ``autoassign-neg-weight-amp-dtype`` applied first, as that
step's bf16 crash comes right after.

Releases: mmdet 3.0.0 to 3.3.0 and onedl-mmdetection 3.4.0 to 3.5.1 have the statements
byte for byte; mmdet 2.x has them too, under ``@force_fp32``, where autocast never reaches.
"""

from mmcv_patcher.model import Example, Patch, Proofs, Step, Untouched

from ._bce_fp32 import CUDA_ONLY, REFUSED, UNDER, bce_fp32
from ._mmdet_heads import MMDET_3, head_loss

_CLASS = "AutoAssignHead"

PATCH = Patch(
    id="autoassign-bce-fp32",
    summary="mmdet AutoAssignHead: binary cross-entropy in fp32, CUDA's autocast off (CUDA AMP crash)",
    affected=MMDET_3,
    file="models/dense_heads/autoassign_head.py",
    function=f"{_CLASS}.get_pos_loss_single",
    edits=(
        bce_fp32(
            "pos_loss = F.binary_cross_entropy(reweighted_p_pos, torch.ones_like(reweighted_p_pos), reduction='none')"
        ),
        bce_fp32(
            "neg_loss = logits**2 * F.binary_cross_entropy(logits, torch.zeros_like(logits), reduction='none')",
            function=f"{_CLASS}.get_neg_loss_single",
        ),
    ),
    error=(
        "`RuntimeError: torch.nn.functional.binary_cross_entropy and torch.nn.BCELoss are unsafe to autocast`"
        " in mmdet's `AutoAssignHead.get_pos_loss_single` under CUDA's autocast (fp16 and bf16)"
    ),
    case=head_loss(_CLASS, {}, UNDER, **CUDA_ONLY),
    examples=(
        Example.of(
            """
            class AutoAssignHead:
                def get_pos_loss_single(self, cls_score, objectness, reg_loss, gt_instances, center_prior_weights):
                    pos_loss = F.binary_cross_entropy(
                        reweighted_p_pos,
                        torch.ones_like(reweighted_p_pos),
                        reduction='none')
                    return pos_loss,

                def get_neg_loss_single(self, cls_score, objectness, gt_instances, ious, inside_gt_bbox_mask):
                    p_neg_weight = torch.ones_like(joint_conf)
                    if num_gts > 0:
                        p_neg_weight[foreground_idxs[1],
                                     gt_labels[foreground_idxs[0]]] = 1 - temp_weight
                    logits = (joint_conf * p_neg_weight)
                    neg_loss = (
                        logits**2 * F.binary_cross_entropy(
                            logits, torch.zeros_like(logits), reduction='none'))
                    return neg_loss,
            """,
            """
            class AutoAssignHead:
                def get_pos_loss_single(self, cls_score, objectness, reg_loss, gt_instances, center_prior_weights):
                    pos_loss = (F.binary_cross_entropy if not torch.is_autocast_enabled() else lambda *a, **k: torch.autocast("cuda", enabled=False)(F.binary_cross_entropy)(*(t.float() for t in a), **k))(
                        reweighted_p_pos,
                        torch.ones_like(reweighted_p_pos),
                        reduction='none')
                    return pos_loss,

                def get_neg_loss_single(self, cls_score, objectness, gt_instances, ious, inside_gt_bbox_mask):
                    p_neg_weight = torch.ones_like(joint_conf)
                    if num_gts > 0:
                        p_neg_weight[foreground_idxs[1],
                                     gt_labels[foreground_idxs[0]]] = 1 - temp_weight
                    logits = (joint_conf * p_neg_weight)
                    neg_loss = (
                        logits**2 * (F.binary_cross_entropy if not torch.is_autocast_enabled() else lambda *a, **k: torch.autocast("cuda", enabled=False)(F.binary_cross_entropy)(*(t.float() for t in a), **k))(
                            logits, torch.zeros_like(logits), reduction='none'))
                    return neg_loss,
            """,
            why="as released, each call over several lines, among the head's other losses",
        ),
    ),
    untouched=(
        Untouched.of(
            """
            class AutoAssignHead:
                def get_pos_loss_single(self, cls_score, objectness, reg_loss, gt_instances, center_prior_weights):
                    pos_loss = F.binary_cross_entropy_with_logits(
                        reweighted_p_pos, torch.ones_like(reweighted_p_pos), reduction='none')
            """,
            why="the loss on logits, which CUDA's autocast runs in fp32",
        ),
    ),
    proofs=Proofs(
        steps=(
            Step(
                "autoassign/autoassign_r50-caffe_fpn_1x_coco.py",
                "mmdet/models/dense_heads/autoassign_head.py",
                after=("autoassign-neg-weight-amp-dtype",),
                rules="cuda",
                says=REFUSED,
            ),
        ),
        upstream=("tests/test_models/test_dense_heads/test_autoassign_head.py",),
    ),
    package="mmdet",
)
