"""focal-loss-cost-fp16-log: keep the logarithms of mmdet's ``FocalLossCost`` finite where fp16 rounds a probability to 0 or 1.

Query-based heads (Deformable DETR, Conditional and DAB-DETR, DINO, DDQ, Co-DETR, Sparse
R-CNN, QueryInst, MaskFormer) match queries to objects with mmdet's ``HungarianAssigner``,
whose ``FocalLossCost`` takes ``log(1 - p + eps)`` and ``log(p + eps)`` of the sigmoid of
each query's class (or mask) logits. Under CUDA's fp16 autocast
those logits and their sigmoid are fp16: the sigmoid rounds to exactly 1 above a logit of
8.3 (to 0 below -17.3), the ``eps`` of 1e-12 is lost to fp16's rounding, so the sum is 0 and
its logarithm ``-inf``. Once one query is that sure of an object's class, as a training
model soon is, SciPy's ``linear_sum_assignment`` refuses the costs: "ValueError: matrix
contains invalid numeric entries" (the second crash of open-mmlab/mmdetection#11416). The
sum now goes to fp32, where the ``eps`` keeps it from 0 (``clamp(min=eps)``), and CUDA's
autocast takes the logarithm in fp32 as it does anyway: every sum that is not 0 gives
exactly the logarithm it gave, and one that was 0 gives ``log(eps)``, as fp32 would. Only
under CUDA's autocast and on fp16 sums; fp32, bf16 (whose range keeps the ``eps``) and CPU
autocast run the statements as released.

Not run on a GPU here: the tests run the assigner under CUDA's rules, simulated
(``scripts/cuda_rules.py``), and ``verify`` runs the cost on CUDA only.

Releases: mmdet 3.0.0 to 3.3.0 and onedl-mmdetection 3.4.0 to 3.5.1 have the statements
byte for byte; mmdet 2.x's DETR heads matched under ``@force_fp32``.
"""

from typing import Optional

from mmcv_patcher.model import Case, Edit, Example, Fails, Grid, Patch, Proofs, Tensor, Untouched

from ._mmdet_heads import MMDET_3

_CLASS = "FocalLossCost"
_MASKS = f"{_CLASS}._mask_focal_loss_cost"
#: where the sums go to fp32: an fp16 one, under CUDA's autocast
_GATE = "torch.is_autocast_enabled() and cls_pred.dtype == torch.float16"


def _cost(name: str, term: str, rest: str, function: Optional[str] = None) -> Edit:
    """``name = -(term).log() rest``, its sum taken to fp32 and kept from 0 under CUDA's
    fp16 autocast."""
    return Edit(
        f"{name} = -({term}).log() {rest}",
        f"{name} = -(({term}).float().clamp(min=self.eps) if {_GATE} else {term}).log() {rest}",
        function=function,
    )


_EDITS = tuple(
    edit
    for function in (None, _MASKS)
    for edit in (
        _cost("neg_cost", "1 - cls_pred + self.eps", "* (1 - self.alpha) * cls_pred.pow(self.gamma)", function),
        _cost("pos_cost", "cls_pred + self.eps", "* self.alpha * (1 - cls_pred).pow(self.gamma)", function),
    )
)

