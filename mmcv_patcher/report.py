"""One place for output: the same results as human lines or as one JSON object."""

import io
import json
import os
import sys
from typing import Any, Dict, List, NamedTuple, Optional, Tuple

from mmcv_patcher.commands import Outcome
from mmcv_patcher.locate import Target
from mmcv_patcher.model import Result, State

#: Bumped when a key changes meaning or disappears; adding keys does not bump it.
SCHEMA_VERSION = 1


class Copy(NamedTuple):
    """One mmcv copy found by ``status --all``: who sees it, and whether it is imported."""

    python: str
    imported: bool
    target: Target
    outcome: Outcome


def as_json(command: Optional[str], target: Optional[Target], outcome: Optional[Outcome], error: Optional[str], *, verify: Optional[Dict[str, Any]] = None) -> str:
    """The ``--json`` document (schema in README): one object, whatever happened."""
    document: Dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "command": command,
        "target": None if target is None else _target_object(target),
        "patches": [] if outcome is None else [_result_object(r) for r in outcome.results],
        "waited": bool(outcome and outcome.waited),
        "diff": "".join(outcome.diffs) if outcome is not None else "",
        "error": error,
    }
    if verify is not None:
        document["verify"] = verify
    return json.dumps(document, indent=2)


def copies_json(copies: List[Copy], error: Optional[str]) -> str:
    """``status --all --json``: ``copies`` instead of ``target`` and ``patches``."""
    document = {
        "schema_version": SCHEMA_VERSION,
        "command": "status",
        "copies": [
            {"python": c.python, "imported": c.imported, "target": _target_object(c.target), "patches": [_result_object(r) for r in c.outcome.results]}
            for c in copies
        ],
        "error": error,
    }
    return json.dumps(document, indent=2)


def copies_text(copies: List[Copy]) -> List[str]:
    lines = []
    for copy in copies:
        how = "imports" if copy.imported else "also has on sys.path (not imported)"
        lines.append(f"{copy.python} {how}:")
        lines.extend("  " + line for line in as_text(copy.target, copy.outcome))
    return lines


def _target_object(target: Target) -> Dict[str, Any]:
    return {"path": target.package_dir, "distribution": target.distribution, "version": target.version, "notes": list(target.notes)}


def _result_object(result: Result) -> Dict[str, Any]:
    return {
        "id": result.id,
        "state": str(result.state),
        "file": result.file,
        "line": result.line,
        "message": result.message,
        "changed": result.changed,
        "ok": result.ok,
    }


def as_text(target: Optional[Target], outcome: Optional[Outcome]) -> List[str]:
    """Lines for stdout: the target, then one line per patch."""
    lines = []
    if target is not None:
        lines.append(f"{target.describe()} at {target.package_dir}")
        lines.extend(f"note: {note}" for note in target.notes)
    if outcome is not None:
        if outcome.waited:
            lines.append("note: waited for another mmcv-patcher run on this package to finish")
        lines.extend(f"{result.id}: {result.state} at {_where(result)} ({result.message})" for result in outcome.results)
        lines.extend(outcome.diffs)
    return lines


def safe_streams() -> None:
    """Makes stdout show any path in any locale: a character the encoding lacks (or a
    surrogate-escaped byte of a file name) is written as a backslash escape, never an error."""
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(errors="backslashreplace")


def out(text: str) -> None:
    """Writes ``text`` and a newline to stdout. See :func:`_write`."""
    _write("stdout", text)


def err(text: str) -> None:
    """Writes ``text`` and a newline to stderr. See :func:`_write`."""
    _write("stderr", text)


def _write(name: str, text: str) -> None:
    """Output never changes the outcome: the exit code reports what happened to the files,
    so a stream that cannot be written (closed, full, a pipe whose reader left) is dropped,
    and replaced by /dev/null so that the interpreter's flush at exit cannot fail either."""
    stream = getattr(sys, name)
    if stream is None:  # started with the descriptor closed
        return
    try:
        stream.write(text + "\n")
        stream.flush()
    except (OSError, ValueError):  # ValueError: the stream was closed
        setattr(sys, name, open(os.devnull, "w"))


def print_errors(lines: List[str]) -> None:
    """Each failure as one ``mmcv-patcher: error:`` line on stderr: the only place that
    formats them."""
    for line in lines:
        err(f"mmcv-patcher: error: {line}")


def waiting(directory: str, pid: Optional[int], timeout: float) -> str:
    """The line a run prints at once when another run holds the lock it needs."""
    who = f"another mmcv-patcher run (process {pid})" if pid else "another mmcv-patcher run"
    return f"mmcv-patcher: {who} is changing {directory}; waiting for it, at most {timeout:g} s (--lock-timeout)"


def errors(outcome: Optional[Outcome]) -> List[str]:
    """One line per failure for stderr, each naming the file and line and what to do."""
    if outcome is None:
        return []
    failed: Dict[Tuple[str, State, str], List[str]] = {}  # one line for patches failing alike
    for result in outcome.results:
        if not result.ok:
            failed.setdefault((_where(result), result.state, result.message), []).append(result.id)
    lines = [f"{where}: {' and '.join(ids)} {'is' if len(ids) == 1 else 'are'} {state}: {message}" for (where, state, message), ids in failed.items()]
    if outcome.error:
        lines.append(outcome.error)
    return lines


def _where(result: Result) -> str:
    """``file:line``, or the file alone when no line applies."""
    return f"{result.file}:{result.line}" if result.line else result.file


def verify_text(result: Dict[str, Any]) -> List[str]:
    """What ``verify`` gave mmcv for each patch's case, what happened, and the verdict."""
    lines = [f"{id}: {case['verdict']}: {case['detail']} ({case['gave']})" for id, case in result.get("cases", {}).items()]
    versions = ", ".join(f"{k} {result[k]}" for k in ("mmcv", "torch") if result.get(k))
    lines.append(f"{result['verdict']}: {result['detail']}" + (f" ({versions})" if versions else ""))
    return lines
