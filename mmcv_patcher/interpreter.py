"""What an interpreter sees: its ``sys.path`` and the ``mmcv`` it would import.

The running interpreter is asked in-process; another (``--python``) by running
:mod:`mmcv_patcher.where` as ``-c`` source in a child process. Either way the answer is the
same value, and the patcher keeps running on its own interpreter.
"""

from __future__ import annotations

import os

from mmcv_patcher import where
from mmcv_patcher.records import NamedTuple

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Dict, Optional, Tuple


class InterpreterError(RuntimeError):
    """The interpreter could not be run or did not answer."""


class Interpreter(NamedTuple):
    executable: str
    version: str
    cache_tag: Optional[str]
    sys_path: Tuple[str, ...]
    #: the package directory ``import mmcv`` would load, or None with ``mmcv_problem``
    mmcv_dir: Optional[str]
    mmcv_problem: Optional[str]


def _from(answer: Dict[str, Any]) -> Interpreter:
    return Interpreter(
        executable=answer["executable"],
        version=answer["version"],
        cache_tag=answer.get("cache_tag"),
        sys_path=tuple(answer["sys_path"]),
        mmcv_dir=answer.get("mmcv_dir"),
        mmcv_problem=answer.get("mmcv_problem"),
    )


def current() -> Interpreter:
    """The running interpreter, asked in-process."""
    return _from(where.where())


def ask(python: str, timeout: float = 60) -> Interpreter:
    """Another interpreter, asked in a child process that imports nothing but the stdlib."""
    if not os.path.exists(python):
        raise InterpreterError(f"--python {python}: no such file")
    import subprocess  # only --python runs a child; status on the running one stays lean

    with open(where.__file__, encoding="utf-8") as handle:
        source = handle.read()
    try:
        done = subprocess.run([python, "-c", source], stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise InterpreterError(f"--python {python}: could not run it ({error})") from None
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise InterpreterError(f"--python {python}: it could not say where mmcv is ({last}); it must be CPython 3.6 or newer")
    import json

    try:
        return _from(json.loads(done.stdout.strip().splitlines()[-1]))
    except (ValueError, KeyError, IndexError):
        raise InterpreterError(f"--python {python}: unexpected answer {done.stdout[-200:]!r}") from None
