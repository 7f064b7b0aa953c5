"""The only code that changes files: atomic replacement, bytecode refresh, and the lock.

Small functions, each stating what it guarantees. This module only ever overwrites a file
that an interpreter may be importing right now, so every file is written to a temporary file
beside it, fsynced, and moved over the old one with ``os.replace``: a reader or a crash sees
the old bytes or the new, never a mix. A process killed mid-write cannot delete its temporary
file; every temporary file carries :data:`TEMP_SUFFIX`, and the next writing run removes any
it finds (:func:`remove_stale_temps`) while holding the lock.
"""

import contextlib
import errno
import importlib.util
import marshal
import os
import platform
import re
import stat
import sys
import time
from types import CodeType
from typing import Callable, Iterable, Iterator, List, NamedTuple, Optional, Tuple, TypeVar

from mmcv_patcher.errors import Error

try:
    import fcntl
except ImportError:  # Windows has no flock: runs there are kept apart by the lock file
    fcntl = None  # type: ignore[assignment]

TEMP_SUFFIX = ".mmcv-patcher-tmp"
#: What taking a lock gives: a lock file's descriptor, or True for an ``flock``.
_Taken = TypeVar("_Taken")


class ReadOnly(Error, PermissionError):
    """The target (or its directory) cannot be written by this user."""


class LockTimeout(Error, OSError):
    """Another run held the lock for longer than the caller was willing to wait."""


class CannotLock(Error, OSError):
    """The directory cannot be locked: ``flock`` failed for a reason other than another
    run, or, where there is no ``flock``, the lock file could not be created."""


#: What ``flock`` raises where the filesystem cannot lock: Lustre mounted without ``-o
#: flock`` (ENOSYS), NFSv3 with no lock daemon (ENOLCK), others (EOPNOTSUPP).
NO_FLOCK = (errno.ENOSYS, errno.ENOLCK, errno.EOPNOTSUPP)
#: The lock file taken instead, in the package directory, where there is no ``flock``.
LOCK_FILE = ".mmcv-patcher.lock"


@contextlib.contextmanager
def locked(directory: str, timeout: float, on_wait: Callable[[Optional[int]], None]) -> Iterator[Optional[str]]:
    """Holds an exclusive ``flock`` on ``directory`` itself, so no lock file is ever left.

    When another process holds it, calls ``on_wait`` at once with that process's id (when
    ``/proc/locks`` tells) and waits at most ``timeout`` seconds, then raises
    :class:`LockTimeout`. Where the filesystem has no ``flock`` (:data:`NO_FLOCK`), or the
    platform none at all (no :mod:`fcntl`: Windows), holds :func:`lock_file` instead. Yields
    None, or a line saying a lock file was used.
    """
    if fcntl is None:
        with lock_file(directory, timeout, on_wait):
            yield (
                f"{directory}: this platform has no flock, so other runs were kept out with the lock file"
                f" {LOCK_FILE} there, removed when done"
            )
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        try:
            taken = _try_flock(fd)
        except OSError as error:
            if error.errno not in NO_FLOCK:
                raise CannotLock(error.errno, f"flock failed: {error.strerror}", directory) from None
            os.close(fd)
            fd = -1
            with lock_file(directory, timeout, on_wait):
                yield (
                    f"{directory}: its filesystem cannot flock ({errno.errorcode[error.errno]}), so other runs"
                    f" were kept out with the lock file {LOCK_FILE} there, removed when done"
                )
            return
        if not taken:
            _wait_for(
                lambda: _try_flock(fd) or None,
                timeout,
                lambda: on_wait(_lock_holder(fd)),
                lambda: LockTimeout(
                    errno.EAGAIN, f"its lock was held by another process{_for_over(timeout)}", directory
                ),
            )
        yield None
    finally:
        if fd >= 0:
            os.close(fd)  # closing the descriptor releases the lock


def _for_over(timeout: float) -> str:
    """How long a lock was waited for, in a timeout's message: nothing for ``--lock-timeout 0``."""
    return f" for over {timeout:g} s" if timeout > 0 else ""


