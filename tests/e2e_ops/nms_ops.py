"""mmcv's NMS ops on seeded boxes: ``run(name, dtype)`` calls op ``name`` with its AMP-marked
tensors (the scores, and the boxes where the AMP path gives them too) in ``dtype``, then the
same values in fp32. Answers the dets' dtype and digest, and as the difference the share of
boxes kept by one call and not the other (0: the same boxes as fp32)."""

from __future__ import annotations

from typing import Any, Callable, Dict, Tuple

import torch
from mmcv.ops import batched_nms, nms, nms_rotated, soft_nms

from tests.e2e_ops.prelude import DTYPES, Copies, answer, digest

g = torch.Generator().manual_seed(3)


def boxes_of(n: int) -> Any:
    xy = torch.rand(n, 2, generator=g) * 1000
    return torch.cat([xy, xy + torch.rand(n, 2, generator=g) * 100 + 1], 1)


def rotated_of(n: int) -> Any:
    centres = torch.rand(n, 2, generator=g) * 500
    sizes = torch.rand(n, 2, generator=g) * 60 + 4
    return torch.cat([centres, sizes, (torch.rand(n, 1, generator=g) - 0.5) * 3], 1)


b1, s1, i1 = boxes_of(3000), torch.rand(3000, generator=g), torch.randint(0, 5, (3000,), generator=g)
b2, s2, i2 = boxes_of(2000), torch.rand(2000, generator=g), torch.randint(0, 80, (2000,), generator=g)
b3, s3, i3 = boxes_of(12000), torch.rand(12000, generator=g), torch.randint(0, 3, (12000,), generator=g)
r4, s4 = rotated_of(500), torch.rand(500, generator=g)
NMS, SOFT = dict(type="nms", iou_threshold=0.5), dict(type="soft_nms", iou_threshold=0.5, min_score=0.05)

#: each op as AMP calls it, given the function that puts a marked tensor in the AMP dtype
CALLS: Dict[str, Callable[[Callable[[Any], Any]], Tuple[Any, Any]]] = {
    "nms": lambda amp: nms(amp(b1), amp(s1), 0.5),
    "soft_nms": lambda amp: soft_nms(b1, amp(s1), 0.5, min_score=0.05),
    "batched_nms(soft_nms)": lambda amp: batched_nms(b1, amp(s1), i1, dict(SOFT)),
    "batched_nms(80 classes)": lambda amp: batched_nms(amp(b2), amp(s2), i2, dict(NMS)),
    "batched_nms(split)": lambda amp: batched_nms(b3, amp(s3), i3, dict(NMS)),
    "nms_rotated": lambda amp: nms_rotated(amp(r4), amp(s4), 0.3),
}


def run(name: str, dtype: str) -> Dict[str, Any]:
    low = DTYPES[dtype]
    Copies.count = 0
    with Copies():
        dets, keep = CALLS[name](lambda t: t.to(low))
    _, reference = CALLS[name](lambda t: t.to(low).float())  # the same values in fp32
    kept, fp32_kept = set(keep.tolist()), set(reference.tolist())
    return {
        "dtypes": [str(dets.dtype)],
        "differences": [len(kept ^ fp32_kept) / max(1, len(fp32_kept))],
        "digests": [digest(dets), digest(keep)],
        "copies": Copies.count,
    }


answer(run)
