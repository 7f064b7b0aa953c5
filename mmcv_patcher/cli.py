"""The command line's edge: arguments in, one line per failure and an exit code out.

The flow runs one way: :mod:`arguments` reads the command line; :mod:`interpreter` and
:mod:`locate` find the mmcv package and its release; :mod:`registry` picks the patches;
:mod:`commands` plans each file (:mod:`plan`, pure) and writes (:mod:`write`, the only
module that touches the disk); :mod:`report` renders the result as lines or JSON. Errors
are values until here, where they become one line on stderr and an exit code (0 done or
nothing to do, 1 failure with files untouched, 2 usage, 3 ``status --check`` found an
affected install that is not patched).
"""

import argparse
import gc
import os
import sys
from typing import List, NoReturn, Optional, Sequence

from mmcv_patcher import arguments, commands, interpreter, locate, registry, report, verify
from mmcv_patcher.commands import STATUS
from mmcv_patcher.model import Patch, State
from mmcv_patcher.verify import VERIFY

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNPATCHED = 0, 1, 2, 3


def run() -> NoReturn:
    """The ``mmcv-patcher`` script and ``python -m mmcv_patcher``: :func:`main`, then exit.

    The process ends here, so everything it made (LibCST's modules and trees among them) is
    frozen first (:func:`gc.freeze`): the interpreter's last garbage collection then skips
    it instead of walking it all, which took longer than the rest of shutting down (about
    30 ms of an ``apply``). Called in-process, :func:`main` freezes nothing.
    """
    code = main()
    gc.freeze()
    sys.exit(code)


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    report.safe_streams()
    try:
        args = arguments.parse(argv)
    except arguments.UsageError as error:
        if "--json" in argv:
            report.out(report.as_json(error.command, None, None, error.message))
        report.err(error.usage.rstrip("\n"))
        report.print_errors([error.message])
        return EXIT_USAGE
    try:
        return _run(args)
    except Exception as error:  # the promise: one line, never a traceback
        message = f"internal error: {type(error).__name__}: {error}; please report it with --json output"
        if args.json:
            report.out(report.as_json(args.command, None, None, message))
        report.print_errors([message])
        return EXIT_FAILED


def _run(args: argparse.Namespace) -> int:
    selected = registry.select(registry.all_patches(), getattr(args, "patch", None))
    try:
        interpreters = [interpreter.ask(python) for python in args.python or ()] or [interpreter.current()]
    except interpreter.InterpreterError as error:
        return _fail(args, str(error), EXIT_USAGE)
    if getattr(args, "all", False):
        return _status_all(args, interpreters, selected)
    try:
        target = locate.locate(args.path, selected, interpreters[0])
    except locate.BadPath as error:
        return _fail(args, str(error), EXIT_USAGE)
    except locate.NotFound as error:
        if args.command == STATUS:  # nothing installed is nothing to fix
            report.out(report.as_json(args.command, None, None, None) if args.json else f"{error}; nothing to patch")
            return EXIT_OK
        return _fail(args, f"{error}; install mmcv first, or pass --path or --python", EXIT_FAILED)
    if args.command == VERIFY:
        return _verify(args, target, interpreters[0], selected)
    patches = registry.select(selected, None, target.only_file)
    lock_timeout = getattr(args, "lock_timeout", arguments.DEFAULT_LOCK_TIMEOUT)
    options = commands.Options(
        force=getattr(args, "force", False),
        dry_run=getattr(args, "dry_run", False),
        lock_timeout=lock_timeout,
        on_wait=lambda directory, pid: report.err(report.waiting(directory, pid, lock_timeout)),
        pycache_prefixes=tuple(sorted({p for p in (getattr(sys, "pycache_prefix", None), interpreters[0].pycache_prefix) if p})),  # 3.8+
    )
    outcome = commands.run(args.command, target, patches, options)
    problems = report.errors(outcome)
    if args.json:
        report.out(report.as_json(args.command, target, outcome, "; ".join(problems) or None))
    else:
        report.out("\n".join(report.as_text(target, outcome)))
    report.print_errors(problems)
    return _exit_code([outcome], getattr(args, "check", False))


def _exit_code(outcomes: Sequence[commands.Outcome], check: bool) -> int:
    if not all(outcome.ok for outcome in outcomes):
        return EXIT_FAILED
    if check and any(r.state in (State.UNPATCHED, State.UNVERIFIED) for outcome in outcomes for r in outcome.results):
        return EXIT_UNPATCHED
    return EXIT_OK


def _status_all(args: argparse.Namespace, interpreters: Sequence[interpreter.Interpreter], patches: Sequence[Patch]) -> int:
    """status of every mmcv copy on each interpreter's sys.path, the imported one first."""
    copies = []
    for seen in interpreters:
        for target, imported in locate.every_copy(seen, patches):
            copies.append(report.Copy(seen.executable, imported, target, commands.run(STATUS, target, patches)))
    problems: List[str] = [line for copy in copies for line in report.errors(copy.outcome)]
    if args.json:
        report.out(report.copies_json(copies, "; ".join(problems) or None))
    elif copies:
        report.out("\n".join(report.copies_text(copies)))
    else:
        report.out(f"no mmcv on the sys.path of {', '.join(seen.executable for seen in interpreters)}; nothing to patch")
    report.print_errors(problems)
    return _exit_code([copy.outcome for copy in copies], args.check)


def _verify(args: argparse.Namespace, target: locate.Target, seen: interpreter.Interpreter, patches: Sequence[Patch]) -> int:
    """Runs each patch's AMP case on the real mmcv in a child of the target interpreter:
    0 if every one survives."""
    if not args.json:
        report.out(f"verify imports mmcv and torch in a child process of {seen.executable} (the only command that does)")
    ids = [patch.id for patch in patches]
    result = verify.run(seen.executable, ids, package_dir=target.package_dir if args.path else None, boxes=args.boxes, device=args.device)
    imported = result.get("mmcv_dir")
    if imported and os.path.realpath(imported) != os.path.realpath(target.package_dir):
        result["detail"] += f" (note: it imported mmcv from {imported}, not {target.package_dir})"
    failure = None if result["verdict"] == "survived" else f"verify: {result['verdict']}: {result['detail']}"
    if args.json:
        report.out(report.as_json(VERIFY, target, None, failure, verify=result))
    else:
        report.out("\n".join(report.as_text(target, None) + report.verify_text(result)))
    if failure is not None:
        report.print_errors([failure])
        return EXIT_FAILED
    return EXIT_OK


def _fail(args: argparse.Namespace, message: str, code: int) -> int:
    if args.json:
        report.out(report.as_json(args.command, None, None, message))
    report.print_errors([message])
    return code
