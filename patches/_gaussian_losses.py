"""What the patches of mmrotate's Gaussian losses share (a helper, not a patch: the registry
skips modules whose name starts with ``_``).

mmrotate's GWD, KLD and KFIoU losses turn boxes into 2x2 covariance matrices and take their
determinants and inverses, which torch has for no low dtype on any device ("lu_cpu" not
implemented for 'BFloat16'; "linalg.inv: Low precision dtypes not supported. Got Half").
mmrotate 1.x runs its heads' losses under autocast (0.x forced them to fp32 with
``@force_fp32``), and the decoded boxes come in the AMP dtype, so every AMP step of these
losses crashes. Giving them fp32 boxes is not enough: autocast runs the ``bmm`` and ``matmul``
that make and combine the covariances in the low dtype again. So the fixes call the
Gaussians' making and the loss with autocast off on the boxes' device, on fp32 boxes; the
loss comes out in fp32, as CUDA's autocast gives the losses it runs. In fp32 training,
``.float()`` of an fp32 tensor is the tensor itself and autocast was off already: the same
result. ``torch.autocast`` came in torch 1.10; on an older torch the calls are as released.
"""

import textwrap
from typing import Dict, Tuple

from mmcv_patcher.model import Affected, Case, Edit, Example, Patch, Proofs, Step, Tensor, Untouched

#: mmrotate 1.x (the index has no 1.x but these pre-releases) and every onedl-mmrotate
MMROTATE_1: Dict[str, Tuple[Affected, ...]] = {
    "mmrotate": (Affected(introduced="1.0.0rc0", last_affected="1.0.0rc1"),),
    "onedl-mmrotate": (Affected(introduced="1.1.0rc0", last_affected="1.2.1"),),
}


def autocast_off(callee: str, tensor: str) -> str:
    """``callee`` run with autocast off on ``tensor``'s device, where torch has ``torch.autocast``."""
    return (
        f'(torch.autocast({tensor}.device.type, enabled=False)({callee}) if hasattr(torch, "autocast") else {callee})'
    )


def gd_loss_edits(call: str) -> Tuple[Edit, ...]:
    """``GDLoss.forward``'s and ``GDLoss_v1.forward``'s: the boxes turned into Gaussians in
    fp32, and ``call`` (the statement that returns ``self.loss(...)``'s loss) run on them,
    each with autocast off."""
    return (
        Edit("pred = self.preprocess(pred)", f"pred = {autocast_off('self.preprocess', 'pred')}(pred.float())"),
        Edit(
            "target = self.preprocess(target)", f"target = {autocast_off('self.preprocess', 'target')}(target.float())"
        ),
        Edit(call, call.replace("self.loss(", f"{autocast_off('self.loss', 'pred[0]')}(", 1)),
    )


def gd_loss_case(loss: str, loss_type: str) -> Case:
    """``verify``'s case for ``loss`` (``GDLoss``, ``GDLoss_v1``) of ``loss_type``: 64
    predicted rotated boxes in the AMP dtype against 64 fp32 ones, through backward."""
    return Case(
        op=loss,
        module="mmrotate.models.losses",
        init={"loss_type": loss_type},
        args=(Tensor("rotated-boxes", 64, amp=True), Tensor("rotated-boxes", 64)),
        compare="loss",
        backward=True,
        gave=f"{loss}('{loss_type}'): 64 {{amp}} predicted rotated boxes against 64 fp32 ones",
    )


def gd_loss_patch(
    id: str, loss: str, file: str, loss_type: str, config: str, call: str, example: Tuple[str, str]
) -> Patch:
    """The patch ``id`` of ``loss`` (``GDLoss``, ``GDLoss_v1``) in ``models/losses/FILE``:
    ``forward`` turns the boxes into Gaussians and returns ``call``, its ``self.loss(...)`` of
    them, which ``example`` shows as released over its lines and as it must become; its
    ``verify`` case is of ``loss_type``, its step of the mmrotate config ``config``."""
    source = textwrap.dedent(
        f"""\
        class {loss}(nn.Module):
            def forward(self, pred, target, weight=None, avg_factor=None, reduction_override=None, **kwargs):
                {{pred}}
                {{target}}

        """
    )
    released_call, fixed_call = (textwrap.indent(textwrap.dedent(text.lstrip("\n")), " " * 8) for text in example)
    return Patch(
        id=id,
        summary=f"mmrotate {loss}: turn fp32 boxes into Gaussians (fp16 and bf16 crash det and inverse)",
        affected=MMROTATE_1,
        file=f"models/losses/{file}",
        function=f"{loss}.forward",
        edits=gd_loss_edits(call),
        error=(
            "`NotImplementedError: \"lu_cpu\" not implemented for 'BFloat16'`, `RuntimeError: linalg.inv: Low"
            f" precision dtypes not supported. Got Half` in mmrotate's `{loss}` ({loss_type.upper()}) under AMP"
        ),
        case=gd_loss_case(loss, loss_type),
        examples=(
            Example(
                source.format(pred="pred = self.preprocess(pred)", target="target = self.preprocess(target)")
                + released_call,
                source.format(
                    pred=f"pred = {autocast_off('self.preprocess', 'pred')}(pred.float())",
                    target=f"target = {autocast_off('self.preprocess', 'target')}(target.float())",
                )
                + fixed_call,
                why="as released",
            ),
        ),
        untouched=(
            Untouched.of(
                f"""
                class {loss}(nn.Module):
                    def __init__(self, loss_type, representation='xy_wh_r', fun='log1p', tau=0.0, **kwargs):
                        pred = self.preprocess(pred)
                """,
                why="the statement in another method",
            ),
        ),
        proofs=Proofs(
            steps=(Step(f"mmrotate::{config}", f"mmrotate/models/losses/{file}"),),
            upstream=("tests/test_models/test_losses/test_loss.py",),
        ),
        package="mmrotate",
    )
