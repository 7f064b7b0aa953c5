"""mmcv's box_iou_rotated on seeded rotated boxes, 300 against 200 and 300 aligned pairs:
``run(first, second)`` with each set in the dtype named. Answers both IoUs' dtypes, digests
and differences from the same values in fp32, and the copies the calls made."""

from __future__ import annotations

from typing import Any, Dict

import torch
from mmcv.ops import box_iou_rotated

from tests.e2e_ops.prelude import DTYPES, Copies, answer, digest

g = torch.Generator().manual_seed(5)


def rotated(n: int) -> Any:
    centres, sizes = torch.rand(n, 2, generator=g) * 200, torch.rand(n, 2, generator=g) * 60 + 4
    return torch.cat([centres, sizes, (torch.rand(n, 1, generator=g) - 0.5) * 3], 1)


boxes1, boxes2, pairs = rotated(300), rotated(200), rotated(300)


def run(first: str, second: str) -> Dict[str, Any]:
    a, b, c = boxes1.to(DTYPES[first]), boxes2.to(DTYPES[second]), pairs.to(DTYPES[second])
    Copies.count = 0
    with Copies():
        ious, aligned = box_iou_rotated(a, b), box_iou_rotated(a, c, aligned=True)
    reference = box_iou_rotated(a.float(), b.float()), box_iou_rotated(a.float(), c.float(), aligned=True)
    # IoUs lie in [0, 1]: the difference is absolute
    return {
        "dtypes": [str(ious.dtype), str(aligned.dtype)],
        "differences": [float((ours.float() - theirs).abs().max()) for ours, theirs in zip((ious, aligned), reference)],
        "digests": [digest(ious), digest(aligned)],
        "copies": Copies.count,
    }


answer(run)