_RELEASED, _FIXED = (
    f"""
    class FocalLossCost(BaseMatchCost):
        def _focal_loss_cost(self, cls_pred: Tensor, gt_labels: Tensor) -> Tensor:
            cls_pred = cls_pred.sigmoid()
            neg_cost = -({neg}).log() * (
                1 - self.alpha) * cls_pred.pow(self.gamma)
            pos_cost = -({pos}).log() * self.alpha * (
                1 - cls_pred).pow(self.gamma)

            cls_cost = pos_cost[:, gt_labels] - neg_cost[:, gt_labels]
            return cls_cost * self.weight

        def _mask_focal_loss_cost(self, cls_pred, gt_labels) -> Tensor:
            cls_pred = cls_pred.flatten(1)
            gt_labels = gt_labels.flatten(1).float()
            n = cls_pred.shape[1]
            cls_pred = cls_pred.sigmoid()
            neg_cost = -({neg}).log() * (
                1 - self.alpha) * cls_pred.pow(self.gamma)
            pos_cost = -({pos}).log() * self.alpha * (
                1 - cls_pred).pow(self.gamma)

            cls_cost = torch.einsum('nc,mc->nm', pos_cost, gt_labels) + \\
                torch.einsum('nc,mc->nm', neg_cost, (1 - gt_labels))
            return cls_cost / n * self.weight
    """
    for neg, pos in (
        ("1 - cls_pred + self.eps", "cls_pred + self.eps"),
        (
            f"(1 - cls_pred + self.eps).float().clamp(min=self.eps) if {_GATE} else 1 - cls_pred + self.eps",
            f"(cls_pred + self.eps).float().clamp(min=self.eps) if {_GATE} else cls_pred + self.eps",
        ),
    )
)

#: the confident query's logit in the cases: past 8.3, where fp16's sigmoid is 1
CONFIDENT = "confident"

PATCH = Patch(
    id="focal-loss-cost-fp16-log",
    summary="mmdet FocalLossCost: its logarithms' sums in fp32 where fp16 rounds them to 0 (fp16 matching)",
    affected=MMDET_3,
    file="models/task_modules/assigners/match_cost.py",
    function=f"{_CLASS}._focal_loss_cost",
    edits=_EDITS,
    error=(
        "`ValueError: matrix contains invalid numeric entries` in mmdet's `HungarianAssigner` (Deformable DETR, DINO,"
        " DDQ, Co-DETR, Sparse R-CNN...) under CUDA's fp16 autocast, once a query's class logit passes 8.3"
    ),
    case=Case(
        op=_CLASS,
        module="mmdet.models.task_modules.assigners",
        init={},
        method="_focal_loss_cost",
        # logits in [0, 12): those past 8.3 are fp16 sigmoids of exactly 1
        args=(Tensor("features", (30, 5), amp=True, scale=12.0), Tensor("labels", 4, scale=5)),
        compare="costs",
        gave="FocalLossCost under CUDA's autocast: {amp} class logits of 30 queries in [0, 12), 4 objects' labels",
        devices=("cuda",),
        skipped="%(device)s autocast runs the cost as released; verify --device %(runs_on)s runs this case",
    ),
    examples=(Example.of(_RELEASED, _FIXED, why="as released: both costs of both methods"),),
    untouched=(
        Untouched.of(
            """
            class ClassificationCost(BaseMatchCost):
                def _focal_loss_cost(self, cls_pred, gt_labels):
                    neg_cost = -(1 - cls_pred + self.eps).log() * (1 - self.alpha) * cls_pred.pow(self.gamma)
                    pos_cost = -(cls_pred + self.eps).log() * self.alpha * (1 - cls_pred).pow(self.gamma)
            """,
            why="the statements in another class",
        ),
    ),
    proofs=Proofs(
        grids=(
            Grid(
                "focal_loss_cost",
                works=(
                    *((call, dtype) for call in ("boxes", "masks") for dtype in ("float32", "bfloat16", "float16")),
                    *((f"boxes-{CONFIDENT}", dtype) for dtype in ("float32", "bfloat16")),
                    *((f"masks-{CONFIDENT}", dtype) for dtype in ("float32", "bfloat16")),
                ),
                # once patched: the costs in the dtype the release gives where it works (the
                # masks' einsum runs in fp16 under CUDA's autocast), every query matched as
                # the same logits match in fp32
                fails=tuple(
                    Fails(
                        (f"{call}-{CONFIDENT}", "float16"),
                        "ValueError: matrix contains invalid numeric entries",
                        (f"torch.{dtype}",),
                        0.0,
                    )
                    for call, dtype in (("boxes", "float32"), ("masks", "float16"))
                ),
            ),
        ),
        upstream=(
            "tests/test_models/test_task_modules/test_assigners/test_hungarian_assigner.py",
            "tests/test_models/test_dense_heads/test_ddq_detr_head.py",
        ),
    ),
    package="mmdet",
)
