"""The only code that changes files: atomic replacement, bytecode refresh, and the lock.

Modelled on pypa/installer's destinations: each function states what it guarantees.
"""

from __future__ import annotations

import contextlib
import os
import py_compile
import stat
import sys
import tempfile
from pathlib import Path
from typing import Iterator

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows has no flock; runs there are not serialised
    fcntl = None  # type: ignore[assignment]

_TEMP_SUFFIX = ".mmcv-patcher-tmp"


@contextlib.contextmanager
def locked(directory: Path) -> Iterator[bool]:
    """Holds an exclusive ``flock`` on ``directory`` itself, so no lock file is ever left.

    Yields whether another process held it first and this one had to wait.
    """
    if fcntl is None:  # pragma: no cover
        yield False
        return
    fd = os.open(str(directory), os.O_RDONLY)
    try:
        waited = False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            waited = True
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield waited
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def replace_file(path: Path, data: bytes) -> None:
    """Replaces ``path`` with ``data`` atomically: readers see the old or the new file, never
    a mix. Keeps the mode (and owner, where permitted); leaves no temporary file behind.
    """
    before = os.stat(str(path))
    fd, temp = tempfile.mkstemp(dir=str(path.parent), prefix=f".{path.name}.", suffix=_TEMP_SUFFIX)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fchmod(handle.fileno(), stat.S_IMODE(before.st_mode))
            if hasattr(os, "fchown") and (before.st_uid, before.st_gid) != (os.getuid(), os.getgid()):
                with contextlib.suppress(PermissionError):
                    os.fchown(handle.fileno(), before.st_uid, before.st_gid)
            os.fsync(handle.fileno())
        os.replace(temp, str(path))
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise
    _fsync_directory(path.parent)


def _fsync_directory(directory: Path) -> None:
    """Makes the rename durable (a crash after returning cannot bring the old file back)."""
    fd = os.open(str(directory), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def refresh_bytecode(path: Path) -> None:
    """Ensures no ``__pycache__`` entry of ``path`` can run its old code.

    Entries of this interpreter are recompiled in place with their own optimization level
    and invalidation mode (an unchecked-hash ``.pyc`` is never revalidated by Python);
    entries of other interpreters, or any that fail to compile, are removed, and Python
    rebuilds them on the next import. No entry is created where there was none.
    (``PYTHONDONTWRITEBYTECODE`` governs writes at import time, not this: like pip, we
    keep the install's compiled state as it was.)
    """
    cache = path.parent / "__pycache__"
    if not cache.is_dir():
        return
    for pyc in sorted(cache.glob(f"{path.stem}.*.pyc")):
        tag, _, level = pyc.name[len(path.stem) + 1 : -len(".pyc")].partition(".opt-")
        if tag == sys.implementation.cache_tag:
            try:
                py_compile.compile(
                    str(path),
                    cfile=str(pyc),
                    optimize=int(level or 0),
                    invalidation_mode=_invalidation_mode(pyc),
                    doraise=True,
                )
                continue
            except (py_compile.PyCompileError, OSError, ValueError):
                pass
        with contextlib.suppress(FileNotFoundError):
            pyc.unlink()


def _invalidation_mode(pyc: Path) -> py_compile.PycInvalidationMode:
    """The mode a ``.pyc`` was written with, from its header flags (PEP 552)."""
    with pyc.open("rb") as handle:
        header = handle.read(8)
    flags = int.from_bytes(header[4:8], "little") if len(header) == 8 else 0
    if flags & 0b1:
        return py_compile.PycInvalidationMode.CHECKED_HASH if flags & 0b10 else py_compile.PycInvalidationMode.UNCHECKED_HASH
    return py_compile.PycInvalidationMode.TIMESTAMP
