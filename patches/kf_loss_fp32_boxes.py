"""kf-loss-fp32-boxes: give mmrotate's ``KFLoss`` fp32 decoded boxes, whose Gaussians' determinants and inverses torch has in no low dtype.

See ``patches/_gaussian_losses.py``. ``KFLoss.forward`` hands ``kfiou_loss`` the decoded
predicted and target boxes, which it turns into Gaussians and takes determinants and
inverses of: under AMP they come in fp16 or bf16, and the step crashes. The loss now runs
with autocast off on fp32 decoded boxes; the deltas' smooth-L1 term is computed from the
deltas as they come.

Releases: mmrotate 1.0.0rc0 and 1.0.0rc1 and every onedl-mmrotate from 1.1.0rc0 to 1.2.1
have the statement byte for byte; mmrotate 0.x ran its heads' losses under ``@force_fp32``.
"""

from mmcv_patcher.model import Case, Edit, Example, Patch, Proofs, Step, Tensor, Untouched

from ._gaussian_losses import MMROTATE_1, autocast_off

PATCH = Patch(
    id="kf-loss-fp32-boxes",
    summary="mmrotate KFLoss: give kfiou_loss fp32 decoded boxes (fp16 and bf16 crash det and inverse)",
    affected=MMROTATE_1,
    file="models/losses/kf_iou_loss.py",
    function="KFLoss.forward",
    edits=(
        Edit(
            "return kfiou_loss(pred, target, fun=self.fun, weight=weight, avg_factor=avg_factor,"
            " pred_decode=pred_decode, targets_decode=targets_decode, reduction=reduction, **kwargs) * self.loss_weight",
            f"return {autocast_off('kfiou_loss', 'pred')}(pred, target, fun=self.fun, weight=weight,"
            " avg_factor=avg_factor, pred_decode=pred_decode.float(), targets_decode=targets_decode.float(),"
            " reduction=reduction, **kwargs) * self.loss_weight",
        ),
    ),
    error=(
        "`NotImplementedError: \"lu_cpu\" not implemented for 'BFloat16'`, `RuntimeError: linalg.inv: Low precision"
        " dtypes not supported. Got Half` in mmrotate's `kfiou_loss` (KFIoU) under AMP"
    ),
    case=Case(
        op="KFLoss",
        module="mmrotate.models.losses",
        init={},
        args=(
            Tensor("features", (64, 5), amp=True),
            Tensor("features", (64, 5)),
            None,
            None,
            Tensor("rotated-boxes", 64, amp=True),
            Tensor("rotated-boxes", 64),
        ),
        compare="loss",
        backward=True,
        gave="KFLoss: 64 {amp} deltas and decoded rotated boxes against 64 fp32 ones",
    ),
    examples=(
        Example.of(
            """
            class KFLoss(nn.Module):
                def forward(self, pred, target, weight=None, avg_factor=None, pred_decode=None, targets_decode=None, reduction_override=None, **kwargs):
                    return kfiou_loss(
                        pred,
                        target,
                        fun=self.fun,
                        weight=weight,
                        avg_factor=avg_factor,
                        pred_decode=pred_decode,
                        targets_decode=targets_decode,
                        reduction=reduction,
                        **kwargs) * self.loss_weight
            """,
            """
            class KFLoss(nn.Module):
                def forward(self, pred, target, weight=None, avg_factor=None, pred_decode=None, targets_decode=None, reduction_override=None, **kwargs):
                    return (torch.autocast(pred.device.type, enabled=False)(kfiou_loss) if hasattr(torch, "autocast") else kfiou_loss)(
                        pred,
                        target,
                        fun=self.fun,
                        weight=weight,
                        avg_factor=avg_factor,
                        pred_decode=pred_decode.float(),
                        targets_decode=targets_decode.float(),
                        reduction=reduction,
                        **kwargs) * self.loss_weight
            """,
            why="as released",
        ),
    ),
    untouched=(
        Untouched.of(
            """
            def kfiou_loss(pred, target, pred_decode=None, targets_decode=None, fun=None, beta=1.0 / 9.0, eps=1e-6):
                return kfiou_loss(pred, target, fun=self.fun, weight=weight, avg_factor=avg_factor, pred_decode=pred_decode, targets_decode=targets_decode, reduction=reduction, **kwargs) * self.loss_weight
            """,
            why="the statement in another function",
        ),
    ),
    proofs=Proofs(
        steps=(
            Step(
                "mmrotate::kfiou/rotated-retinanet-hbox-le135_r50_fpn_kfiou_1x_dota.py",
                "mmrotate/models/losses/kf_iou_loss.py",
            ),
        ),
        upstream=("tests/test_models/test_losses/test_loss.py",),
    ),
    package="mmrotate",
)
