"""Which directory of each package a patch edits (``mmcv``, ``mmdet``, ``mmrotate``), owned
by which distribution, at which version.

Never imports them: ``find_spec`` of a top-level name reads no package code, metadata comes
from :mod:`importlib.metadata`, and a source checkout's ``version.py`` is parsed, not run.
"""

import ast
import os
import shlex
import stat
import sys
from pathlib import Path
from typing import Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple

from packaging.version import InvalidVersion, Version

from mmcv_patcher.errors import Error
from mmcv_patcher.interpreter import Interpreter, current
from mmcv_patcher.model import PACKAGES, Patch, Release
from mmcv_patcher.ours import find_ours
from mmcv_patcher.source import UndecodableSource, decode, matches_record, read_source

if sys.version_info >= (3, 10):
    from importlib import metadata
else:  # 3.7 has none; 3.8's and 3.9's are early (importlib_metadata 1.x), the backport is tested
    import importlib_metadata as metadata

#: Editable-install hooks are a few lines; anything bigger is not one.
_MAX_HOOK_BYTES = 1024 * 1024
#: The metadata files importlib.metadata reads, and how big one may be (torch's RECORD,
#: among the largest, is under 2 MB).
_METADATA_FILES = ("METADATA", "PKG-INFO", "RECORD", "installed-files.txt", "SOURCES.txt")
_MAX_METADATA_BYTES = 16 * 2**20


class NotFound(Error, LookupError):
    """No package with patches where we looked."""


class BadPath(Error, ValueError):
    """``--path`` names nothing we can work on."""


class Target(NamedTuple):
    """A package directory and the release that installed it."""

    package_dir: str
    release: Release
    #: things the user should know about how the target was chosen
    notes: Tuple[str, ...] = ()
    #: set when ``--path`` named one file: only that file's patches run
    only_file: Optional[str] = None

    @property
    def package(self) -> str:
        """The top-level package it is (a key of :data:`PACKAGES`)."""
        return self.release.package

    def file_of(self, patch: Patch) -> str:
        """Where ``patch``'s file is in this package directory."""
        return _inside(self.package_dir, patch.file)


class Located(NamedTuple):
    """The packages a run works on: one target per package found, in :data:`PACKAGES`
    order, and for each package with patches that is not there, why (one line each)."""

    targets: Tuple[Target, ...]
    absent: Tuple[str, ...]


def _inside(package_dir: str, posix_path: str) -> str:
    return os.path.join(package_dir, *posix_path.split("/"))


def locate_all(path: Optional[str], patches: Sequence[Patch], interpreter: Optional[Interpreter] = None) -> Located:
    """Every package the patches edit, found as :func:`locate` finds one. ``path`` may name
    a directory holding packages (site-packages, a source checkout: each package there),
    one package's directory, or a file a patch works on. Raises :class:`NotFound` when none
    of the packages is there, and :class:`BadPath` for a ``path`` that names nothing."""
    packages = list(dict.fromkeys(patch.package for patch in patches))
    absent: List[str] = []
    if path is not None:
        absolute = _absolute(path)
        chosen = _packages_at(absolute, packages, patches)
        held = [package for package in packages if os.path.isdir(os.path.join(absolute, package))]
        if chosen is not None:
            packages = [chosen]
        elif held:  # a directory holding packages: each one there
            absent.extend(f"--path {path}: no {package}/ in it" for package in packages if package not in held)
            packages = held
        elif len(packages) > 1 and os.path.isdir(absolute):
            raise BadPath(
                f"--path {path}: no {' or '.join(package + '/' for package in packages)} in it, and it is not one of"
                " those packages; point it at site-packages, a checkout, or a package's directory"
            )
    targets: List[Target] = []
    for package in packages:
        try:
            targets.append(locate(path, [patch for patch in patches if patch.package == package], interpreter))
        except NotFound as error:
            absent.append(str(error))
    if not targets:  # only an interpreter's answer can lack them all: named once
        python = interpreter or current()
        problems = (python.found(package).problem or f"no {package} is importable" for package in packages)
        raise NotFound(f"{python.executable}: {', '.join(problems)}")
    return Located(tuple(targets), tuple(absent))


