"""The command line: parse arguments, then locate -> registry -> commands -> report.

Errors are values until here; this edge turns them into one line and an exit code
(0 done or nothing to do, 1 failure with files untouched, 2 usage, 3 ``status --check``
found an affected install that is not patched).
"""

from __future__ import annotations

import os
import sys

from mmcv_patcher import arguments, commands, interpreter, locate, registry, report, verify
from mmcv_patcher.model import Patch, State

TYPE_CHECKING = False
if TYPE_CHECKING:
    from types import SimpleNamespace
    from typing import Optional, Sequence

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNPATCHED = 0, 1, 2, 3


def main(argv: Optional[Sequence[str]] = None) -> int:
    try:
        return _main(argv)
    except BrokenPipeError:  # output piped into `head` and the like: not an error of ours
        sys.stdout = open(os.devnull, "w")
        return EXIT_OK


def _main(argv: Optional[Sequence[str]]) -> int:
    args = arguments.parse(sys.argv[1:] if argv is None else argv)
    scan_all = getattr(args, "all", False)
    if len(args.python or ()) > 1 and not scan_all:
        arguments.usage_error("--python can be given more than once only with status --all")
    if scan_all and args.path:
        arguments.usage_error("status --all scans interpreters; it does not take --path")
    try:
        selected = registry.select(registry.all_patches(), getattr(args, "patch", None))
    except registry.UnknownPatch as error:
        arguments.usage_error(str(error))
    try:
        interpreters = [interpreter.ask(python) for python in args.python or ()] or [interpreter.current()]
    except interpreter.InterpreterError as error:
        return _fail(args, str(error), EXIT_USAGE)
    if scan_all:
        return _status_all(args, interpreters, selected)
    try:
        target = locate.locate(args.path, selected, interpreters[0])
    except locate.BadPath as error:
        return _fail(args, str(error), EXIT_USAGE)
    except locate.NotFound as error:
        if args.command == commands.STATUS:  # nothing installed is nothing to fix
            print(report.as_json(args.command, None, None, None) if args.json else f"{error}; nothing to patch")
            return EXIT_OK
        return _fail(args, f"{error}; install mmcv first, or pass --path or --python", EXIT_FAILED)
    if args.command == verify.VERIFY:
        return _verify(args, target, interpreters[0])
    patches = registry.select(selected, None, target.only_file)
    outcome = commands.run(args.command, target, patches, force=args.force, dry_run=getattr(args, "dry_run", False))
    problems = report.errors(outcome)
    _emit(args, target, outcome, "; ".join(problems) or None)
    _print_errors(problems)
    return _exit_code([outcome], getattr(args, "check", False))


def _exit_code(outcomes: Sequence[commands.Outcome], check: bool) -> int:
    if not all(outcome.ok for outcome in outcomes):
        return EXIT_FAILED
    if check and any(r.state in (State.UNPATCHED, State.UNVERIFIED) for outcome in outcomes for r in outcome.results):
        return EXIT_UNPATCHED
    return EXIT_OK


def _print_errors(problems: Sequence[str]) -> None:
    for line in problems:
        print(f"mmcv-patcher: error: {line}", file=sys.stderr)


def _status_all(args: SimpleNamespace, interpreters: Sequence[interpreter.Interpreter], patches: Sequence[Patch]) -> int:
    """status of every mmcv copy on each interpreter's sys.path, the imported one first."""
    copies = []
    for seen in interpreters:
        for target, imported in locate.every_copy(seen, patches):
            copies.append(report.Copy(seen.executable, imported, target, commands.run(commands.STATUS, target, patches)))
    problems = [line for copy in copies for line in report.errors(copy.outcome)]
    if args.json:
        print(report.copies_json(copies, "; ".join(problems) or None))
    elif copies:
        print("\n".join(report.copies_text(copies)))
    else:
        print(f"no mmcv on the sys.path of {', '.join(seen.executable for seen in interpreters)}; nothing to patch")
    _print_errors(problems)
    return _exit_code([copy.outcome for copy in copies], args.check)


def _verify(args: SimpleNamespace, target: locate.Target, seen: interpreter.Interpreter) -> int:
    """Runs the real batched_nms in a child of the target interpreter: 0 if it survives."""
    if not args.json:
        print(f"verify imports mmcv and torch in a child process of {seen.executable} (the only command that does)", flush=True)
    result = verify.run(seen.executable, package_dir=target.package_dir if args.path else None, boxes=args.boxes, device=args.device)
    imported = result.get("mmcv_dir")
    if imported and os.path.realpath(imported) != os.path.realpath(target.package_dir):
        result["detail"] += f" (note: it imported mmcv from {imported}, not {target.package_dir})"
    if args.json:
        print(report.as_json(verify.VERIFY, target, None, None if result["verdict"] == "survived" else result["detail"], verify=result))
    else:
        print("\n".join(report.as_text(target, None) + report.verify_text(result)))
    if result["verdict"] != "survived":
        print(f"mmcv-patcher: error: verify: {result['verdict']}: {result['detail']}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def _emit(args: SimpleNamespace, target: locate.Target, outcome: commands.Outcome, error: Optional[str]) -> None:
    if args.json:
        print(report.as_json(args.command, target, outcome, error))
    else:
        print("\n".join(report.as_text(target, outcome)))


def _fail(args: SimpleNamespace, message: str, code: int) -> int:
    if args.json:
        print(report.as_json(args.command, None, None, message))
    print(f"mmcv-patcher: error: {message}", file=sys.stderr)
    return code
