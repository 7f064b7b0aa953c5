"""A stand-in for torchvision, named so, put first on ``PYTHONPATH`` for ``verify``'s child
on the tests' venv and for ``scripts/upstream_tests.py``'s default venv: PyPI's torchvision
does not load beside the torch the tests use, and ``mmrotate.models`` imports it at import
time (for H2RBox-v2's augmentations only, which nothing here runs), so mmrotate's losses
could not be imported without it."""

from . import transforms

__all__ = ["transforms"]
