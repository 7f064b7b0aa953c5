"""ddq-aux-bbox-targets-amp-dtype: cast the matched ground-truth boxes to the box targets' dtype in mmdet's ``DDQAuxLoss``.

DDQ DETR's auxiliary loss runs under autocast with the rest of the head (mmdet 3.x forces
no loss to fp32). ``DDQAuxLoss._get_target_single`` builds its box targets with
``torch.zeros_like(bbox_preds)``, in the AMP dtype of the dense queries' boxes, then writes
the matched ground-truth boxes into them; those are fp32, so ``index_put`` fails with the
seed's message, "Index put requires the source and destination dtypes match, got Half
(BFloat16) for the destination and Float for the source". The boxes are now cast to the
targets' dtype, the dtype the targets have whatever the image holds (the branch for an
image without ground truth returns the same zeros); in fp32 training both are fp32, so the
cast returns the tensor itself. In bf16 a target box is rounded as the predicted box it is
compared with already is (8 significant bits: from 1024 to 2048 px a coordinate moves in
8 px steps, at most 4 px off), so the GIoU loss can still reach zero.

Releases: mmdet 3.2.0 (which brought DDQ) to 3.3.0 and onedl-mmdetection 3.4.0 to 3.5.1 have
the statement byte for byte.
"""

from mmcv_patcher.model import Affected, Case, Edit, Example, Patch, Proofs, Step, Tensor, Untouched

#: the dense queries one image gives the loss, and the classes they score
_QUERIES, _CLASSES = 300, 3

PATCH = Patch(
    id="ddq-aux-bbox-targets-amp-dtype",
    summary="mmdet DDQAuxLoss._get_target_single: cast the matched boxes to the box targets' dtype (AMP crash)",
    affected={
        "mmdet": (Affected(introduced="3.2.0", last_affected="3.3.0"),),
        "onedl-mmdetection": (Affected(introduced="3.4.0", last_affected="3.5.1"),),
    },
    file="models/losses/ddq_detr_aux_loss.py",
    function="DDQAuxLoss._get_target_single",
    edits=(
        Edit(
            "bbox_targets[pos_inds, :] = pos_bbox_targets",
            "bbox_targets[pos_inds, :] = pos_bbox_targets.to(bbox_targets.dtype)",
        ),
    ),
    error=(
        "`RuntimeError: Index put requires the source and destination dtypes match, got Half for the destination and Float for the source`"
        " in mmdet's `DDQAuxLoss._get_target_single` (`... got BFloat16 ...` in bf16)"
    ),
    case=Case(
        op="DDQAuxLoss",
        module="mmdet.models.losses",
        init={},
        method="loss",
        args=(
            Tensor("features", (1, _QUERIES, _CLASSES), amp=True),  # scores, as probabilities
            Tensor("boxes", (1, _QUERIES), scale=200, amp=True),
            [Tensor("boxes", 4, scale=200)],
            [Tensor("labels", 4, scale=_CLASSES)],
            [{"img_shape": [320, 320]}],
        ),
        compare="losses",
        backward=True,
        gave=f"DDQAuxLoss.loss: {{amp}} scores and boxes of {_QUERIES} dense queries, an image holding 4 boxes",
    ),
    examples=(
        Example.of(
            """
            class DDQAuxLoss(nn.Module):
                def _get_target_single(self, cls_scores, bbox_preds, gt_bboxes, gt_labels, img_meta, **kwargs):
                    bbox_targets = torch.zeros_like(bbox_preds)
                    if len(pos_inds) > 0:
                        # point-based
                        pos_bbox_targets = sampling_result.pos_gt_bboxes
                        bbox_targets[pos_inds, :] = pos_bbox_targets
            """,
            """
            class DDQAuxLoss(nn.Module):
                def _get_target_single(self, cls_scores, bbox_preds, gt_bboxes, gt_labels, img_meta, **kwargs):
                    bbox_targets = torch.zeros_like(bbox_preds)
                    if len(pos_inds) > 0:
                        # point-based
                        pos_bbox_targets = sampling_result.pos_gt_bboxes
                        bbox_targets[pos_inds, :] = pos_bbox_targets.to(bbox_targets.dtype)
            """,
            why="as released",
        ),
    ),
    untouched=(
        Untouched.of(
            """
            class TOODHead(ATSSHead):
                def _get_targets_single(self, cls_scores, bbox_preds, flat_anchors, valid_flags, gt_instances, img_meta):
                    bbox_targets[pos_inds, :] = pos_bbox_targets
            """,
            why="the same statement in another class's target builder",
        ),
    ),
    proofs=Proofs(
        steps=(
            Step(
                "ddq/ddq-detr-4scale_r50_8xb2-12e_coco.py", "mmdet/models/losses/ddq_detr_aux_loss.py", size="128x128"
            ),
        ),
        upstream=("tests/test_models/test_detectors/test_ddq_detr.py",),
    ),
    package="mmdet",
)