def _packages_at(absolute: str, packages: Sequence[str], patches: Sequence[Patch]) -> Optional[str]:
    """The one package ``--path`` names when it is a package's directory or a file in one
    (None: a directory that may hold several)."""
    if os.path.isfile(absolute):
        for patch in patches:  # its own package's directory first, then any directory holding its file
            if absolute.endswith(os.sep + _inside(patch.package, patch.file)):
                return patch.package
        for patch in patches:
            if absolute.endswith(os.sep + _inside("", patch.file)):
                return patch.package
        return None
    if os.path.basename(absolute) in packages:
        return os.path.basename(absolute)
    if any(os.path.isdir(os.path.join(absolute, package)) for package in packages):
        return None
    for patch in patches:
        if os.path.exists(_inside(absolute, patch.file)):
            return patch.package
    return None


def _absolute(path: str) -> str:
    """``path`` made absolute, keeping "..": after a symlink it is not the lexical parent, only the OS resolves it."""
    try:
        return str(Path(path).absolute())
    except FileNotFoundError:  # relative to a working directory that was removed
        raise BadPath(
            f"--path {path}: relative to the working directory, which was removed; give an absolute path"
        ) from None


def locate(path: Optional[str], patches: Sequence[Patch], interpreter: Optional[Interpreter] = None) -> Target:
    """The package the patches edit (all of one package) that ``interpreter`` (default: the
    running one) imports, or the one ``path`` points at: a directory containing it
    (site-packages, a source checkout, an unpacked sdist), the package directory, or a file
    a patch works on.
    """
    package = patches[0].package
    if path is not None:
        package_dir, only_file = _package_from_path(_absolute(path), package, patches)
        if os.pardir in Path(package_dir).parts:  # .../mmcv/ops/.. is the package; its metadata is beside it
            package_dir = os.path.realpath(package_dir)
        installer = f"pip install --upgrade --target {shlex.quote(os.path.dirname(package_dir))}"
        candidates = _distributions([os.path.dirname(package_dir)], package)
        return _describe(package_dir, package, candidates, only_file, patches, installer)
    python = interpreter or current()
    found = python.found(package)
    if found.dir is None:
        raise NotFound(f"{python.executable}: {found.problem or f'no {package} is importable'}")
    target = _describe(found.dir, package, _distributions(python.sys_path, package), None, patches, _pip_of(python))
    if found.local_dir is None:
        return target
    started = os.path.dirname(found.local_dir)
    return target._replace(
        notes=target.notes
        + (
            f"{found.local_dir} is another {package}, which only programs started in {started} import"
            f" (python -m or -c there, or a script there); this run works on {found.dir},"
            f" the one {python.executable} imports elsewhere; --path {shlex.quote(started)} works on the other",
        )
    )


def _pip_of(interpreter: Interpreter) -> str:
    """The pip command of ``interpreter``, named by its path (a bare ``pip`` may be another's)."""
    return f"{shlex.quote(interpreter.executable)} -m pip install"


def every_copy(interpreter: Interpreter, patches: Sequence[Patch]) -> List[Tuple[Target, bool]]:
    """Every copy of the patches' package (all of one package) on the interpreter's
    ``sys.path`` (and the one only programs started where the tool was import), each with
    whether it is the one ``import`` loads (listed first); shadowed copies are easy to forget."""
    package = patches[0].package
    found = interpreter.found(package)
    directories: List[str] = []
    if found.dir is not None:
        directories.append(found.dir)
    if found.local_dir is not None:
        directories.append(found.local_dir)
    for entry in interpreter.sys_path:
        candidate = os.path.join(entry, package)
        if os.path.isfile(os.path.join(candidate, "__init__.py")) and all(
            os.path.realpath(candidate) != os.path.realpath(d) for d in directories
        ):
            directories.append(candidate)
    candidates = _distributions(interpreter.sys_path, package)
    imported = found.dir is not None
    return [
        (_describe(d, package, candidates, None, patches, _pip_of(interpreter)), imported and i == 0)
        for i, d in enumerate(directories)
    ]


