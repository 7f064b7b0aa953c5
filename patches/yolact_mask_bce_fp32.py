"""yolact-mask-bce-fp32: run the mask loss of mmdet's ``YOLACTProtonet`` in fp32 with CUDA's autocast off, where it is on.

mmdet 3.x runs every head's loss under autocast (2.x forced it to fp32 with ``@force_fp32``).
``YOLACTProtonet.loss_by_feat`` calls ``F.binary_cross_entropy`` on the clamped mask
predictions, and CUDA's autocast refuses that call in either dtype: "RuntimeError:
torch.nn.functional.binary_cross_entropy and torch.nn.BCELoss are unsafe to autocast". The
call now runs as mmdet's own SimOTA assigner runs its one: with CUDA's autocast off, on fp32
inputs, giving an fp32 loss.

Casting the probabilities is not enough. ``YOLACTProtonet.forward`` takes the sigmoid of the
masks' logits, which CUDA's autocast leaves in the low dtype, and there it rounds to exactly 1
wherever a logit is above 8.3 (6.2 in bf16), and to 0 below -17.3 in fp16. At such a
prediction the cross-entropy's gradient is ``p - y`` over 1e-12 (torch's floor of
``p(1 - p)``), which overflows fp16 on its way back to the sigmoid at any loss scale: the
``GradScaler`` would skip every fp16 step. So while training under CUDA's autocast that
sigmoid runs in fp32 too, as the loss that follows it needs.

Both happen only while CUDA's autocast is on, so every call that works today (fp32, CPU
autocast, and prediction under CUDA's autocast) is the call as released.

Not run on a GPU here: the tests run YOLACT's fp16 step under CUDA's rules, simulated
(``scripts/cuda_rules.py``), with its ``GradScaler``. Its ``verify`` case is a whole YOLACT,
small (ResNet-18, 16 channels, 8 prototypes), as the mask loss needs the boxes head's
positive samples.

Releases: mmdet 3.0.0 to 3.3.0 and onedl-mmdetection 3.4.0 to 3.5.1 have the statements
byte for byte; in mmdet 2.x head losses ran under ``@force_fp32``, where autocast never reaches.
"""

from mmcv_patcher.model import Case, Edit, Example, Patch, Proofs, Step, Tensor, Untouched

from ._bce_fp32 import CUDA_ONLY, REFUSED, UNDER, bce_fp32
from ._mmdet_heads import MMDET_3

#: a small YOLACT: ResNet-18, an FPN of 16 channels, 8 prototypes, 3 classes
_YOLACT = {
    "backbone": {"type": "ResNet", "depth": 18, "out_indices": (0, 1, 2, 3), "norm_cfg": {"type": "BN"}},
    "neck": {
        "type": "FPN",
        "in_channels": [64, 128, 256, 512],
        "out_channels": 16,
        "start_level": 1,
        "add_extra_convs": "on_input",
        "num_outs": 5,
        "upsample_cfg": {"mode": "bilinear"},
    },
    "bbox_head": {
        "type": "YOLACTHead",
        "num_classes": 3,
        "in_channels": 16,
        "feat_channels": 16,
        "num_protos": 8,
        "anchor_generator": {
            "type": "AnchorGenerator",
            "octave_base_scale": 3,
            "scales_per_octave": 1,
            "base_sizes": [8, 16, 32, 64, 128],
            "ratios": [0.5, 1.0, 2.0],
            "strides": [8, 16, 32, 64, 128],
        },
        "bbox_coder": {"type": "DeltaXYWHBBoxCoder", "target_means": [0.0] * 4, "target_stds": [0.1, 0.1, 0.2, 0.2]},
        "loss_cls": {"type": "CrossEntropyLoss", "use_sigmoid": False, "reduction": "none"},
        "loss_bbox": {"type": "SmoothL1Loss", "beta": 1.0, "loss_weight": 1.5},
    },
    "mask_head": {
        "type": "YOLACTProtonet",
        "num_classes": 3,
        "in_channels": 16,
        "proto_channels": (16, 16, 16, None, 16, 8),
        "proto_kernel_sizes": (3, 3, 3, -2, 3, 1),
        "num_protos": 8,
        "loss_segm": {"type": "CrossEntropyLoss", "use_sigmoid": True},
    },
    "train_cfg": {
        "assigner": {"type": "MaxIoUAssigner", "pos_iou_thr": 0.5, "neg_iou_thr": 0.4, "min_pos_iou": 0.0},
        "sampler": {"type": "PseudoSampler"},
        "allowed_border": -1,
        "pos_weight": -1,
        "neg_pos_ratio": 3,
        "debug": False,
    },
    "test_cfg": {"nms_pre": 100, "score_thr": 0.05, "mask_thr": 0.5, "iou_thr": 0.5, "top_k": 20, "max_per_img": 20},
}

