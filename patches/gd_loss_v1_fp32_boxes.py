"""gd-loss-v1-fp32-boxes: give mmrotate's ``GDLoss_v1`` fp32 boxes, whose Gaussians' determinants and inverses torch has in no low dtype.

See ``patches/_gaussian_losses.py``. ``GDLoss_v1.forward`` turns the predicted and target boxes into
Gaussians (``self.preprocess``) and hands them to its loss (KLD and the others of its
file), which takes determinants and inverses of the covariances: under AMP they come in fp16
or bf16, and the step crashes. Both are now made from fp32 boxes and the loss computed, with
autocast off.

Releases: mmrotate 1.0.0rc0 and 1.0.0rc1 and every onedl-mmrotate from 1.1.0rc0 to 1.2.1
have the statements byte for byte; mmrotate 0.x ran its heads' losses under ``@force_fp32``.
"""

from mmcv_patcher.model import Example, Patch, Proofs, Step, Untouched

from ._gaussian_losses import MMROTATE_1, gd_loss_case, gd_loss_edits

PATCH = Patch(
    id="gd-loss-v1-fp32-boxes",
    summary="mmrotate GDLoss_v1: turn fp32 boxes into Gaussians (fp16 and bf16 crash det and inverse)",
    affected=MMROTATE_1,
    file="models/losses/gaussian_dist_loss_v1.py",
    function="GDLoss_v1.forward",
    edits=gd_loss_edits("return self.loss(pred, target, fun=self.fun, tau=self.tau, **_kwargs) * self.loss_weight"),
    error=(
        "`NotImplementedError: \"lu_cpu\" not implemented for 'BFloat16'`, `RuntimeError: linalg.inv: Low precision"
        " dtypes not supported. Got Half` in mmrotate's `GDLoss_v1` (KLD) under AMP"
    ),
    case=gd_loss_case("GDLoss_v1", "kld"),
    examples=(
        Example.of(
            """
            class GDLoss_v1(nn.Module):
                def forward(self, pred, target, weight=None, avg_factor=None, reduction_override=None, **kwargs):
                    pred = self.preprocess(pred)
                    target = self.preprocess(target)

                    return self.loss(
                        pred, target, fun=self.fun, tau=self.tau, **
                        _kwargs) * self.loss_weight
            """,
            """
            class GDLoss_v1(nn.Module):
                def forward(self, pred, target, weight=None, avg_factor=None, reduction_override=None, **kwargs):
                    pred = (torch.autocast(pred.device.type, enabled=False)(self.preprocess) if hasattr(torch, "autocast") else self.preprocess)(pred.float())
                    target = (torch.autocast(target.device.type, enabled=False)(self.preprocess) if hasattr(torch, "autocast") else self.preprocess)(target.float())

                    return (torch.autocast(pred[0].device.type, enabled=False)(self.loss) if hasattr(torch, "autocast") else self.loss)(
                        pred, target, fun=self.fun, tau=self.tau, **
                        _kwargs) * self.loss_weight
            """,
            why="as released",
        ),
    ),
    untouched=(
        Untouched.of(
            """
            class GDLoss_v1(nn.Module):
                def __init__(self, loss_type, representation='xy_wh_r', fun='log1p', tau=0.0, **kwargs):
                    pred = self.preprocess(pred)
            """,
            why="the statement in another method",
        ),
    ),
    proofs=Proofs(
        steps=(
            Step(
                "mmrotate::kld/rotated-retinanet-rbox-le90_r50_fpn_kld_1x_dota.py",
                "mmrotate/models/losses/gaussian_dist_loss_v1.py",
            ),
        ),
        upstream=("tests/test_models/test_losses/test_loss.py",),
    ),
    package="mmrotate",
)
