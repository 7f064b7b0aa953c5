"""One place for output: the same results as human lines or as one JSON object."""

import io
import json
import os
import sys
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple

from mmcv_patcher.locate import Target
from mmcv_patcher.model import Command, Failure, Outcome, Problem, Result, State, listed

#: Bumped when a key changes meaning or disappears; adding keys does not bump it
#: (2: the target's ``path`` is ``package_dir``; ``failure`` was added later; 3: ``target``
#: became ``targets``, one per package, each naming its ``package``).
SCHEMA_VERSION = 3


class Copy(NamedTuple):
    """What ``status --all`` found on one interpreter: a copy of a package and its status,
    or, where it has none, why (``problem``)."""

    python: str
    #: the package it is a copy of (a key of :data:`~mmcv_patcher.model.PACKAGES`)
    package: str
    imported: bool
    target: Optional[Target]
    outcome: Optional[Outcome]
    problem: Optional[str] = None


def as_json(
    command: Optional[str],
    failure: Optional[Failure],
    *,
    targets: Sequence[Target] = (),
    outcome: Optional[Outcome] = None,
    verify: Optional[Dict[str, Any]] = None,
    copies: Optional[List[Copy]] = None,
) -> str:
    """The ``--json`` document (schema in docs/json.md): one object with the same keys whatever
    happened, plus ``verify`` for that command and ``copies`` for ``status --all``.
    ``failure`` is the one that is no patch's (``error`` says it in words); ``failure``
    in the document is also a patch's, when one made the command fail."""
    failed = failure or (outcome.failure if outcome is not None else None)
    document: Dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "command": None if command is None else str(command),
        "targets": [_target_object(target) for target in targets],
        "patches": [] if outcome is None else [_result_object(r) for r in outcome.results],
        "waited": bool(outcome and outcome.waited),
        "diff": "" if outcome is None else "".join(unified_diff(path, old, new) for path, old, new in outcome.previews),
        "notes": [] if outcome is None else list(outcome.notes),
        "error": None if failure is None else describe(failure),
        "failure": None if failed is None else {"kind": str(failed.kind), "path": failed.path, "detail": failed.detail},
    }
    if verify is not None:
        document["verify"] = verify
    if copies is not None:
        document["copies"] = [
            {
                "python": c.python,
                "package": c.package,
                "imported": c.imported,
                "target": None if c.target is None else _target_object(c.target),
                "patches": [] if c.outcome is None else [_result_object(r) for r in c.outcome.results],
                "problem": c.problem,
            }
            for c in copies
        ]
    return json.dumps(document, indent=2)


def copies_json(copies: List[Copy], failure: Optional[Failure]) -> str:
    """``status --all --json``: every key of :func:`as_json`, and ``copies``."""
    return as_json(Command.STATUS, failure, copies=copies)


def copies_text(copies: List[Copy]) -> List[str]:
    lines = []
    for copy in copies:
        if copy.target is None:
            lines.append(f"{copy.python}: {copy.problem}; nothing to patch")
            continue
        how = "imports" if copy.imported else "also has on sys.path (not imported)"
        lines.append(f"{copy.python} {how}:")
        lines.extend("  " + line for line in as_text([copy.target], copy.outcome))
    return lines


def _target_object(target: Target) -> Dict[str, Any]:
    return {
        "package": target.package,
        "package_dir": target.package_dir,
        "distribution": target.release.distribution,
        "version": target.release.version,
        "notes": list(target.notes),
    }


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


def as_text(targets: Sequence[Target], outcome: Optional[Outcome]) -> List[str]:
    """Lines for stdout: the targets, then one line per patch."""
    lines = []
    for target in targets:
        lines.append(f"{target.release.describe()} at {target.package_dir}")
        lines.extend(f"note: {note}" for note in target.notes)
    if outcome is not None:
        if outcome.waited and (outcome.error is None or outcome.error.kind is not Problem.LOCKED):
            lines.append("note: waited for another process to release this package's lock")
        alike: Dict[Tuple[str, State, str], List[str]] = {}  # patches with the same result share a line
        for result in outcome.results:
            alike.setdefault((_file_line(result), result.state, result.message), []).append(result.id)
        lines.extend(
            f"{listed(ids)}: {state} at {file_line} ({message})" for (file_line, state, message), ids in alike.items()
        )
        lines.extend(f"note: {note}" for note in outcome.notes)
        lines.extend(unified_diff(path, old, new) for path, old, new in outcome.previews)
    return lines


def safe_streams() -> None:
    """Makes stdout show any path in any locale: a character the encoding lacks (or a
    surrogate-escaped byte of a file name) is written as a backslash escape, never an error."""
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(errors="backslashreplace")


def out(text: str) -> None:
    """Writes ``text`` and a newline to stdout. See :func:`_write`."""
    _written[0] += 1
    _write("stdout", text)