PATCH = Patch(
    id="yolact-mask-bce-fp32",
    summary="mmdet YOLACTProtonet: mask sigmoid and loss in fp32, CUDA's autocast off (CUDA AMP crash)",
    affected=MMDET_3,
    file="models/dense_heads/yolact_head.py",
    function="YOLACTProtonet.loss_by_feat",
    edits=(
        Edit(
            "mask_preds = torch.sigmoid(mask_preds)",
            "mask_preds = torch.sigmoid(mask_preds if not (self.training and torch.is_autocast_enabled()) else mask_preds.float())",
            function="YOLACTProtonet.forward",
            added=True,
        ),
        bce_fp32(
            "loss = F.binary_cross_entropy(mask_preds, pos_mask_targets, reduction='none') * self.loss_mask_weight"
        ),
    ),
    error=(
        "`RuntimeError: torch.nn.functional.binary_cross_entropy and torch.nn.BCELoss are unsafe to autocast`"
        " in mmdet's `YOLACTProtonet.loss_by_feat` under CUDA's autocast (fp16 and bf16)"
    ),
    case=Case(
        op="YOLACT",
        module="mmdet.models.detectors",
        init=_YOLACT,
        method="loss",
        args=(Tensor("features", (1, 3, 128, 128), amp=True), Tensor("det-samples", 4, scale=128, classes=3)),
        compare="losses",
        backward=True,
        gave="YOLACT.loss (ResNet-18, 16 channels)" + UNDER + ": a {amp} 128x128 image holding 4 boxes and their masks",
        **CUDA_ONLY,
    ),
    examples=(
        Example.of(
            """
            class YOLACTProtonet(BaseMaskHead):
                def forward(self, x: tuple, positive_infos: InstanceList) -> tuple:
                    for idx in range(num_imgs):
                        # Linearly combine the prototypes with the mask coefficients
                        mask_preds = cur_prototypes @ pos_coeffs.t()
                        mask_preds = torch.sigmoid(mask_preds)
                        mask_pred_list.append(mask_preds)
                    return mask_pred_list, segm_preds

                def loss_by_feat(self, mask_preds, segm_preds, batch_gt_instances, batch_img_metas, positive_infos, **kwargs):
                    if num_pos == 0 or pos_mask_targets is None:
                        loss = mask_preds.sum() * 0.
                    else:
                        mask_preds = torch.clamp(mask_preds, 0, 1)
                        loss = F.binary_cross_entropy(
                            mask_preds, pos_mask_targets,
                            reduction='none') * self.loss_mask_weight
            """,
            """
            class YOLACTProtonet(BaseMaskHead):
                def forward(self, x: tuple, positive_infos: InstanceList) -> tuple:
                    for idx in range(num_imgs):
                        # Linearly combine the prototypes with the mask coefficients
                        mask_preds = cur_prototypes @ pos_coeffs.t()
                        mask_preds = torch.sigmoid(mask_preds if not (self.training and torch.is_autocast_enabled()) else mask_preds.float())
                        mask_pred_list.append(mask_preds)
                    return mask_pred_list, segm_preds

                def loss_by_feat(self, mask_preds, segm_preds, batch_gt_instances, batch_img_metas, positive_infos, **kwargs):
                    if num_pos == 0 or pos_mask_targets is None:
                        loss = mask_preds.sum() * 0.
                    else:
                        mask_preds = torch.clamp(mask_preds, 0, 1)
                        loss = (F.binary_cross_entropy if not torch.is_autocast_enabled() else lambda *a, **k: torch.autocast("cuda", enabled=False)(F.binary_cross_entropy)(*(t.float() for t in a), **k))(
                            mask_preds, pos_mask_targets,
                            reduction='none') * self.loss_mask_weight
            """,
            why="as released",
        ),
    ),
    untouched=(
        Untouched.of(
            """
            class YOLACTHead(AnchorHead):
                def loss_by_feat(self, cls_scores, bbox_preds, coeff_preds, batch_gt_instances, batch_img_metas):
                    loss = F.binary_cross_entropy(
                        mask_preds, pos_mask_targets,
                        reduction='none') * self.loss_mask_weight
            """,
            why="the statement in another class",
        ),
    ),
    proofs=Proofs(
        steps=(
            Step(
                "yolact/yolact_r50_1xb8-55e_coco.py",
                "mmdet/models/dense_heads/yolact_head.py",
                dtype="fp16",
                size="128x128",
                rules="cuda",
                says=REFUSED,
            ),
        ),
        upstream=("tests/test_models/test_detectors/test_single_stage_instance_seg.py",),
    ),
    package="mmdet",
)
