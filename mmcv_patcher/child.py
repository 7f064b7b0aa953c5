"""Runs one of this package's stdlib-only scripts in another interpreter, reads its JSON.

``--python`` (where is mmcv?) and ``verify`` (do the ops survive mixed precision?) both ask another
interpreter a question. The script is sent as ``python -c`` source, so nothing needs to be
installed there, and it answers with one JSON object on its last line of output.
"""

import json
import os
import re
from typing import Any, Dict, Mapping, Optional, Sequence

from mmcv_patcher.errors import Error

# shutil and subprocess are imported where they are used: only --python and verify run a
# child, and every other command would pay for importing them at start-up.


#: How the last line of an interpreter's error output starts when it is too old for the script.
_TOO_OLD = ("SyntaxError", "ImportError: No module named")
#: The last line of what Python prints for an exception it does not catch.
_PYTHON_ERROR = re.compile(r"[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt|Warning)\b")


class ChildError(Error, RuntimeError):
    """The interpreter could not be run, did not answer in time, or answered nonsense;
    ``unsuitable`` when the failure says the program is no interpreter the script runs on: it
    answered something else, could not compile the script, or lacks a module of the standard
    library it imports (Python 2)."""

    def __init__(self, message: str, *, unsuitable: bool = False) -> None:
        super().__init__(message)
        self.unsuitable = unsuitable


def resolve(python: str) -> str:
    """``python`` as a shell would find it: a name without a slash is looked up on ``PATH``.
    Raises :class:`ChildError` when there is no such program."""
    import shutil

    found = shutil.which(python) if os.sep not in python else python
    if found is None or not os.path.exists(found):
        raise ChildError("no such file" if os.sep in python else "not found on PATH")
    return found


def run_json(
    python: str, script: str, args: Sequence[str] = (), *, timeout: float, env: Optional[Mapping[str, str]] = None
) -> Dict[str, Any]:
    """Runs ``script`` (a file of this package) in ``python`` with ``args``; returns the
    JSON object it printed last. Raises :class:`ChildError` with a one-line reason."""
    import subprocess

    with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), script), encoding="utf-8") as handle:
        source = handle.read()
    try:
        done = subprocess.run(
            [python, "-c", source, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            encoding="utf-8",
            errors="replace",
            env=None if env is None else dict(env),
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:  # its message would quote the whole script
        raise ChildError(f"it did not answer within {timeout:g} s") from None
    except OSError as error:
        raise ChildError(f"it could not be run ({error.strerror or error})") from None
    lines = done.stdout.strip().splitlines()
    if done.returncode == 0 and lines:
        try:
            answer = json.loads(lines[-1])
        except ValueError:
            answer = None
        if isinstance(answer, dict):
            return answer
        raise ChildError(f"it answered {lines[-1][:200]!r}, not the JSON object expected", unsuitable=True)
    said = done.stderr.strip().splitlines() or ["no output"]
    # Python's error ends what it prints (after a traceback or a syntax error's caret);
    # anything else that stands in for an interpreter (a pyenv shim, a wrapper) says it first
    line = said[-1] if _PYTHON_ERROR.match(said[-1]) else said[0]
    raise ChildError(f"it exited {done.returncode} ({line[:300]})", unsuitable=said[-1].startswith(_TOO_OLD))
