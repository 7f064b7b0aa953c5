"""mmrotate's rbbox_overlaps and fake_rbbox_overlaps on seeded rotated boxes, 300 against 200:
``run(call, dtype)`` with both sets in the dtype named. Answers the IoUs' dtype, digest and
difference from the same values in fp32, and the copies the call made."""

from __future__ import annotations

from typing import Any, Dict

import torch
from mmrotate.structures.bbox import RotatedBoxes, fake_rbbox_overlaps, rbbox_overlaps

from tests.e2e_ops.prelude import DTYPES, Copies, answer, digest

g = torch.Generator().manual_seed(7)


def rotated(n: int) -> Any:
    centres, sizes = torch.rand(n, 2, generator=g) * 200, torch.rand(n, 2, generator=g) * 60 + 4
    return torch.cat([centres, sizes, (torch.rand(n, 1, generator=g) - 0.5) * 3], 1)


boxes1, boxes2 = rotated(300), rotated(200)
CALLS = {
    "rbbox_overlaps": rbbox_overlaps,
    "fake_rbbox_overlaps": lambda a, b: fake_rbbox_overlaps(RotatedBoxes(a), RotatedBoxes(b)),
}


def run(call: str, dtype: str) -> Dict[str, Any]:
    overlaps = CALLS[call]
    a, b = boxes1.to(DTYPES[dtype]), boxes2.to(DTYPES[dtype])
    Copies.count = 0
    with Copies():
        ious = overlaps(a, b)
    reference = overlaps(a.float(), b.float())
    # IoUs lie in [0, 1]: the difference is absolute
    return {
        "dtypes": [str(ious.dtype)],
        "differences": [float((ious.float() - reference).abs().max())],
        "digests": [digest(ious)],
        "copies": Copies.count,
    }


answer(run)