def _package_from_path(path: str, package: str, patches: Sequence[Patch]) -> Tuple[str, Optional[str]]:
    if not os.path.exists(path):
        raise BadPath(f"--path {path}: no such file or directory")
    if os.path.isfile(path):
        for patch in patches:
            inside = _inside("", patch.file)
            package_dir = path[: -len(inside) - 1]
            if path.endswith(os.sep + inside) and package_dir:
                if not os.path.isfile(os.path.join(package_dir, "__init__.py")):
                    raise BadPath(
                        f"--path {path}: {package_dir} is not a package (no __init__.py), so Python never imports it"
                    )
                return package_dir, patch.file
        files = ", ".join(sorted({p.file for p in patches}))
        raise BadPath(f"--path {path}: not a file the chosen patches work on ({files} inside the {package} package)")
    for package_dir in (os.path.join(path, package), path):
        if os.path.isdir(package_dir) and (
            os.path.basename(package_dir) == package
            or any(os.path.exists(_inside(package_dir, p.file)) for p in patches)
        ):
            if not os.path.isfile(os.path.join(package_dir, "__init__.py")):
                raise BadPath(
                    f"--path {path}: {package_dir} is not a package (no __init__.py), so Python never imports it"
                )
            return package_dir, None
    raise BadPath(
        f"--path {path}: no {package}/ in it, and it is not the {package} package; point it at site-packages, a checkout, or {package}/"
    )


class Installed(NamedTuple):
    """One installed distribution of a package (one of its :data:`PACKAGES`), as
    :mod:`importlib.metadata` reads it: the part of its file list that matters here."""

    name: str
    version: Optional[str]
    #: the directory its file list is relative to (``locate_file("")``)
    root: str
    #: POSIX paths inside the package (``mmcv/...``) -> RECORD's hash field as written ("" when none)
    package_files: Mapping[str, str]
    #: editable-install hooks it installed (``.pth`` files, ``__editable__`` finders)
    hooks: Tuple[str, ...]
    #: where its metadata is (the ``.dist-info`` or ``.egg-info``)
    metadata: str


class Candidates(NamedTuple):
    """The installed distributions of a package on a path, and what was skipped, for the target's notes."""

    found: List[Installed]
    skipped: Tuple[str, ...]


def _distributions(path: Sequence[str], package: str) -> Candidates:
    """The installed distributions of ``package`` on ``path``, by name as listed, then by path entry; the
    same metadata reached through two path entries counts once. Metadata that is not a
    regular file of sane size is skipped (and said so) before importlib.metadata reads it."""
    found: Dict[Tuple[str, str, Optional[str]], Installed] = {}
    skipped = []
    for name in PACKAGES[package]:
        for dist in metadata.distributions(name=name, path=list(path)):
            problem = _metadata_problem(getattr(dist, "_path", None))
            if problem is not None:
                skipped.append(problem)
                continue
            root = str(dist.locate_file(""))
            version = dist.version
            key = (os.path.realpath(root), name, version)
            if key in found:
                continue
            package_files = {}
            hooks = []
            for entry in _files(dist) or ():
                posix = "/".join(entry.parts)
                if posix.startswith(f"{package}/"):
                    package_files[posix] = f"{entry.hash.mode}={entry.hash.value}" if entry.hash else ""
                elif posix.endswith(".pth") or entry.parts[-1].startswith("__editable__"):
                    hook = str(entry.locate())
                    problem = _hook_problem(hook)
                    if problem is None:
                        hooks.append(hook)
                    elif problem:
                        skipped.append(f"ignored the editable-install hook {hook}: {problem}")
            found[key] = Installed(name, version, root, package_files, tuple(hooks), str(getattr(dist, "_path", root)))
    return Candidates(list(found.values()), tuple(skipped))


