"""The patches that exist, in the fixed order they are applied (reverted in reverse).

Every module in ``mmcv_patcher.patches`` (``patches/`` in the repository) that exposes a
``PATCH`` is a patch; the order is the module names' order, so adding a patch is adding one
module. Patch modules hold data only, so loading them is cheap.
"""

from __future__ import annotations

import importlib
import os
from mmcv_patcher.model import Patch

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Iterable, Optional, Sequence, Tuple


class UnknownPatch(ValueError):
    """A ``--patch`` id names no patch."""


def all_patches() -> Tuple[Patch, ...]:
    """Every registered patch, ordered by module name."""
    package = importlib.import_module("mmcv_patcher.patches")  # patches/ in the repository
    # A listing, not pkgutil.iter_modules: that imports inspect, which nothing else here needs.
    names = sorted({entry[:-3] for folder in package.__path__ for entry in os.listdir(folder) if entry.endswith(".py") and not entry.startswith("_")})
    return tuple(importlib.import_module(f"{package.__name__}.{name}").PATCH for name in names)


def select(patches: Sequence[Patch], ids: Optional[Iterable[str]], only_file: Optional[str] = None) -> Tuple[Patch, ...]:
    """The patches named by ``ids`` (all when None), kept in registry order.

    ``only_file`` narrows to the patches of one file (``--path`` naming a file).
    Raises :class:`UnknownPatch` for an id that is not registered.
    """
    known = {patch.id for patch in patches}
    wanted = set(ids) if ids else known
    unknown = sorted(wanted - known)
    if unknown:
        raise UnknownPatch(f"unknown patch {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    return tuple(p for p in patches if p.id in wanted and (only_file is None or p.file == only_file))
