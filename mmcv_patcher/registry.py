"""The patches that exist, in the fixed order they are applied (reverted in reverse).

Every module in ``mmcv_patcher.patches`` (``patches/`` in the repository) is a patch that
exposes ``PATCH``; the order is the packages' (mmcv, mmdet, mmrotate), then the module
names', so adding a patch is adding one module. Patch modules hold data only, so loading
them is cheap.
"""

import functools
import importlib
import pkgutil
from typing import Iterable, Optional, Sequence, Tuple

from mmcv_patcher.model import PACKAGES, Patch, listed


@functools.lru_cache(maxsize=None)
def all_patches() -> Tuple[Patch, ...]:
    """Every registered patch, by the package it edits in :data:`PACKAGES` order (mmcv's
    first), then by module name (looked up once per run)."""
    package = importlib.import_module("mmcv_patcher.patches")  # patches/ in the repository
    names = sorted(module.name for module in pkgutil.iter_modules(package.__path__) if not module.name.startswith("_"))
    patches = [importlib.import_module(f"{package.__name__}.{name}").PATCH for name in names]
    order = list(PACKAGES)
    return tuple(sorted(patches, key=lambda patch: order.index(patch.package)))


def select(
    patches: Sequence[Patch], ids: Optional[Iterable[str]], only_file: Optional[str] = None
) -> Tuple[Patch, ...]:
    """The patches named by ``ids`` (all when None; the command line accepts registered
    ids only), kept in registry order. ``only_file`` narrows to the patches of one file
    (``--path`` naming a file)."""
    wanted = set(ids) if ids else {patch.id for patch in patches}
    return tuple(p for p in patches if p.id in wanted and (only_file is None or p.file == only_file))


def ops(patches: Sequence[Patch]) -> Tuple[str, ...]:
    """The ops the patches fix, each once, in registry order."""
    return tuple(dict.fromkeys(patch.op for patch in patches))


def description() -> str:
    """What the tool does, naming every op a registered patch fixes, by package: ``--help``'s
    first line, and (written by ``scripts/document.py``) the package's description."""
    patches = all_patches()
    named = {package: ops([p for p in patches if p.package == package]) for package in PACKAGES}
    fixed = [
        f"mmcv's ops ({', '.join(names)})" if package == "mmcv" else f"{package}'s {listed(names)}"
        for package, names in named.items()
        if names
    ]
    return f"Fix {listed(fixed)} under mixed precision (fp16 and bf16), in place and reversibly."
