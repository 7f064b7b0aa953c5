"""vfnet-iou-targets-amp-dtype: cast the IoU targets to the score targets' dtype in mmdet's ``VFNetHead.loss_by_feat``.

mmdet 3.x runs every head's loss under autocast (2.x forced it to fp32 with ``@force_fp32``).
``VFNetHead.loss_by_feat`` builds its classification targets with
``torch.zeros_like(flatten_cls_scores)``, in the AMP dtype of the scores, then writes the
IoUs of the refined boxes into them; the IoUs come from fp32 boxes, so ``index_put`` fails
with the seed's message, "Index put requires the source and destination dtypes match, got
Half (BFloat16) for the destination and Float for the source". The IoUs are now cast to the
targets' dtype, which is what they are cast to anyway in fp32 training (both fp32 there, so
the cast returns the tensor itself); nothing else changes.

Releases: mmdet 3.0.0 to 3.3.0 and onedl-mmdetection 3.4.0 to 3.5.1 have the statement byte
for byte; mmdet 2.x has it in ``VFNetHead.loss``, under ``@force_fp32``, where it never sees
the AMP dtype.
"""

from mmcv_patcher.model import Edit, Example, Patch, Proofs, Step, Untouched

from ._mmdet_heads import MMDET_3, head_loss

PATCH = Patch(
    id="vfnet-iou-targets-amp-dtype",
    summary="mmdet VFNetHead.loss_by_feat: cast the IoU targets to the score targets' dtype (AMP crash)",
    affected=MMDET_3,
    file="models/dense_heads/vfnet_head.py",
    function="VFNetHead.loss_by_feat",
    edits=(
        Edit(
            "cls_iou_targets[pos_inds, pos_labels] = pos_ious",
            "cls_iou_targets[pos_inds, pos_labels] = pos_ious.to(cls_iou_targets.dtype)",
        ),
    ),
    error=(
        "`RuntimeError: Index put requires the source and destination dtypes match, got Half for the destination and Float for the source`"
        " in mmdet's `VFNetHead.loss_by_feat` (`... got BFloat16 ...` in bf16)"
    ),
    case=head_loss(
        "VFNetHead",
        {
            "train_cfg": {
                "assigner": {"type": "ATSSAssigner", "topk": 9},
                "allowed_border": -1,
                "pos_weight": -1,
                "debug": False,
            }
        },
    ),
    examples=(
        Example.of(
            """
            class VFNetHead:
                def loss_by_feat(self, cls_scores):
                    if self.use_vfl:
                        pos_ious = iou_targets_rf.clone().detach()
                        cls_iou_targets = torch.zeros_like(flatten_cls_scores)
                        cls_iou_targets[pos_inds, pos_labels] = pos_ious
            """,
            """
            class VFNetHead:
                def loss_by_feat(self, cls_scores):
                    if self.use_vfl:
                        pos_ious = iou_targets_rf.clone().detach()
                        cls_iou_targets = torch.zeros_like(flatten_cls_scores)
                        cls_iou_targets[pos_inds, pos_labels] = pos_ious.to(cls_iou_targets.dtype)
            """,
            why="as released",
        ),
    ),
    untouched=(
        Untouched.of(
            """
            class VFNetHead:
                @force_fp32(apply_to=('cls_scores', 'bbox_preds', 'bbox_preds_refine'))
                def loss(self, cls_scores):
                    cls_iou_targets[pos_inds, pos_labels] = pos_ious
            """,
            why="mmdet 2.x's loss, which runs in fp32",
        ),
        Untouched.of(
            """
            class VFNetHead:
                def loss_by_feat(self, cls_scores):
                    cls_iou_targets = torch.zeros_like(flatten_cls_scores)
            """,
            why="the branch without positives: its targets stay zeros",
        ),
    ),
    proofs=Proofs(
        steps=(
            Step(
                "vfnet/vfnet_r50_fpn_1x_coco.py",
                "mmdet/models/dense_heads/vfnet_head.py",
                after=("deform-conv-fp32-kernel",),  # its head's star-shaped deformable convolution
            ),
        ),
        upstream=("tests/test_models/test_dense_heads/test_vfnet_head.py",),
    ),
    package="mmdet",
)
