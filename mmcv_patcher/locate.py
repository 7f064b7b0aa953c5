"""Which ``mmcv`` package directory, owned by which distribution, at which version.

Never imports mmcv: ``find_spec`` of a top-level name reads no package code, metadata comes
from :mod:`mmcv_patcher.distributions`, and a source checkout's ``version.py`` is parsed, not run.
"""

from __future__ import annotations

import binascii
import os

from mmcv_patcher import distributions
from mmcv_patcher.distributions import Distribution
from mmcv_patcher.interpreter import Interpreter, current
from mmcv_patcher.model import MMCV_DISTRIBUTIONS, Patch
from mmcv_patcher.plan import Release
from mmcv_patcher.records import NamedTuple

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple


class NotFound(LookupError):
    """No mmcv package where we looked."""


class BadPath(ValueError):
    """``--path`` names nothing we can work on."""


class Target(NamedTuple):
    """An mmcv package directory and what is known about the release that installed it."""

    package_dir: str
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

    def file_of(self, patch: Patch) -> str:
        """Where ``patch``'s file is in this package directory."""
        return _inside(self.package_dir, patch.file)


def _inside(package_dir: str, posix_path: str) -> str:
    return os.path.join(package_dir, *posix_path.split("/"))


def _absolute(path: str) -> str:
    """``path`` made absolute as ``pathlib`` does: "." parts and doubled separators go,
    ".." stays (after a symlink it is not the lexical parent, so only the OS resolves it)."""
    drive, rest = os.path.splitdrive(os.path.join(os.getcwd(), path))
    parts = [part for part in rest.replace(os.altsep or os.sep, os.sep).split(os.sep) if part not in ("", ".")]
    return drive + os.sep + os.sep.join(parts)


def locate(path: Optional[str], patches: Sequence[Patch], interpreter: Optional[Interpreter] = None) -> Target:
    """The mmcv that ``interpreter`` (default: the running one) imports, or the one ``path``
    points at: a directory containing ``mmcv/`` (site-packages, a source checkout, an
    unpacked sdist), the ``mmcv`` package directory, or a file a patch works on.
    """
    if path is not None:
        package_dir, only_file = _package_from_path(_absolute(path), patches)
        return _describe(package_dir, _distributions([os.path.dirname(package_dir)]), only_file, patches)
    seen = interpreter or current()
    if seen.mmcv_dir is None:
        raise NotFound(seen.mmcv_problem or f"no mmcv is importable by {seen.executable}")
    return _describe(seen.mmcv_dir, _distributions(list(seen.sys_path)), None, patches)


def every_copy(interpreter: Interpreter, patches: Sequence[Patch]) -> List[Tuple[Target, bool]]:
    """Every mmcv package directory on the interpreter's ``sys.path``, each with whether it is
    the one ``import mmcv`` loads (listed first); shadowed copies are easy to forget."""
    directories: List[str] = []
    if interpreter.mmcv_dir is not None:
        directories.append(interpreter.mmcv_dir)
    for entry in interpreter.sys_path:
        candidate = os.path.join(entry, "mmcv")
        if os.path.isfile(os.path.join(candidate, "__init__.py")) and all(os.path.realpath(candidate) != os.path.realpath(d) for d in directories):
            directories.append(candidate)
    candidates = _distributions(list(interpreter.sys_path))
    imported = interpreter.mmcv_dir is not None
    return [(_describe(d, candidates, None, patches), imported and i == 0) for i, d in enumerate(directories)]


def _package_from_path(path: str, patches: Sequence[Patch]) -> Tuple[str, Optional[str]]:
    if not os.path.exists(path):
        raise BadPath(f"--path {path}: no such file or directory")
    if os.path.isfile(path):
        for patch in patches:
            inside = _inside("", patch.file)
            package_dir = path[: -len(inside) - 1]
            if path.endswith(os.sep + inside) and package_dir:
                if not os.path.isfile(os.path.join(package_dir, "__init__.py")):
                    raise BadPath(f"--path {path}: {package_dir} is not a package (no __init__.py), so Python never imports it")
                return package_dir, patch.file
        files = ", ".join(sorted({p.file for p in patches}))
        raise BadPath(f"--path {path}: not a file any patch works on ({files} inside the mmcv package)")
    for package_dir in (os.path.join(path, "mmcv"), path):
        if os.path.isdir(package_dir) and (os.path.basename(package_dir) == "mmcv" or any(os.path.exists(_inside(package_dir, p.file)) for p in patches)):
            if not os.path.isfile(os.path.join(package_dir, "__init__.py")):
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
    """RECORD's ``sha256=<urlsafe base64>`` as hex; None for any other, malformed or no hash.

    ``binascii`` rather than ``base64``, which imports ``re`` (see :mod:`mmcv_patcher.records`)."""
    mode, _, value = digest.partition("=")
    if mode != "sha256" or not value:
        return None
    standard = value.replace("-", "+").replace("_", "/") + "=" * (-len(value) % 4)
    try:
        raw = binascii.a2b_base64(standard)
    except (binascii.Error, ValueError):  # ValueError: not ASCII
        return None
    return raw.hex() if len(raw) == 32 else None


def _owns(dist: Distribution, listing: _Listing, package_dir: str) -> bool:
    """Whether the distribution's file list is about this very package directory, directly
    or through an editable install's ``.pth`` or ``__editable__`` finder."""
    if "mmcv/__init__.py" in listing.package_files:
        if os.path.realpath(os.path.join(dist.root, "mmcv", "__init__.py")) == os.path.realpath(os.path.join(package_dir, "__init__.py")):
            return True
    return any(_hook_mentions(_inside(dist.root, hook), package_dir) for hook in listing.hooks)


def _hook_mentions(hook: str, package_dir: str) -> bool:
    try:
        with open(hook, encoding="utf-8", errors="replace") as handle:
            text = handle.read()
    except OSError:
        return False
    return package_dir in text or os.path.dirname(package_dir) in text


def _describe(package_dir: str, candidates: Iterable[Distribution], only_file: Optional[str], patches: Sequence[Patch]) -> Target:
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
            notes.append(f"{dist.name} {dist.version} is installed, but its metadata ({dist.root}) does not list {package_dir}; using {os.path.join(package_dir, 'version.py')}")
        return Target(package_dir, None, literal_version(os.path.join(package_dir, "version.py")), {}, tuple(notes), only_file)
    record = {path[len("mmcv/"):]: digest for path, digest in listings[owner].package_files.items() if digest}
    return Target(package_dir, owner.name, owner.version, record, tuple(notes), only_file)


def _current_owner(owners: List[Distribution], listings: Dict[Distribution, _Listing], package_dir: str, patches: Sequence[Patch]) -> Tuple[Distribution, str]:
    """Of several owners, the one whose RECORD hash matches the patch files as they are, or
    as they were before we patched them (the hash our marker remembers)."""
    from mmcv_patcher.plan import remembered_sha256
    from mmcv_patcher.source import UndecodableSource, decode, sha256_hex

    for patch in patches:
        try:
            with open(_inside(package_dir, patch.file), "rb") as handle:
                data = handle.read()
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
        key = os.path.realpath(dist.root), dist.name
        if key not in seen:
            seen.add(key)
            unique.append(dist)
    return unique


def literal_version(version_file: str) -> Optional[str]:
    """``__version__`` from a ``version.py`` assigned a string literal; parsed, never run."""
    import ast

    try:
        with open(version_file, "rb") as handle:
            tree = ast.parse(handle.read(), version_file)
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
