"""Which ``mmcv`` package directory, owned by which distribution, at which version.

Never imports mmcv: ``find_spec`` of a top-level name reads no package code, metadata comes
from ``importlib.metadata``, and a source checkout's ``version.py`` is parsed, not run.
"""

from __future__ import annotations

import ast
import base64
import importlib.util
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from mmcv_patcher.model import MMCV_DISTRIBUTIONS, Patch
from mmcv_patcher.plan import Release

if sys.version_info >= (3, 8):
    from importlib import metadata
else:  # pragma: no cover - Python 3.7 needs the backport
    import importlib_metadata as metadata


class NotFound(LookupError):
    """No mmcv package where we looked."""


class BadPath(ValueError):
    """``--path`` names nothing we can work on."""


@dataclass(frozen=True)
class Target:
    """An mmcv package directory and what is known about the release that installed it."""

    package_dir: Path
    distribution: Optional[str]
    version: Optional[str]
    #: POSIX path inside the package -> hex sha256 the distribution's RECORD gives for it
    record: Mapping[str, str] = field(default_factory=dict)
    #: things the user should know about how the target was chosen
    notes: Tuple[str, ...] = ()
    #: set when ``--path`` named one file: only that file's patches run
    only_file: Optional[str] = None

    def release(self, patch: Patch) -> Release:
        return Release(self.distribution, self.version, self.record.get(patch.file))


def locate(path: Optional[str], patches: Sequence[Patch]) -> Target:
    """The mmcv of the running interpreter, or the one ``path`` points at.

    ``path`` may be a directory containing ``mmcv/`` (site-packages, a source checkout, an
    unpacked sdist), the ``mmcv`` package directory, or a file a patch works on.
    """
    if path is None:
        spec = importlib.util.find_spec("mmcv")
        if spec is None:
            raise NotFound(f"no mmcv is importable by {sys.executable}")
        locations = list(spec.submodule_search_locations or ())
        if not locations or spec.origin in (None, "namespace"):
            raise NotFound(f"mmcv at {locations or spec.origin} is not a regular package (no __init__.py)")
        package_dir = Path(locations[0]).absolute()
        candidates = _distributions(None)
        only_file = None
    else:
        package_dir, only_file = _package_from_path(Path(path).absolute(), patches)
        candidates = _distributions([str(package_dir.parent)])
    return _describe(package_dir, candidates, only_file)


def _package_from_path(path: Path, patches: Sequence[Patch]) -> Tuple[Path, Optional[str]]:
    if not path.exists():
        raise BadPath(f"--path {path}: no such file or directory")
    if path.is_file():
        for patch in patches:
            parts = Path(patch.file).parts
            package_dir = path.parents[len(parts) - 1]
            if package_dir.joinpath(*parts) == path:
                return package_dir, patch.file
        files = ", ".join(sorted({p.file for p in patches}))
        raise BadPath(f"--path {path}: not a file any patch works on ({files} inside the mmcv package)")
    if (path / "mmcv").is_dir():
        return path / "mmcv", None
    if any((path / patch.file).exists() for patch in patches) or (path.name == "mmcv" and (path / "__init__.py").exists()):
        return path, None
    raise BadPath(f"--path {path}: no mmcv/ in it, and it is not the mmcv package; point it at site-packages, a checkout, or mmcv/")


def _distributions(path: Optional[List[str]]) -> List[Any]:
    """Installed distributions of the mmcv family, on ``path`` (default ``sys.path``)."""
    found = []
    for name in MMCV_DISTRIBUTIONS:
        found.extend(metadata.distributions(name=name) if path is None else metadata.distributions(name=name, path=path))
    return found


def _name(dist: Any) -> str:
    return str(dist.metadata["Name"]).lower().replace("_", "-")


def _owns(dist: Any, package_dir: Path) -> bool:
    """Whether the distribution's file list (RECORD, SOURCES.txt, or an editable hook) is
    about this very package directory."""
    init = (package_dir / "__init__.py").resolve()
    for entry in dist.files or ():
        if entry.as_posix() == "mmcv/__init__.py" and Path(str(dist.locate_file(entry))).resolve() == init:
            return True
    return any(_editable_hook_mentions(dist, entry, package_dir) for entry in dist.files or ())


def _editable_hook_mentions(dist: Any, entry: Any, package_dir: Path) -> bool:
    """An editable install's ``.pth`` or ``__editable__`` finder that points at the tree."""
    name = entry.name
    if not (name.endswith(".pth") or (name.startswith("__editable__") and name.endswith(".py"))):
        return False
    try:
        text = Path(str(dist.locate_file(entry))).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    return str(package_dir) in text or str(package_dir.parent) in text


def _record(dist: Any, package_dir: Path) -> Dict[str, str]:
    """Hex sha256 per file inside the package, from RECORD (SOURCES.txt has no hashes)."""
    hashes = {}
    for entry in dist.files or ():
        posix = entry.as_posix()
        if posix.startswith("mmcv/") and entry.hash is not None and entry.hash.mode == "sha256":
            value = entry.hash.value
            hashes[posix[len("mmcv/"):]] = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).hex()
    return hashes


def _describe(package_dir: Path, candidates: Iterable[Any], only_file: Optional[str]) -> Target:
    candidates = _unique(candidates)
    owners = [dist for dist in candidates if _owns(dist, package_dir)]
    notes: List[str] = []
    if len(owners) > 1:
        names = ", ".join(f"{_name(d)} {d.version}" for d in owners)
        notes.append(f"several distributions claim {package_dir}: {names}; gating by {_name(owners[0])}")
    owner = owners[0] if owners else None
    if owner is None and len(candidates) == 1:
        owner = candidates[0]
        notes.append(f"{_name(owner)} {owner.version} does not list {package_dir}; assuming it installed it")
    elif owner is None and candidates:
        names = ", ".join(f"{_name(d)} {d.version}" for d in candidates)
        notes.append(f"none of {names} lists {package_dir}; using its version.py")
    if owner is not None:
        return Target(package_dir, _name(owner), str(owner.version), _record(owner, package_dir), tuple(notes), only_file)
    return Target(package_dir, None, literal_version(package_dir / "version.py"), {}, tuple(notes), only_file)


def _unique(dists: Iterable[Any]) -> List[Any]:
    """The same metadata can be reached through two ``sys.path`` entries; keep it once."""
    seen = set()
    unique = []
    for dist in dists:
        key = str(Path(str(dist.locate_file(""))).resolve()), _name(dist), str(dist.version)
        if key not in seen:
            seen.add(key)
            unique.append(dist)
    return unique


def literal_version(version_file: Path) -> Optional[str]:
    """``__version__`` from a ``version.py`` assigned a string literal; parsed, never run."""
    try:
        tree = ast.parse(version_file.read_bytes(), str(version_file))
    except (OSError, SyntaxError, ValueError):
        return None
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__version__" for t in node.targets):
            try:
                value = ast.literal_eval(node.value)
            except (ValueError, TypeError, SyntaxError, RecursionError):
                return None
            return value if isinstance(value, str) else None
    return None