@contextlib.contextmanager
def lock_file(directory: str, timeout: float, on_wait: Callable[[Optional[int]], None]) -> Iterator[None]:
    """Holds :data:`LOCK_FILE` in ``directory``, created with ``O_EXCL`` (atomic on local
    filesystems, NFSv3 and later, Lustre) and holding this process's id and host; removes it
    when done. Another run's lock file is waited for as a held ``flock`` is. A file a killed
    run left is never taken over (two runs could each take it): as git does for
    ``index.lock``, the timeout's message names it, says when its process is gone, and asks
    for its removal."""
    path = os.path.join(directory, LOCK_FILE)
    holder = _Holder(None, None, "")  # what stands at the lock file's path, as last read

    def create() -> Optional[int]:
        nonlocal holder
        try:
            return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            holder = _lock_file_holder(path)
            return None
        except OSError as error:
            raise CannotLock(
                error.errno,
                f"its filesystem cannot flock, and the lock file {LOCK_FILE} cannot be created there: {error.strerror}",
                directory,
            ) from None

    def timed_out() -> LockTimeout:
        return LockTimeout(
            errno.EAGAIN, f"its lock file {LOCK_FILE} was held{_for_over(timeout)}{holder.why}", directory
        )

    fd = _wait_for(create, timeout, lambda: on_wait(holder.pid if holder.ours else None), timed_out)
    try:
        try:
            os.write(fd, f"{os.getpid()} {platform.node()}\n".encode())
        finally:
            os.close(fd)
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def _wait_for(
    take: Callable[[], Optional[_Taken]],
    timeout: float,
    waiting: Callable[[], None],
    timed_out: Callable[[], LockTimeout],
) -> _Taken:
    """What ``take`` returns once it returns something, tried every 50 ms: after the first
    try fails ``waiting`` is called, and ``timeout`` seconds later ``timed_out``'s error is
    raised."""
    deadline: Optional[float] = None
    while True:
        taken = take()
        if taken is not None:
            return taken
        if deadline is None:
            waiting()
            deadline = time.monotonic() + timeout
        elif time.monotonic() >= deadline:
            raise timed_out()
        time.sleep(0.05)


class _Holder(NamedTuple):
    """What stands at the lock file's path: the process id it names on this host (None when
    it names none here), whether that process is a run of this tool, and what the timeout's
    message adds about it (empty when nothing is known)."""

    pid: Optional[int]
    ours: Optional[bool]
    why: str


def _lock_file_holder(path: str) -> _Holder:
    """What the lock file at ``path`` says of its holder. Anything but a regular file (a
    directory, a FIFO, a socket, a symlink to one) is named and never opened, so nothing
    here waits for a writer; a file is read without blocking, 256 bytes at most."""
    remove = "remove it if no run is going"
    try:
        found = os.stat(path)
        if not stat.S_ISREG(found.st_mode):
            return _Holder(
                None,
                None,
                f"; it is not a file but {_kind(found.st_mode)}, which no run of mmcv-patcher makes: {remove}",
            )
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):  # replaced since the stat
                return _Holder(None, None, "")
            said = os.read(fd, 256).decode("ascii", "replace").strip()
        finally:
            os.close(fd)
    except OSError:
        return _Holder(None, None, "")
    pid_text, _, host = said.partition(" ")
    if not said:
        return _Holder(None, None, f"; it is empty (a run killed as it made it, or not made by mmcv-patcher): {remove}")
    if not pid_text.isdigit() or not host:
        return _Holder(
            None, None, f"; it holds {said[:60]!r}, not the process id and host a run of mmcv-patcher writes: {remove}"
        )
    pid = int(pid_text)
    if host != platform.node():
        return _Holder(None, None, f"; it was made by process {pid} on another host, {host}: {remove} there")
    if not os.path.exists(f"/proc/{pid}"):
        return _Holder(pid, False, f"; its process {pid} is gone, so a killed run left it: {remove}")
    if not _is_our_run(pid):
        return _Holder(
            pid,
            False,
            f"; its process {pid} is not a run of mmcv-patcher (the id was reused), so a killed run left it: {remove}",
        )
    return _Holder(pid, True, f"; its process {pid} is a run of mmcv-patcher that is still going")


def _kind(mode: int) -> str:
    """What a file that is not a regular one is, in words."""
    kinds = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"))
    return next((name for test, name in kinds if test(mode)), "a device")


def _try_flock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _lock_holder(fd: int) -> Optional[int]:
    """The id of the process holding an flock on ``fd``'s inode, from Linux's /proc/locks,
    when that process is a run of this tool (its command line says so); None otherwise."""
    inode = os.fstat(fd).st_ino
    try:
        with open("/proc/locks", encoding="ascii", errors="replace") as handle:
            for line in handle:
                fields = line.split()
                if (
                    "FLOCK" in fields
                    and "->" not in fields
                    and len(fields) >= 6
                    and fields[5].rsplit(":", 1)[-1] == str(inode)
                ):
                    pid = int(fields[4])
                    return pid if _is_our_run(pid) else None
    except (OSError, ValueError):
        pass
    return None


