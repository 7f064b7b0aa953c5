"""Patch the installed mmcv in place so ``batched_nms`` survives mixed precision."""

__version__ = "0.1.0"
