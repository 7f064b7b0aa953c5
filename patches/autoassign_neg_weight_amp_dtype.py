"""autoassign-neg-weight-amp-dtype: cast the negative weights to their buffer's dtype in mmdet's ``AutoAssignHead.get_neg_loss_single``.

mmdet 3.x runs every head's loss under autocast (2.x forced it to fp32 with ``@force_fp32``).
``AutoAssignHead.get_neg_loss_single`` makes its negative weights with
``torch.ones_like(joint_conf)``, in the AMP dtype of the scores, then writes ``1 - temp_weight``
into the foreground places; ``temp_weight`` comes from the fp32 IoUs, so ``index_put`` fails
with the seed's message, "Index put requires the source and destination dtypes match, got
Half (BFloat16) for the destination and Float for the source". ``temp_weight`` is now cast to
the buffer's dtype before it is subtracted from 1, so the weights are made in that dtype; in
fp32 training the cast returns the tensor itself and nothing changes.

Releases: mmdet 3.0.0 to 3.3.0 and onedl-mmdetection 3.4.0 to 3.5.1 have the statement byte
for byte; mmdet 2.x has it too, under ``@force_fp32``, where it never sees the AMP dtype.
"""

from mmcv_patcher.model import Edit, Example, Patch, Proofs, Step, Untouched

from ._mmdet_heads import MMDET_3, head_loss

PATCH = Patch(
    id="autoassign-neg-weight-amp-dtype",
    summary="mmdet AutoAssignHead: cast the negative weights to their buffer's dtype (AMP crash)",
    affected=MMDET_3,
    file="models/dense_heads/autoassign_head.py",
    function="AutoAssignHead.get_neg_loss_single",
    edits=(
        Edit(
            "p_neg_weight[foreground_idxs[1], gt_labels[foreground_idxs[0]]] = 1 - temp_weight",
            "p_neg_weight[foreground_idxs[1], gt_labels[foreground_idxs[0]]] = 1 - temp_weight.to(p_neg_weight.dtype)",
        ),
    ),
    error=(
        "`RuntimeError: Index put requires the source and destination dtypes match, got Half for the destination and Float for the source`"
        " in mmdet's `AutoAssignHead.get_neg_loss_single` (`... got BFloat16 ...` in bf16)"
    ),
    case=head_loss("AutoAssignHead", {}),
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
                    pos_loss = F.binary_cross_entropy(
                        reweighted_p_pos,
                        torch.ones_like(reweighted_p_pos),
                        reduction='none')
                    return pos_loss,

                def get_neg_loss_single(self, cls_score, objectness, gt_instances, ious, inside_gt_bbox_mask):
                    p_neg_weight = torch.ones_like(joint_conf)
                    if num_gts > 0:
                        p_neg_weight[foreground_idxs[1],
                                     gt_labels[foreground_idxs[0]]] = 1 - temp_weight.to(p_neg_weight.dtype)
                    logits = (joint_conf * p_neg_weight)
                    neg_loss = (
                        logits**2 * F.binary_cross_entropy(
                            logits, torch.zeros_like(logits), reduction='none'))
                    return neg_loss,
            """,
            why="as released, over two lines, among the head's other losses",
        ),
    ),
    untouched=(
        Untouched.of(
            """
            class AutoAssignHead:
                def get_pos_loss_single(self, cls_score, objectness, reg_loss, gt_instances, center_prior_weights):
                    p_neg_weight[foreground_idxs[1], gt_labels[foreground_idxs[0]]] = 1 - temp_weight
            """,
            why="the statement in another method",
        ),
    ),
    proofs=Proofs(
        steps=(Step("autoassign/autoassign_r50-caffe_fpn_1x_coco.py", "mmdet/models/dense_heads/autoassign_head.py"),),
        upstream=("tests/test_models/test_dense_heads/test_autoassign_head.py",),
    ),
    package="mmdet",
)
