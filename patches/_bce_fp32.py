"""The fix the patches of mmdet's ``F.binary_cross_entropy`` calls share (a helper, not a
patch: the registry skips modules whose name starts with ``_``).

CUDA's autocast refuses ``binary_cross_entropy`` outright, whatever its inputs' dtypes:
"torch.nn.functional.binary_cross_entropy and torch.nn.BCELoss are unsafe to autocast", and
mmdet 3.x calls it in head losses that run under autocast (2.x forced them to fp32 with
``@force_fp32``). The fix calls it as mmdet's own SimOTA assigner does: with CUDA's autocast
off, on fp32 inputs, so the loss comes out in fp32 as CUDA's autocast gives every loss it
runs. It does so only where CUDA's autocast is on, the calls that crash; every other call
(fp32, CPU autocast) is the very call as released. ``torch.autocast`` came in torch 1.10.
"""

import re
from typing import Any, Dict, Optional

from mmcv_patcher.model import Edit

#: where these patches' ``verify`` cases show the crash, and what they say elsewhere
UNDER = " under CUDA's autocast"
CUDA_ONLY: Dict[str, Any] = {
    "devices": ("cuda",),
    "skipped": "%(device)s autocast runs binary_cross_entropy as released; verify --device %(runs_on)s runs this case",
}

#: what CUDA's autocast says of the call
REFUSED = "binary_cross_entropy and torch.nn.BCELoss are unsafe to autocast"

#: what follows ``F.binary_cross_entropy`` in the fix (a ``(`` goes before it)
_CUDA_AUTOCAST_OFF = (
    " if not torch.is_autocast_enabled() else lambda *a, **k:"
    ' torch.autocast("cuda", enabled=False)(F.binary_cross_entropy)(*(t.float() for t in a), **k))'
)
#: the function named, not ``F.binary_cross_entropy_with_logits``
_NAME = re.compile(r"\bF\.binary_cross_entropy\b")


def bce_fp32(anchor: str, function: Optional[str] = None) -> Edit:
    """The edit of ``anchor``, a statement that names ``F.binary_cross_entropy`` once, to
    call it on tensors (and keywords): the function it names becomes one that runs with
    CUDA's autocast off on fp32 copies of them while CUDA's autocast is on, and is
    ``F.binary_cross_entropy`` otherwise."""
    if len(_NAME.findall(anchor)) != 1:
        raise ValueError(f"{anchor!r} does not name F.binary_cross_entropy once")
    return Edit(anchor, _NAME.sub(f"(F.binary_cross_entropy{_CUDA_AUTOCAST_OFF}", anchor), function=function)