def _hook_problem(hook: str) -> Optional[str]:
    """Why an editable-install hook must not be read ("" when it is simply not there), or None."""
    try:
        mode = os.stat(hook).st_mode
    except OSError:
        return ""
    return None if stat.S_ISREG(mode) else "not a regular file"


def _files(dist: metadata.Distribution) -> Optional[List[metadata.PackagePath]]:
    """The distribution's file list. Before 3.12 the stdlib lists an ``.egg-info``'s
    SOURCES.txt (paths in the source tree) even when pip wrote installed-files.txt beside it
    (old pip's ``setup.py install``); the backport reads that one, as 3.12 does. Only those
    installs load it: it takes longer to import than the rest of ``status`` spends on metadata."""
    info = getattr(dist, "_path", None)
    if (
        sys.version_info < (3, 12)
        and info is not None
        and dist.read_text("RECORD") is None
        and dist.read_text("installed-files.txt") is not None
    ):
        import importlib_metadata

        files: Optional[List[metadata.PackagePath]] = importlib_metadata.Distribution.at(info).files
        return files
    return dist.files


def _metadata_problem(info: object) -> Optional[str]:
    """Why the metadata at ``info`` (a ``PathDistribution``'s directory, or the file of an
    old distutils install) must not be read, or None. importlib.metadata reads whole files
    and would block on a FIFO or read a device forever; it exposes no size check, so the
    files it reads are checked here first, through the path it keeps (``_path``)."""
    if not isinstance(info, os.PathLike):
        return None
    place = str(os.fspath(info))
    files = [place] if not os.path.isdir(place) else [os.path.join(place, name) for name in _METADATA_FILES]
    for file in files:
        try:
            found = os.stat(file)
        except OSError:
            continue
        if not stat.S_ISREG(found.st_mode):
            return f"ignored the metadata {file}: not a regular file"
        if found.st_size > _MAX_METADATA_BYTES:
            return f"ignored the metadata {file}: {found.st_size // 2**20} MB, far larger than any real one"
    return None


def _owns(dist: Installed, package_dir: str, package: str) -> bool:
    """Whether the distribution's file list is about this very package directory, directly
    or through an editable install's ``.pth`` or ``__editable__`` finder."""
    if f"{package}/__init__.py" in dist.package_files:
        if os.path.realpath(os.path.join(dist.root, package, "__init__.py")) == os.path.realpath(
            os.path.join(package_dir, "__init__.py")
        ):
            return True
    return any(_hook_names(hook, package_dir, package) for hook in dist.hooks)


def _hook_names(hook: str, package_dir: str, package: str) -> bool:
    """Whether an editable-install hook puts ``package_dir`` on the path: a ``.pth`` line
    naming the directory it is in, or the ``package`` entry of an ``__editable__`` finder's
    ``MAPPING`` (a dict from top-level names to their directories) naming it. Paths are
    compared whole, never as substrings (``/x/src2`` does not name ``/x/src``)."""
    try:
        text = read_source(hook, _MAX_HOOK_BYTES).decode("utf-8", "replace")
    except (OSError, UndecodableSource):
        return False
    base = os.path.dirname(hook)
    if hook.endswith(".pth"):
        lines = [line.strip() for line in text.splitlines()]
        named = [line for line in lines if line and not line.startswith(("#", "import ", "import\t"))]
        return os.path.realpath(os.path.dirname(package_dir)) in {
            os.path.realpath(os.path.join(base, line)) for line in named
        }
    mapped = _finder_mapping(text).get(package)
    return mapped is not None and os.path.realpath(os.path.join(base, mapped)) == os.path.realpath(package_dir)


def _finder_mapping(text: str) -> Dict[str, str]:
    """The ``MAPPING`` a setuptools ``__editable__`` finder assigns at module level (plain or
    annotated), as a dict literal; empty when there is none."""
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError):
        return {}
    for node in tree.body:
        value: Optional[ast.expr] = None
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "MAPPING" for t in node.targets):
            value = node.value
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.target.id == "MAPPING":
            value = node.value
        if value is None:
            continue
        try:
            mapping = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            return {}
        if isinstance(mapping, dict):
            return {name: path for name, path in mapping.items() if isinstance(name, str) and isinstance(path, str)}
        return {}
    return {}


