"""Which ``mmcv`` package directory, owned by which distribution, at which version.

Never imports mmcv: ``find_spec`` of a top-level name reads no package code, metadata comes
from :mod:`mmcv_patcher.distributions`, and a source checkout's ``version.py`` is parsed, not run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Iterable, List, Mapping, NamedTuple, Optional, Sequence, Tuple

from mmcv_patcher import distributions
from mmcv_patcher.distributions import Distribution
from mmcv_patcher.interpreter import Interpreter, current
from mmcv_patcher.model import MMCV_DISTRIBUTIONS, Patch
from mmcv_patcher.plan import Release


class NotFound(LookupError):
    """No mmcv package where we looked."""


class BadPath(ValueError):
    """``--path`` names nothing we can work on."""


class Target(NamedTuple):
    """An mmcv package directory and what is known about the release that installed it."""

    package_dir: Path
    distribution: Optional[str]
    version: Optional[str]
    #: POSIX path inside the package -> its RECORD hash as written (``sha256=<base64>``)
    record: Mapping[str, str]
    #: things the user should know about how the target was chosen
    notes: Tuple[str, ...] = ()
    #: set when ``--path`` named one file: only that file's patches run
    only_file: Optional[str] = None

    def release(self, patch: Patch) -> Release:
        return Release(self.distribution, self.version, _hex_sha256(self.record.get(patch.file, "")))

    def describe(self) -> str:
        return Release(self.distribution, self.version).describe()


def locate(path: Optional[str], patches: Sequence[Patch], interpreter: Optional[Interpreter] = None) -> Target:
    """The mmcv that ``interpreter`` (default: the running one) imports, or the one ``path``
    points at: a directory containing ``mmcv/`` (site-packages, a source checkout, an
    unpacked sdist), the ``mmcv`` package directory, or a file a patch works on.
    """
    if path is not None:
        package_dir, only_file = _package_from_path(Path(path).absolute(), patches)
        return _describe(package_dir, _distributions([str(package_dir.parent)]), only_file, patches)
    seen = interpreter or current()
    if seen.mmcv_dir is None:
        raise NotFound(seen.mmcv_problem or f"no mmcv is importable by {seen.executable}")
    return _describe(Path(seen.mmcv_dir), _distributions(list(seen.sys_path)), None, patches)


def every_copy(interpreter: Interpreter, patches: Sequence[Patch]) -> List[Tuple[Target, bool]]:
    """Every mmcv package directory on the interpreter's ``sys.path``, each with whether it is
    the one ``import mmcv`` loads (listed first); shadowed copies are easy to forget."""
    directories: List[Path] = []
    if interpreter.mmcv_dir is not None:
        directories.append(Path(interpreter.mmcv_dir))
    for entry in interpreter.sys_path:
        candidate = Path(entry) / "mmcv"
        if (candidate / "__init__.py").is_file() and all(candidate.resolve() != d.resolve() for d in directories):
            directories.append(candidate)
    candidates = _distributions(list(interpreter.sys_path))
    imported = interpreter.mmcv_dir is not None
    return [(_describe(d, candidates, None, patches), imported and i == 0) for i, d in enumerate(directories)]


def _package_from_path(path: Path, patches: Sequence[Patch]) -> Tuple[Path, Optional[str]]:
    if not path.exists():
        raise BadPath(f"--path {path}: no such file or directory")
    if path.is_file():
        for patch in patches:
            parts = Path(patch.file).parts
            package_dir = path.parents[len(parts) - 1]
            if package_dir.joinpath(*parts) == path:
                if not (package_dir / "__init__.py").is_file():
                    raise BadPath(f"--path {path}: {package_dir} is not a package (no __init__.py), so Python never imports it")
                return package_dir, patch.file
        files = ", ".join(sorted({p.file for p in patches}))
        raise BadPath(f"--path {path}: not a file any patch works on ({files} inside the mmcv package)")
    for package_dir in (path / "mmcv", path):
        if package_dir.is_dir() and (package_dir.name == "mmcv" or any((package_dir / p.file).exists() for p in patches)):
            if not (package_dir / "__init__.py").is_file():
                raise BadPath(f"--path {path}: {package_dir} is not a package (no __init__.py), so Python never imports it")
            return package_dir, None
    raise BadPath(f"--path {path}: no mmcv/ in it, and it is not the mmcv package; point it at site-packages, a checkout, or mmcv/")


def _distributions(path: List[str]) -> List[Distribution]:
    """The installed mmcv family found on ``path``."""
    return distributions.find(MMCV_DISTRIBUTIONS, path)


class _Listing(NamedTuple):
    """The part of a distribution's file list that matters here: entries inside ``mmcv/``
    (with RECORD's hash field, when it gives one) and editable-install hooks."""

    #: path -> RECORD's hash field as written ("" when none)
    package_files: Dict[str, str]
    hooks: Tuple[str, ...]


def _listing(dist: Distribution) -> _Listing:
    """Sorts ``dist``'s file list into what :func:`_owns` and the RECORD hashes need."""
    package_files = {}
    hooks = []
    for path, digest in dist.files():
        if path.startswith("mmcv/"):
            package_files[path] = digest
        elif path.endswith(".pth") or path.rsplit("/", 1)[-1].startswith("__editable__"):
            hooks.append(path)
    return _Listing(package_files, tuple(hooks))


def _hex_sha256(digest: str) -> Optional[str]:
    """RECORD's ``sha256=<urlsafe base64>`` as hex; None for any other or no hash."""
    mode, _, value = digest.partition("=")
    if mode != "sha256" or not value:
        return None
    import base64

    return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).hex()


