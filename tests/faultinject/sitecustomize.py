"""Fault injection for tests/test_faults.py, loaded by a child process through PYTHONPATH.

Wraps the file-system calls a write goes through. ``MMCVP_FAULT_LOG=FILE`` appends each
call's name to FILE; ``MMCVP_FAULT=N:ACTION`` makes the Nth wrapped call (counting from 1)
``kill-before`` (SIGKILL before the call), ``kill-after`` (SIGKILL after it returns),
``stop-before`` (SIGSTOP before the call, for a test to resume with SIGCONT),
``interrupt-before`` or ``interrupt-after`` (SIGINT, as Ctrl-C sends it), ``terminate-before``
(SIGTERM, as ``docker stop`` or a cancelled CI job sends it), or fail with
``ENOSPC``, ``EACCES``, ``EROFS``, ``EIO``, ``EBUSY`` (a rename over a bind-mounted file) or
``EPERM`` (an append-only directory) instead of running. ``MMCVP_FLOCK_ERRNO=NAME`` makes
every ``fcntl.flock`` fail with that errno, as a filesystem without flock does (``ENOSYS``
on Lustre without ``-o flock``, ``ENOLCK`` on NFSv3 without a lock daemon, ``EOPNOTSUPP``).
``MMCVP_SIGNAL_ON_IMPORT=MODULE:SIGNAL`` sends the process that signal as MODULE is first
imported (Ctrl-C while the tool starts).
"""

import errno
import os
import signal
import tempfile
from typing import Any

_LOG = os.environ.get("MMCVP_FAULT_LOG")
_COUNT, _, _ACTION = (os.environ.get("MMCVP_FAULT") or "0:").partition(":")  # empty: no fault
_AT = int(_COUNT)
_calls = [0]


def _wrap(owner: Any, name: str) -> None:
    real = getattr(owner, name)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        _calls[0] += 1
        if _LOG:
            with open(_LOG, "a") as log:
                log.write(name + "\n")
        if _calls[0] == _AT:
            if _ACTION == "kill-before":
                os.kill(os.getpid(), signal.SIGKILL)
            if _ACTION == "stop-before":
                os.kill(os.getpid(), signal.SIGSTOP)
            if _ACTION == "interrupt-before":
                os.kill(os.getpid(), signal.SIGINT)
            if _ACTION == "terminate-before":
                os.kill(os.getpid(), signal.SIGTERM)
            if _ACTION in ("ENOSPC", "EACCES", "EROFS", "EIO", "EBUSY", "EPERM"):
                code = getattr(errno, _ACTION)
                names = [arg for arg in args[:2] if isinstance(arg, str)]  # as the real call names them
                raise OSError(code, os.strerror(code), *names[:1], *([None, names[1]] if len(names) > 1 else []))
            result = real(*args, **kwargs)
            if _ACTION == "kill-after":
                os.kill(os.getpid(), signal.SIGKILL)
            if _ACTION == "interrupt-after":
                os.kill(os.getpid(), signal.SIGINT)
            return result
        return real(*args, **kwargs)

    setattr(owner, name, wrapper)


if _LOG or _AT:
    for _name in ("replace", "fsync", "fchmod", "unlink"):
        _wrap(os, _name)
    _wrap(tempfile, "mkstemp")

_NO_FLOCK = os.environ.get("MMCVP_FLOCK_ERRNO")
if _NO_FLOCK:
    import fcntl

    def _no_flock(fd: Any, operation: int) -> None:
        code = getattr(errno, _NO_FLOCK or "")
        raise OSError(code, os.strerror(code))

    fcntl.flock = _no_flock

_ON_IMPORT = os.environ.get("MMCVP_SIGNAL_ON_IMPORT")
if _ON_IMPORT:
    import importlib.abc
    import sys

    _MODULE, _, _SIGNAL = _ON_IMPORT.partition(":")

    class _SignalOnImport(importlib.abc.MetaPathFinder):
        def find_spec(self, fullname: str, path: Any, target: Any = None) -> None:
            if fullname == _MODULE:
                sys.meta_path.remove(self)
                os.kill(os.getpid(), getattr(signal, _SIGNAL))
            return None

    sys.meta_path.insert(0, _SignalOnImport())