def _describe(
    package_dir: str,
    package: str,
    candidates: Candidates,
    only_file: Optional[str],
    patches: Sequence[Patch],
    installer: str,
) -> Target:
    """The target for ``package_dir``: the distribution whose file list owns it, with notes
    whenever that is not clear-cut, so nothing is decided silently. ``installer`` is the pip
    command that installs where the package is: the interpreter's own pip, or ``--target``
    the directory that holds it (for ``--path``)."""
    owners = [dist for dist in candidates.found if _owns(dist, package_dir, package)]
    notes: List[str] = list(candidates.skipped)
    if len(owners) > 1:
        owner, how = _current_owner(owners, package_dir, package, patches)
        names = ", ".join(f"{dist.name} {dist.version}" for dist in owners)
        stale = ", ".join(f"{dist.name} {dist.version}" for dist in owners if dist is not owner)
        notes.append(
            f"several distributions claim {package_dir}: {names}; {how}, so gating by {owner.name} {owner.version} ({stale}: left-over metadata?)"
        )
    elif owners:
        owner = owners[0]
    else:
        for dist in candidates.found:
            notes.append(
                f"{dist.name} {dist.version} is installed, but its metadata ({dist.root}) does not list {package_dir}; using {os.path.join(package_dir, 'version.py')}"
            )
        return Target(
            package_dir,
            Release(None, literal_version(os.path.join(package_dir, "version.py")), {}, installer, package),
            tuple(notes),
            only_file,
        )
    record = {path[len(package) + 1 :]: digest for path, digest in owner.package_files.items() if digest}
    if owner.version is not None and not _valid(owner.version):
        notes.append(f"invalid version {owner.version!r} in {owner.metadata}: no patch's known releases can include it")
    return Target(package_dir, Release(owner.name, owner.version, record, installer, package), tuple(notes), only_file)


def _valid(version: str) -> bool:
    try:
        Version(version)
    except InvalidVersion:
        return False
    return True


def _current_owner(
    owners: List[Installed], package_dir: str, package: str, patches: Sequence[Patch]
) -> Tuple[Installed, str]:
    """Of several owners (two releases' metadata after ``pip install --target --upgrade``,
    or two distributions over one tree), the one that installed what is there now: the one
    whose RECORD alone matches a patch file as it is, or as it was before we patched it (our
    edits taken out), or else ``version.py``; failing that, the one whose version
    ``version.py`` names. Returns it and how it was chosen."""
    for file in [patch.file for patch in patches] + ["version.py"]:
        try:
            data = read_source(_inside(package_dir, file))
            source = decode(data)
        except (OSError, UndecodableSource):
            continue
        versions = [data]  # the file as it is, and as it was before we patched it
        ours = find_ours(source, [patch for patch in patches if patch.file == file])
        if ours is not None and ours.exact:
            versions.append(source.encode(ours.original))
        matching = [
            dist
            for dist in owners
            if any(matches_record(dist.package_files.get(f"{package}/{file}", ""), each) for each in versions)
        ]
        if len(matching) == 1:
            return matching[0], f"{package}/{file} there is the one {matching[0].name} {matching[0].version} installed"
    version = literal_version(os.path.join(package_dir, "version.py"))
    named = [dist for dist in owners if dist.version == version]
    if len(named) == 1:
        return named[0], f"{package}/version.py there says {version}"
    return owners[0], "no RECORD tells which installed the files there"


def literal_version(version_file: str) -> Optional[str]:
    """``__version__`` from a ``version.py`` assigned a string literal; parsed, never run."""
    try:
        tree = ast.parse(read_source(version_file), version_file)
    except (OSError, SyntaxError, ValueError):  # UndecodableSource is a ValueError
        return None
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__version__" for t in node.targets
        ):
            try:
                value = ast.literal_eval(node.value)
            except (ValueError, TypeError, SyntaxError, RecursionError):
                return None
            return value if isinstance(value, str) else None
    return None
