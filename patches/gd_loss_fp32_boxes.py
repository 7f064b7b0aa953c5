"""gd-loss-fp32-boxes: give mmrotate's ``GDLoss`` fp32 boxes, whose Gaussians' determinants and inverses torch has in no low dtype.

See ``patches/_gaussian_losses.py``. ``GDLoss.forward`` turns the predicted and target boxes into
Gaussians (``self.preprocess``) and hands them to its loss (GWD and the others of its
file), which takes determinants and inverses of the covariances: under AMP they come in fp16
or bf16, and the step crashes. Both are now made from fp32 boxes and the loss computed, with
autocast off.

Releases: mmrotate 1.0.0rc0 and 1.0.0rc1 and every onedl-mmrotate from 1.1.0rc0 to 1.2.1
have the statements byte for byte; mmrotate 0.x ran its heads' losses under ``@force_fp32``.
"""

from ._gaussian_losses import gd_loss_patch

PATCH = gd_loss_patch(
    id="gd-loss-fp32-boxes",
    loss="GDLoss",
    file="gaussian_dist_loss.py",
    loss_type="gwd",
    config="gwd/rotated-retinanet-rbox-le90_r50_fpn_gwd_1x_dota.py",
    call="return self.loss(pred, target, fun=self.fun, tau=self.tau, alpha=self.alpha, weight=weight, avg_factor=avg_factor, reduction=reduction, **_kwargs) * self.loss_weight",
    example=(
        """
                return self.loss(
                    pred,
                    target,
                    fun=self.fun,
                    tau=self.tau,
                    alpha=self.alpha,
                    weight=weight,
                    avg_factor=avg_factor,
                    reduction=reduction,
                    **_kwargs) * self.loss_weight
        """,
        """
                return (torch.autocast(pred[0].device.type, enabled=False)(self.loss) if hasattr(torch, "autocast") else self.loss)(
                    pred,
                    target,
                    fun=self.fun,
                    tau=self.tau,
                    alpha=self.alpha,
                    weight=weight,
                    avg_factor=avg_factor,
                    reduction=reduction,
                    **_kwargs) * self.loss_weight
        """,
    ),
)
