"""What an interpreter sees: its ``sys.path`` and the ``mmcv`` it would import.

The running interpreter is asked in-process; another (``--python``) by running
:mod:`mmcv_patcher.introspect` in a child process (:mod:`mmcv_patcher.child`). Either way the
answer is the same value, and the patcher keeps running on its own interpreter.
"""

from typing import Any, Dict, NamedTuple, Optional, Tuple

from mmcv_patcher import child, introspect
from mmcv_patcher.errors import Error

#: Seconds an interpreter gets to say where mmcv is; a healthy one needs well under one.
ASK_TIMEOUT = 60


class InterpreterError(Error, RuntimeError):
    """The interpreter could not be run or did not answer."""


class Interpreter(NamedTuple):
    executable: str
    sys_path: Tuple[str, ...]
    #: where it keeps bytecode besides ``__pycache__`` (``sys.pycache_prefix``), if anywhere
    pycache_prefix: Optional[str]
    #: the package directory ``import mmcv`` would load, or None with ``mmcv_problem``
    mmcv_dir: Optional[str]
    mmcv_problem: Optional[str]
    #: an mmcv that only programs started from one directory import (the working directory
    #: of ``-m``), not ``mmcv_dir``: left alone, and named in a note
    local_mmcv_dir: Optional[str] = None


def _from(answer: Dict[str, Any]) -> Interpreter:
    """The answer of :func:`introspect.introspect` as a value; ValueError when it has another shape."""
    executable, sys_path = answer.get("executable"), answer.get("sys_path")
    optional = [answer.get(key) for key in ("pycache_prefix", "mmcv_dir", "mmcv_problem", "local_mmcv_dir")]
    if not (
        isinstance(executable, str)
        and isinstance(sys_path, list)
        and all(isinstance(entry, str) for entry in sys_path)
        and all(isinstance(value, (str, type(None))) for value in optional)
    ):
        raise ValueError("its answer is not where mmcv is")
    return Interpreter(executable, tuple(sys_path), *optional)


def current() -> Interpreter:
    """The running interpreter, asked in-process."""
    return _from(introspect.introspect())


def ask(python: str) -> Interpreter:
    """Another interpreter, asked in a child process that imports nothing but the stdlib."""
    try:
        return _from(child.run_json(child.resolve(python), "introspect.py", timeout=ASK_TIMEOUT))
    except child.ChildError as error:  # the version is blamed only when the failure says so
        hint = "; it must be CPython 3.6 or newer" if error.unsuitable else ""
        raise InterpreterError(f"--python {python}: {error}{hint}") from None
    except ValueError as error:
        raise InterpreterError(f"--python {python}: {error}; it must be CPython 3.6 or newer") from None
