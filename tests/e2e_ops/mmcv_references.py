"""The references for mmcv's kernels that have no CPU build (scripts/mmcv_references.py),
each called through mmcv's own Python op under CUDA's rules in fp32 (``simulated(None)``:
its kernels and the branches that take them), checked against what they can
be checked against: ``run(check)`` answers the largest difference, forward and gradients,
from a CPU kernel of mmcv's or an implementation from first principles; and, as a
difference of 0 or 1, whether the simulation says CUDA anywhere but in its branches, or keeps
a tensor on the CPU anywhere but in the moves it lists."""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Dict, List, Sequence

import torch
import torch.nn.functional as F
from mmcv.ops import carafe, carafe_naive, deform_roi_pool, roi_align, sigmoid_focal_loss, softmax_focal_loss
from mmcv.ops.multi_scale_deform_attn import MultiScaleDeformableAttnFunction, multi_scale_deformable_attn_pytorch

from scripts.cuda_rules import simulated
from tests.e2e_ops.prelude import answer

g = torch.Generator().manual_seed(5)
FEATURES = torch.rand(2, 4, 20, 24, generator=g)
corners = torch.rand(12, 2, generator=g) * 60
ROIS = torch.cat(
    [torch.randint(0, 2, (12, 1), generator=g).float(), corners, corners + torch.rand(12, 2, generator=g) * 40 + 1], 1
)
LOGITS, LABELS = torch.randn(30, 5, generator=g), torch.randint(0, 6, (30,), generator=g)  # 5: background
GAMMA, ALPHA = 2.0, 0.25


def largest(ours: Sequence[torch.Tensor], theirs: Sequence[torch.Tensor]) -> float:
    return max(float((a.float() - b.float()).abs().max()) for a, b in zip(ours, theirs))


def both(call: Callable[..., torch.Tensor], *inputs: torch.Tensor, under: bool) -> List[torch.Tensor]:
    """``call(*inputs)`` and the gradients of the sum of its result times a fixed weighting,
    under CUDA's rules (``under``) or not."""
    leaves = [t.clone().requires_grad_(t.is_floating_point()) for t in inputs]
    with simulated(None) if under else contextlib.nullcontext():
        result = call(*leaves)
        weighting = torch.linspace(-1, 1, result.numel()).view_as(result)
        (result * weighting).sum().backward()
    return [result.detach()] + [t.grad for t in leaves if t.grad is not None]


def roi_pool_without_offset(sampling_ratio: int) -> float:
    """Deformable RoI pooling with no offset is RoIAlign's average (aligned), forward and back."""
    ours = both(lambda f, r: deform_roi_pool(f, r, None, (7, 7), 0.25, sampling_ratio), FEATURES, ROIS, under=True)
    theirs = both(lambda f, r: roi_align(f, r, (7, 7), 0.25, sampling_ratio, "avg", True), FEATURES, ROIS, under=False)
    return largest(ours, theirs)


def roi_pool_moved() -> float:
    """An offset moves each bin by gamma x the RoI's size x it (x first): a whole RoI moved
    by 3 pixels right and 2 down is RoIAlign's of the RoI moved so."""
    scale, gamma = 0.25, 0.1
    size = (ROIS[:, 3:5] - ROIS[:, 1:3]) * scale
    offset = (torch.tensor([3.0, 2.0]) / (gamma * size))[:, :, None, None].expand(-1, -1, 7, 7)
    moved = ROIS + torch.tensor([0.0, 3.0, 2.0, 3.0, 2.0]) / scale
    with simulated(None):
        ours = deform_roi_pool(FEATURES, ROIS, offset.contiguous(), (7, 7), scale, 2, gamma)
    return largest([ours], [roi_align(FEATURES, moved, (7, 7), scale, 2, "avg", True)])