def _is_our_run(pid: int) -> bool:
    """Whether process ``pid`` runs this tool (``-m mmcv_patcher`` or the ``mmcv-patcher`` script)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            argv = handle.read(65536).split(b"\0")
    except OSError:
        return False
    return any(
        arg in (b"mmcv_patcher", b"mmcv_patcher.cli") or os.path.basename(arg) == b"mmcv-patcher" for arg in argv
    )


@contextlib.contextmanager
def uninterrupted() -> Iterator[None]:
    """Holds back SIGINT (Ctrl-C) and SIGTERM while the body runs, on the main thread of a
    POSIX interpreter; one that arrived meanwhile is delivered as the body ends."""
    import signal  # only a write that is being rolled back needs them
    import threading

    held = {signal.SIGINT, signal.SIGTERM}
    if not hasattr(signal, "pthread_sigmask") or threading.current_thread() is not threading.main_thread():
        yield  # pragma: no cover - Windows, or a caller's own thread
        return
    before = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, before)


def check_writable(path: str) -> None:
    """Raises :class:`ReadOnly` unless this user may replace ``path``, before anything is
    created. Replacing takes only its directory (the temporary file is made there and renamed
    over it), as pip's reinstall does: a read-only file, or one hardlinked from a cache of
    another user's, is replaced and the cache's copy stays as it was. In a sticky directory
    (``/tmp``-like) only the file's or the directory's owner may rename over it. Names the
    file when it is not writable either, else the directory."""
    directory = os.path.dirname(path)
    if os.access(directory, os.W_OK | os.X_OK) and not _sticky_forbids(directory, path):
        return
    raise ReadOnly(errno.EACCES, "read-only", directory if os.access(path, os.W_OK) else path)


def _sticky_forbids(directory: str, path: str) -> bool:
    """Whether the sticky bit of ``directory`` keeps this user from replacing ``path``."""
    info = os.stat(directory)
    if not info.st_mode & stat.S_ISVTX or os.geteuid() == 0:
        return False
    return os.geteuid() not in (info.st_uid, os.lstat(path).st_uid)


class StaleBytecode(Error, OSError):
    """A ``__pycache__`` entry could not be removed, so the source was not changed."""


def replace_file(
    path: str,
    data: bytes,
    *,
    import_path: Optional[str] = None,
    code: Optional[CodeType] = None,
    pycache_prefixes: Iterable[str] = (),
) -> Optional[str]:
    """Replaces ``path`` with ``data`` atomically, keeping its mode bits exactly, and its owner
    and group wherever the kernel allows; returns a line saying what could not be kept, or
    None. Leaves no temporary file behind unless the process is killed.

    Checks that the file and its directory are writable before touching anything. The
    bytecode of ``path`` (and of ``import_path``, the name Python imports it by when that
    is a symlink to ``path``) is dropped before the write and rebuilt after it, so a crash
    in between leaves no bytecode rather than bytecode of the old source; bytecode under
    each of ``pycache_prefixes`` (``sys.pycache_prefix``) is handled like ``__pycache__``.
    ``code``, when the caller compiled ``data`` unoptimized under the name Python imports
    it by, is reused for that name's optimization-level-0 ``.pyc``.
    """
    check_writable(path)
    imported = import_path or path
    prefixes = tuple(pycache_prefixes)
    dropped = []
    try:
        for location in {path, imported}:
            dropped.append((location, drop_bytecode(location, prefixes)))
    except StaleBytecode:
        for location, entries in dropped:  # the source is unchanged: put its bytecode back
            rebuild_bytecode(location, entries)
        raise
    written = False
    try:
        lost = _write_atomically(path, data, os.stat(path))
        written = True
        return lost
    finally:  # bytecode of the text on disk: ``code`` is the new text's, so only once it is there
        for location, entries in dropped:
            rebuild_bytecode(location, entries, code if written and location == imported else None)


def _write_atomically(path: str, data: bytes, like: os.stat_result) -> Optional[str]:
    """Writes ``data`` to a temporary file beside ``path`` with ``like``'s owner, group and
    mode, and moves it over ``path``; returns a line saying what of those could not be kept."""
    import tempfile  # only a write needs it, and it imports random and shutil: status never pays

    directory, name = os.path.split(path)
    try:
        fd, temp = tempfile.mkstemp(dir=directory, prefix=f".{name}.", suffix=TEMP_SUFFIX)
    except OSError as error:  # it names the temporary file it could not make
        raise OSError(error.errno, error.strerror, path) from None
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            _keep_owner(handle.fileno(), like)  # first: a change of owner clears setuid and setgid
            os.fchmod(handle.fileno(), stat.S_IMODE(like.st_mode))
            lost = _what_was_not_kept(os.fstat(handle.fileno()), like, path)
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except OSError as error:  # named as the file it was for: the temporary file is gone
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise OSError(error.errno, error.strerror, path) from None
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    with contextlib.suppress(OSError):  # durability only: the rename has happened
        _fsync_directory(directory)
    return lost


def _keep_owner(fd: int, like: os.stat_result) -> None:
    """Gives the file ``like``'s owner and group, or, where only root may give a file away,
    at least its group (allowed to a member of that group)."""
    if (like.st_uid, like.st_gid) == (os.getuid(), os.getgid()):
        return
    try:
        os.fchown(fd, like.st_uid, like.st_gid)
    except PermissionError:
        with contextlib.suppress(PermissionError):
            os.fchown(fd, -1, like.st_gid)


def _what_was_not_kept(now: os.stat_result, like: os.stat_result, path: str) -> Optional[str]:
    lost = []
    if now.st_uid != like.st_uid:
        lost.append(f"owner {like.st_uid} (now {now.st_uid})")
    if now.st_gid != like.st_gid:
        lost.append(f"group {like.st_gid} (now {now.st_gid})")
    if stat.S_IMODE(now.st_mode) != stat.S_IMODE(like.st_mode):
        lost.append(f"mode {stat.S_IMODE(like.st_mode):o} (now {stat.S_IMODE(now.st_mode):o})")
    return f"{path}: could not keep its {' and '.join(lost)}; only root may give a file away" if lost else None


def _fsync_directory(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_stale_temps(directory: str) -> List[str]:
    """Removes temporary files a killed run of this tool left in ``directory`` and its
    ``__pycache__``. Call it only while holding :func:`locked`: then no live run owns them."""
    removed = []
    for folder in (directory, os.path.join(directory, "__pycache__")):
        for name in _names_in(folder):
            if name.startswith(".") and name.endswith(TEMP_SUFFIX):
                leftover = os.path.join(folder, name)
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(leftover)
                    removed.append(leftover)
    return removed


def _names_in(folder: str) -> List[str]:
    """The names in ``folder``, sorted; none when it is missing, not a directory, or not
    readable (nothing in it could be removed then either)."""
    try:
        return sorted(os.listdir(folder))
    except (FileNotFoundError, NotADirectoryError, PermissionError):
        return []


class _CacheEntry(NamedTuple):
    """A bytecode entry of this interpreter that existed before a write."""

    pyc: str
    optimize: int
    flags: int
    like: os.stat_result


def cache_directories(path: str, pycache_prefixes: Iterable[str] = ()) -> List[str]:
    """Where bytecode of ``path`` can live: ``__pycache__`` beside it, and for each
    ``sys.pycache_prefix`` the mirror of its directory under that prefix, named as
    :func:`importlib.util.cache_from_source` names it."""
    directory = os.path.dirname(path)
    mirrored = os.path.abspath(directory).lstrip(os.sep)
    return [os.path.join(directory, "__pycache__")] + [os.path.join(prefix, mirrored) for prefix in pycache_prefixes]


def drop_bytecode(path: str, pycache_prefixes: Iterable[str] = ()) -> List[_CacheEntry]:
    """Removes every bytecode entry of ``path`` (every interpreter, every optimization
    level, in every :func:`cache_directories`) before its source changes, so no crash can
    leave bytecode of the old source beside the new one: Python never revalidates an
    unchecked-hash ``.pyc``. Returns this interpreter's entries, for :func:`rebuild_bytecode`.

    Only names that are bytecode of ``path`` count (``<stem>.<cache tag>.pyc`` and its
    ``.opt-1``/``.opt-2`` forms: ``nms.backup.pyc`` is not). None is removed unless all can
    be: each is first moved aside (which fails where removing it would: a read-only directory,
    an immutable file), and if one cannot be, the others are moved back and
    :class:`StaleBytecode` is raised; the source must not change then. (Like pip, we keep the
    install's compiled state as it was; ``PYTHONDONTWRITEBYTECODE`` governs writes at import
    time, not this.)
    """
    stem = os.path.basename(path).rpartition(".")[0] or os.path.basename(path)
    found = []
    for cache in cache_directories(path, pycache_prefixes):
        for cached in _names_in(cache):
            named = _BYTECODE.fullmatch(cached[len(stem) + 1 :]) if cached.startswith(stem + ".") else None
            if named is None:
                continue
            pyc = os.path.join(cache, cached)
            try:
                info = os.lstat(pyc)
            except FileNotFoundError:
                continue
            if not stat.S_ISREG(info.st_mode):
                raise StaleBytecode(
                    errno.EISDIR if stat.S_ISDIR(info.st_mode) else errno.EINVAL, "not a regular file", pyc
                )
            mine = named.group("tag") == sys.implementation.cache_tag
            found.append((pyc, _CacheEntry(pyc, int(named.group("level") or 0), _flags(pyc), info) if mine else None))
    moved: List[Tuple[str, str]] = []
    for pyc, _ in found:
        aside = os.path.join(os.path.dirname(pyc), f".{os.path.basename(pyc)}.{os.getpid()}{TEMP_SUFFIX}")
        try:
            os.rename(pyc, aside)
        except FileNotFoundError:
            continue
        except OSError as error:
            _move_back(moved)  # still the old source: its bytecode stays
            raise StaleBytecode(
                error.errno,
                "read-only" if error.errno in (errno.EACCES, errno.EPERM, errno.EROFS) else error.strerror,
                pyc,
            ) from None
        except BaseException:  # interrupted (Ctrl-C): the source stays, and so does its bytecode
            _move_back(moved)
            raise
        moved.append((pyc, aside))
    for index, (pyc, aside) in enumerate(moved):
        try:
            os.unlink(aside)
        except OSError as error:  # back under its name: bytecode of the source, which stays as it is
            _move_back(moved[index:])
            raise StaleBytecode(error.errno, error.strerror, pyc) from None
        except BaseException:
            _move_back(moved[index:])
            raise
    gone = {pyc for pyc, _ in moved}
    return [entry for pyc, entry in found if entry is not None and pyc in gone]


def _move_back(moved: List[Tuple[str, str]]) -> None:
    """Puts bytecode set aside back under its own name (the source it was made from stays)."""
    for back, was in reversed(moved):
        with contextlib.suppress(OSError):
            os.rename(was, back)


#: What follows ``<stem>.`` in the name of bytecode of ``<stem>.py``: a cache tag
#: (``cpython-311``, ``pypy39``) and an optional optimization level.
_BYTECODE = re.compile(r"(?P<tag>[a-z]+-?[0-9]+)(?:\.opt-(?P<level>[12]))?\.pyc")


def rebuild_bytecode(path: str, dropped: List[_CacheEntry], code: Optional[CodeType] = None) -> None:
    """Writes the dropped entries again for the source now at ``path``, each with its own
    optimization level and invalidation mode, atomically. Entries of other interpreters stay
    removed, and so does one that cannot be written: a missing entry is harmless, Python
    compiles the source instead (and rebuilds it where it may write)."""
    for entry in dropped:
        with contextlib.suppress(OSError, SyntaxError, ValueError):
            _write_atomically(entry.pyc, _pyc_bytes(path, entry.optimize, entry.flags, code), entry.like)


def _flags(pyc: str) -> int:
    """The PEP 552 flags word of a ``.pyc``: 0 timestamp, 0b01 unchecked hash, 0b11 checked."""
    with open(pyc, "rb") as handle:
        header = handle.read(8)
    return int.from_bytes(header[4:8], "little") & 0b11 if len(header) == 8 else 0


def _pyc_bytes(path: str, optimize: int, flags: int, code: Optional[CodeType] = None) -> bytes:
    """The ``.pyc`` Python itself would write for ``path`` (PEP 552 header + marshalled
    code); ``code``, the source compiled unoptimized as ``path``, spares compiling it again."""
    with open(path, "rb") as handle:
        source = handle.read()
    if code is None or optimize != 0 or code.co_filename != path:
        code = compile(source, path, "exec", dont_inherit=True, optimize=optimize)
    header = importlib.util.MAGIC_NUMBER + flags.to_bytes(4, "little")
    if flags & 0b1:
        header += importlib.util.source_hash(source)
    else:
        info = os.stat(path)
        header += (int(info.st_mtime) & 0xFFFFFFFF).to_bytes(4, "little") + (info.st_size & 0xFFFFFFFF).to_bytes(
            4, "little"
        )
    return header + marshal.dumps(code)
