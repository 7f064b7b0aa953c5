"""What an interpreter sees: its ``sys.path`` and where it would import each package from.

The running interpreter is asked in-process; another (``--python``) by running
:mod:`mmcv_patcher.introspect` in a child process (:mod:`mmcv_patcher.child`). Either way the
answer is the same value, and the patcher keeps running on its own interpreter.
"""

from typing import Any, Dict, NamedTuple, Optional, Tuple

from mmcv_patcher import child, introspect
from mmcv_patcher.errors import Error
from mmcv_patcher.model import PACKAGES

#: Seconds an interpreter gets to say where the packages are; a healthy one needs well under one.
ASK_TIMEOUT = 60


class InterpreterError(Error, RuntimeError):
    """The interpreter could not be run or did not answer."""


class Found(NamedTuple):
    """Where an interpreter's programs import one top-level package from."""

    #: the package directory ``import <package>`` would load, or None with ``problem``
    dir: Optional[str]
    problem: Optional[str]
    #: a copy that only programs started from one directory import (the working directory
    #: of ``-m``), not ``dir``: left alone, and named in a note
    local_dir: Optional[str] = None


class Interpreter(NamedTuple):
    executable: str
    sys_path: Tuple[str, ...]
    #: where it keeps bytecode besides ``__pycache__`` (``sys.pycache_prefix``), if anywhere
    pycache_prefix: Optional[str]
    #: (package, where it is) for every package of :data:`~mmcv_patcher.model.PACKAGES`
    packages: Tuple[Tuple[str, Found], ...]

    def found(self, package: str) -> Found:
        """Where this interpreter imports ``package`` (a key of :data:`PACKAGES`) from."""
        return dict(self.packages)[package]


def _from(answer: Dict[str, Any]) -> Interpreter:
    """The answer of :func:`introspect.introspect` as a value; ValueError when it has another shape."""
    executable, sys_path, packages = answer.get("executable"), answer.get("sys_path"), answer.get("packages")
    prefix = answer.get("pycache_prefix")
    if not (
        isinstance(executable, str)
        and isinstance(sys_path, list)
        and all(isinstance(entry, str) for entry in sys_path)
        and isinstance(prefix, (str, type(None)))
        and isinstance(packages, dict)
        and set(packages) == set(PACKAGES)
        and all(
            isinstance(found, dict) and all(isinstance(found.get(key), (str, type(None))) for key in Found._fields)
            for found in packages.values()
        )
    ):
        raise ValueError("its answer is not where the packages are")
    return Interpreter(
        executable,
        tuple(sys_path),
        prefix,
        tuple((name, Found(*(packages[name].get(key) for key in Found._fields))) for name in PACKAGES),
    )


def current() -> Interpreter:
    """The running interpreter, asked in-process."""
    return _from(introspect.introspect(list(PACKAGES)))


def ask(python: str) -> Interpreter:
    """Another interpreter, asked in a child process that imports nothing but the stdlib."""
    try:
        return _from(child.run_json(child.resolve(python), "introspect.py", list(PACKAGES), timeout=ASK_TIMEOUT))
    except child.ChildError as error:  # the version is blamed only when the failure says so
        hint = "; it must be CPython 3.6 or newer" if error.unsuitable else ""
        raise InterpreterError(f"--python {python}: {error}{hint}") from None
    except ValueError as error:
        raise InterpreterError(f"--python {python}: {error}; it must be CPython 3.6 or newer") from None