def _owns(dist: Distribution, listing: _Listing, package_dir: Path) -> bool:
    """Whether the distribution's file list is about this very package directory, directly
    or through an editable install's ``.pth`` or ``__editable__`` finder."""
    if "mmcv/__init__.py" in listing.package_files:
        if (dist.root / "mmcv" / "__init__.py").resolve() == (package_dir / "__init__.py").resolve():
            return True
    return any(_hook_mentions(dist.root / hook, package_dir) for hook in listing.hooks)


def _hook_mentions(hook: Path, package_dir: Path) -> bool:
    try:
        text = hook.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    return str(package_dir) in text or str(package_dir.parent) in text


def _describe(package_dir: Path, candidates: Iterable[Distribution], only_file: Optional[str], patches: Sequence[Patch]) -> Target:
    """The target for ``package_dir``: the distribution whose file list owns it, with notes
    whenever that is not clear-cut, so nothing is decided silently."""
    unique = _unique(candidates)
    listings = {dist: _listing(dist) for dist in unique}
    owners = [dist for dist in unique if _owns(dist, listings[dist], package_dir)]
    notes: List[str] = []
    if len(owners) > 1:
        owner, how = _current_owner(owners, listings, package_dir, patches)
        names = ", ".join(f"{dist.name} {dist.version}" for dist in owners)
        notes.append(f"several distributions claim {package_dir}: {names}; {how}, so gating by {owner.name} {owner.version}")
    elif owners:
        owner = owners[0]
    else:
        for dist in unique:
            notes.append(f"{dist.name} {dist.version} is installed, but its metadata ({dist.root}) does not list {package_dir}; using {package_dir / 'version.py'}")
        return Target(package_dir, None, literal_version(package_dir / "version.py"), {}, tuple(notes), only_file)
    record = {path[len("mmcv/"):]: digest for path, digest in listings[owner].package_files.items() if digest}
    return Target(package_dir, owner.name, owner.version, record, tuple(notes), only_file)


def _current_owner(owners: List[Distribution], listings: Dict[Distribution, _Listing], package_dir: Path, patches: Sequence[Patch]) -> Tuple[Distribution, str]:
    """Of several owners, the one whose RECORD hash matches the patch files as they are, or
    as they were before we patched them (the hash our marker remembers)."""
    from mmcv_patcher.plan import remembered_sha256
    from mmcv_patcher.source import UndecodableSource, decode, sha256_hex

    for patch in patches:
        try:
            data = (package_dir / patch.file).read_bytes()
            source = decode(data)
        except (OSError, UndecodableSource):
            continue
        hashes = {sha256_hex(data), remembered_sha256(source, patch)}
        for dist in owners:
            if _hex_sha256(listings[dist].package_files.get(f"mmcv/{patch.file}", "")) in hashes:
                return dist, f"mmcv/{patch.file} there is the one {dist.name} installed"
    return owners[0], "neither's RECORD matches the files there"


def _unique(dists: Iterable[Distribution]) -> List[Distribution]:
    """The same metadata can be reached through two ``sys.path`` entries; keep it once."""
    seen = set()
    unique = []
    for dist in dists:
        key = str(dist.root.resolve()), dist.name
        if key not in seen:
            seen.add(key)
            unique.append(dist)
    return unique


def literal_version(version_file: Path) -> Optional[str]:
    """``__version__`` from a ``version.py`` assigned a string literal; parsed, never run."""
    import ast

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
