"""free-anchor-bce-fp32: run the bag losses of mmdet's ``FreeAnchorRetinaHead`` in fp32 with CUDA's autocast off, where it is on.

mmdet 3.x runs every head's loss under autocast (2.x forced it to fp32 with ``@force_fp32``).
``FreeAnchorRetinaHead.positive_bag_loss`` and ``negative_bag_loss`` call
``F.binary_cross_entropy`` on probabilities, and CUDA's autocast refuses that call in either
dtype: "RuntimeError: torch.nn.functional.binary_cross_entropy and torch.nn.BCELoss are
unsafe to autocast". Both calls now run as mmdet's own SimOTA assigner runs its one: with
CUDA's autocast off, on fp32 inputs, giving an fp32 loss; only while CUDA's autocast is on,
so every call that works today (fp32, CPU autocast) is the call as released.

Not run on a GPU here: the tests run FreeAnchor's step under CUDA's rules, simulated
(``scripts/cuda_rules.py``).

Releases: mmdet 3.0.0 to 3.3.0 and onedl-mmdetection 3.4.0 to 3.5.1 have the statements
byte for byte; mmdet 2.x has them too, under ``@force_fp32``, where autocast never reaches.
"""

from mmcv_patcher.model import Example, Patch, Proofs, Step, Untouched

from ._bce_fp32 import CUDA_ONLY, REFUSED, UNDER, bce_fp32
from ._mmdet_heads import MMDET_3, head_loss

_CLASS = "FreeAnchorRetinaHead"

PATCH = Patch(
    id="free-anchor-bce-fp32",
    summary="mmdet FreeAnchorRetinaHead: bag losses in fp32, CUDA's autocast off (CUDA AMP crash)",
    affected=MMDET_3,
    file="models/dense_heads/free_anchor_retina_head.py",
    function=f"{_CLASS}.positive_bag_loss",
    edits=(
        bce_fp32("return self.alpha * F.binary_cross_entropy(bag_prob, torch.ones_like(bag_prob), reduction='none')"),
        bce_fp32(
            "negative_bag_loss = prob**self.gamma * F.binary_cross_entropy(prob, torch.zeros_like(prob), reduction='none')",
            function=f"{_CLASS}.negative_bag_loss",
        ),
    ),
    error=(
        "`RuntimeError: torch.nn.functional.binary_cross_entropy and torch.nn.BCELoss are unsafe to autocast`"
        " in mmdet's `FreeAnchorRetinaHead.positive_bag_loss` under CUDA's autocast (fp16 and bf16)"
    ),
    case=head_loss(_CLASS, {}, UNDER, **CUDA_ONLY),
    examples=(
        Example.of(
            """
            class FreeAnchorRetinaHead(RetinaHead):
                def positive_bag_loss(self, matched_cls_prob, matched_box_prob):
                    bag_prob = (weight * matched_prob).sum(dim=1)
                    # positive_bag_loss = -self.alpha * log(bag_prob)
                    return self.alpha * F.binary_cross_entropy(
                        bag_prob, torch.ones_like(bag_prob), reduction='none')

                def negative_bag_loss(self, cls_prob, box_prob):
                    prob = prob.clamp(min=EPS, max=1 - EPS)
                    negative_bag_loss = prob**self.gamma * F.binary_cross_entropy(
                        prob, torch.zeros_like(prob), reduction='none')
                    return (1 - self.alpha) * negative_bag_loss
            """,
            """
            class FreeAnchorRetinaHead(RetinaHead):
                def positive_bag_loss(self, matched_cls_prob, matched_box_prob):
                    bag_prob = (weight * matched_prob).sum(dim=1)
                    # positive_bag_loss = -self.alpha * log(bag_prob)
                    return self.alpha * (F.binary_cross_entropy if not torch.is_autocast_enabled() else lambda *a, **k: torch.autocast("cuda", enabled=False)(F.binary_cross_entropy)(*(t.float() for t in a), **k))(
                        bag_prob, torch.ones_like(bag_prob), reduction='none')

                def negative_bag_loss(self, cls_prob, box_prob):
                    prob = prob.clamp(min=EPS, max=1 - EPS)
                    negative_bag_loss = prob**self.gamma * (F.binary_cross_entropy if not torch.is_autocast_enabled() else lambda *a, **k: torch.autocast("cuda", enabled=False)(F.binary_cross_entropy)(*(t.float() for t in a), **k))(
                        prob, torch.zeros_like(prob), reduction='none')
                    return (1 - self.alpha) * negative_bag_loss
            """,
            why="as released",
        ),
    ),
    untouched=(
        Untouched.of(
            """
            class FreeAnchorRetinaHead(RetinaHead):
                def loss_by_feat(self, cls_scores, bbox_preds, batch_gt_instances, batch_img_metas):
                    return self.alpha * F.binary_cross_entropy(
                        bag_prob, torch.ones_like(bag_prob), reduction='none')
            """,
            why="the statement in another method",
        ),
    ),
    proofs=Proofs(
        steps=(
            Step(
                "free_anchor/freeanchor_r50_fpn_1x_coco.py",
                "mmdet/models/dense_heads/free_anchor_retina_head.py",
                rules="cuda",
                says=REFUSED,
            ),
        ),
        upstream=("tests/test_models/test_dense_heads/test_free_anchor_head.py",),
    ),
    package="mmdet",
)