def carafe_unfolded(features: torch.Tensor, masks: torch.Tensor, k: int, groups: int, scale: int) -> torch.Tensor:
    """CARAFE from its definition: each output pixel, the k x k neighbourhood of its source
    pixel (zero outside) weighted by its group's masks."""
    n, c, h, w = features.shape
    columns = F.unfold(features, k, padding=(k - 1) // 2).view(n, groups, c // groups, k * k, h, w)
    columns = F.interpolate(columns.view(n, -1, h, w), scale_factor=scale, mode="nearest")
    columns = columns.view(n, groups, c // groups, k * k, h * scale, w * scale)
    return (columns * masks.view(n, groups, 1, k * k, h * scale, w * scale)).sum(3).view(n, c, h * scale, w * scale)


MASKS = torch.rand(2, 2 * 25, 40, 48, generator=g).softmax(1)


def carafe_against_its_definition(op: Callable[..., torch.Tensor]) -> float:
    ours = both(lambda f, m: op(f, m, 5, 2, 2), FEATURES, MASKS, under=True)
    return largest(ours, both(lambda f, m: carafe_unfolded(f, m, 5, 2, 2), FEATURES, MASKS, under=False))


def focal_bce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The sigmoid focal loss as its paper writes it: alpha_t (1 - p_t)^gamma BCE."""
    positive = F.one_hot(labels, 6)[:, :5].float()
    p = logits.sigmoid()
    p_t = p * positive + (1 - p) * (1 - positive)
    alpha_t = ALPHA * positive + (1 - ALPHA) * (1 - positive)
    return alpha_t * (1 - p_t) ** GAMMA * F.binary_cross_entropy_with_logits(logits, positive, reduction="none")


def focal_softmax(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The softmax focal loss: alpha (1 - p_t)^gamma times the cross entropy."""
    p_t = logits.softmax(1).gather(1, labels[:, None])[:, 0]
    return ALPHA * (1 - p_t) ** GAMMA * F.cross_entropy(logits, labels, reduction="none")


def attention() -> float:
    """mmcv's multi-scale deformable attention through its Function (the CUDA kernel's
    reference) and through its PyTorch path, forward and back."""
    shapes = torch.tensor([[8, 10], [4, 5]])
    starts = torch.tensor([0, 80])
    value = torch.rand(2, 100, 4, 8, generator=g)
    locations = torch.rand(2, 30, 4, 2, 3, 2, generator=g)
    weights = torch.rand(2, 30, 4, 2, 3, generator=g).softmax(-1)
    ours = both(
        lambda v, loc, w: MultiScaleDeformableAttnFunction.apply(v, shapes, starts, loc, w, 64),
        value, locations, weights, under=True,
    )  # fmt: skip
    theirs = both(
        lambda v, loc, w: multi_scale_deformable_attn_pytorch(v, shapes, loc, w), value, locations, weights, under=False
    )
    return largest(ours, theirs)


def branches_only() -> float:
    """1 where the simulation says CUDA to a question asked outside its branches, or leaves
    its answers behind once it has ended; 0 otherwise."""
    with simulated(None):
        elsewhere = torch.zeros(1).is_cuda or torch.cuda.is_available()
    return float(elsewhere or "is_cuda" in torch.Tensor.__dict__ or torch.cuda.is_available())


#: A function named and filed as Co-DETR's that :data:`scripts.cuda_rules.CUDA_MOVES` lists
#: (its own is in a clone of mmdetection), written here: it moves a tensor it makes to CUDA
_MOVER = compile(
    "def get_aux_targets(n):\n    return torch.randperm(n).cuda()\n",
    "/clone/projects/CO-DETR/codetr/co_dino_head.py",
    "exec",
)


def moves_only() -> float:
    """1 where the simulation lets a ``.cuda()`` of its listed moves leave the CPU, lets one
    asked elsewhere pass where torch refuses it, or leaves its stand-in behind; 0 otherwise."""
    namespace: Dict[str, Any] = {"torch": torch}
    exec(_MOVER, namespace)
    with simulated(None):
        kept = namespace["get_aux_targets"](4)
        try:
            torch.zeros(1).cuda()
        except (AssertionError, RuntimeError):  # no CUDA here: "Torch not compiled with CUDA enabled"
            refused = True
        else:
            refused = False
    return float(kept.device.type != "cpu" or not refused or "cuda" in torch.Tensor.__dict__)


CHECKS: Dict[str, Callable[[], float]] = {
    "deform_roi_pool-no-offset-adaptive": lambda: roi_pool_without_offset(0),
    "deform_roi_pool-no-offset-2x2": lambda: roi_pool_without_offset(2),
    "deform_roi_pool-moved": roi_pool_moved,
    "carafe": lambda: carafe_against_its_definition(carafe),
    "carafe_naive": lambda: carafe_against_its_definition(carafe_naive),
    "sigmoid_focal_loss": lambda: largest(
        both(lambda x, t: sigmoid_focal_loss(x, t, GAMMA, ALPHA, None, "none"), LOGITS, LABELS, under=True),
        both(focal_bce, LOGITS, LABELS, under=False),
    ),
    "softmax_focal_loss": lambda: largest(
        # summed: mmcv's backward of it takes a scalar gradient only
        both(lambda x, t: softmax_focal_loss(x, t, GAMMA, ALPHA, None, "sum"), LOGITS, LABELS % 5, under=True),
        both(lambda x, t: focal_softmax(x, t).sum(), LOGITS, LABELS % 5, under=False),
    ),
    "ms_deform_attn": attention,
    "branches-only": branches_only,
    "moves-only": moves_only,
}


def run(check: str) -> Dict[str, Any]:
    return {"difference": CHECKS[check]()}


answer(run)
