"""A stand-in for torchvision, named so, for ``verify``'s child on the test venv (put first on
its ``PYTHONPATH``): PyPI's torchvision does not load beside the torch the tests use, and
``mmrotate.models`` imports it at import time (for H2RBox-v2's augmentations only, which no
case runs), so the ``verify`` cases of mmrotate's losses could not be set up without it."""

from . import transforms

__all__ = ["transforms"]