#: How many times this run wrote to stdout, so an interrupted run never prints a second JSON object.
_written = [0]


def begin() -> None:
    """A new run: nothing written yet (:func:`said`)."""
    _written[0] = 0


def said() -> bool:
    """Whether this run has written its results to stdout."""
    return _written[0] > 0


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


def print_error(failure: Failure) -> None:
    """A failure as one ``mmcv-patcher: error:`` line on stderr: the only place that formats them."""
    err(f"mmcv-patcher: error: {describe(failure)}")


def waiting(directory: str, pid: Optional[int], timeout: float) -> str:
    """The line a run prints at once when another process holds the lock it needs; it
    names that process only when it is known to be a run of this tool."""
    who = (
        f"another mmcv-patcher run (process {pid}) is changing {directory}"
        if pid
        else f"another process holds the lock on {directory}"
    )
    return f"mmcv-patcher: {who}; waiting for it, at most {timeout:g} s (--lock-timeout)"


def _file_line(result: Result) -> str:
    """``file:line``, or the file alone when no line applies."""
    return f"{result.file}:{result.line}" if result.line else result.file


def verify_text(result: Dict[str, Any]) -> List[str]:
    """What ``verify`` gave mmcv for each patch's case that ran, what happened, and the
    verdict (which alone says why none ran, when none could)."""
    lines = [
        f"{id} ({dtype}): {case['verdict']}: {case['detail']} ({case['gave']})"
        for id, by_dtype in result.get("cases", {}).items()
        for dtype, case in by_dtype.items()
        if case.get("gave")
    ]
    versions = ", ".join(f"{k} {result[k]}" for k in ("mmcv", "torch") if result.get(k))
    lines.append(f"{result['verdict']}: {result['detail']}" + (f" ({versions})" if versions else ""))
    return lines


def unified_diff(path: str, old: str, new: str, context: int = 3) -> str:
    """``diff -u`` of two texts as GNU diff writes it: exactly the lines that differ.

    :func:`difflib.unified_diff` cannot be asked to drop its junk heuristic, which in a file
    of 200 lines or more treats common lines (blank ones) as junk and shows an unchanged one
    removed and added again; so the matcher is made here without it and the hunks are
    written in the same format.
    """
    import difflib  # only --dry-run shows a diff

    a, b = old.splitlines(True), new.splitlines(True)
    lines: List[str] = []
    for group in difflib.SequenceMatcher(None, a, b, autojunk=False).get_grouped_opcodes(context):
        if not lines:
            lines += [f"--- {path}\n", f"+++ {path}\n"]
        first, last = group[0], group[-1]
        lines.append(f"@@ -{_hunk_range(first[1], last[2])} +{_hunk_range(first[3], last[4])} @@\n")
        for tag, i1, i2, j1, j2 in group:
            lines += [" " + line for line in a[i1:i2]] if tag == "equal" else []
            lines += ["-" + line for line in a[i1:i2]] if tag in ("replace", "delete") else []
            lines += ["+" + line for line in b[j1:j2]] if tag in ("replace", "insert") else []
    return "".join(line if line.endswith(("\n", "\r")) else line + "\n\\ No newline at end of file\n" for line in lines)


def _hunk_range(start: int, stop: int) -> str:
    """A hunk's ``start,length`` as ``diff -u`` writes it (1-based; 0-based start when empty)."""
    length = stop - start
    if length == 1:
        return str(start + 1)
    return f"{start + 1 if length else start},{length}"


#: How each kind of failure is said, from its path and detail; any other kind is its detail.
_SENTENCES = {
    Problem.LOCKED: "{path}: {detail}; nothing was written (--lock-timeout waits longer)",
    Problem.CANNOT_LOCK: "{path}: {detail}; nothing was written, since other runs could not be kept out",
    Problem.READ_ONLY: "cannot write {path}: read-only; re-run as the owner or use --python/--path on a writable copy",
    Problem.STALE_BYTECODE: "cannot remove stale bytecode {path}: {detail}; the source was left as it was",
    Problem.WRITE_FAILED: "cannot write {path}: {detail}; the file was left as it was",
    Problem.OUTSIDE_PACKAGE: "{path}: {detail}; nothing was written",
    Problem.WOULD_NOT_COMPILE: "{path}: the patched file would not compile ({detail}); nothing was written",
    Problem.TOO_LARGE: "{path}: {detail}; nothing was written",
    Problem.DRIFTED: "{path}: {detail}",
    Problem.UNVERIFIED: "{path}: {detail}",
}


def describe(failure: Failure) -> str:
    """A failure in words: the one line after ``mmcv-patcher: error:``, or JSON's ``error``."""
    return _SENTENCES.get(failure.kind, "{detail}").format(path=failure.path, detail=failure.detail)
