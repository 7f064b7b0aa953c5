"""Put on ``PYTHONPATH`` (with the repository) for a ``verify`` child: its CPU autocast becomes
CUDA's rules, simulated (:func:`scripts.cuda_rules.simulated`, fp16 computed as a GPU's
kernels compute it), so a case whose crash only CUDA's autocast makes (a refused
``binary_cross_entropy``) shows it on the CPU. Any other ``torch.autocast`` is torch's own.
Only tests put it there; the tool never does."""

import contextlib
from typing import Any, Iterator, Optional

import torch

from scripts.cuda_rules import simulated

_RELEASED = torch.autocast


def _autocast(device_type: str, dtype: Optional[torch.dtype] = None, enabled: bool = True, **kwargs: Any) -> Any:
    if device_type == "cpu" and enabled and not _active:
        return _simulated(dtype)
    return _RELEASED(device_type, dtype=dtype, enabled=enabled, **kwargs)


_active = False


@contextlib.contextmanager
def _simulated(dtype: Optional[torch.dtype]) -> Iterator[None]:
    """The rules, once: a CPU autocast entered inside them (mmdet's own) changes nothing."""
    global _active
    _active = True
    try:
        with simulated(dtype, fp32_arithmetic=True):
            yield
    finally:
        _active = False


torch.autocast = _autocast
