"""The command line: parse arguments, then locate -> registry -> commands -> report.

Errors are values until here; this edge turns them into one line and an exit code
(0 done or nothing to do, 1 failure with files untouched, 2 usage, 3 ``status --check``
found an affected install that is not patched).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Optional, Sequence

from mmcv_patcher import __version__, commands, interpreter, locate, registry, report, verify
from mmcv_patcher.model import Patch, State

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNPATCHED = 0, 1, 2, 3
VERIFY = "verify"


def _parser() -> argparse.ArgumentParser:
    where = argparse.ArgumentParser(add_help=False)  # every command: which mmcv, what output
    where.add_argument("--path", help="site-packages or a checkout containing mmcv/, the mmcv package directory, or the file to patch (default: the mmcv this interpreter imports)")
    where.add_argument("--python", action="append", metavar="PYTHON", help="work on the mmcv another interpreter (CPython 3.6+) imports; the patcher itself runs here")
    where.add_argument("--json", action="store_true", help="print one JSON object instead of lines")
    common = argparse.ArgumentParser(add_help=False, parents=[where])  # the commands that run patches
    common.add_argument("--patch", action="append", metavar="ID", help="only this patch (repeatable; default: all)")
    common.add_argument("--force", action="store_true", help="apply: patch a release outside the known range when the statement is there once; revert: remove our edit from a file edited since")
    parser = argparse.ArgumentParser(prog="mmcv-patcher", description="Fix mmcv's batched_nms crash under mixed precision, in place and reversibly.")
    parser.add_argument("--version", action="version", version=f"mmcv-patcher {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="{apply,status,revert,verify}")
    sub.required = True
    apply = sub.add_parser(commands.APPLY, parents=[common], help="patch the installed mmcv")
    apply.add_argument("--dry-run", action="store_true", help="print a unified diff; write nothing")
    status = sub.add_parser(commands.STATUS, parents=[common], help="show each patch's state, file and line")
    status.add_argument("--check", action="store_true", help="exit 3 when an affected install is not patched")
    status.add_argument("--all", action="store_true", help="every mmcv copy on the sys.path of each --python (default: this interpreter)")
    revert = sub.add_parser(commands.REVERT, parents=[common], help="restore the original file byte for byte")
    revert.add_argument("--dry-run", action="store_true", help="print a unified diff; write nothing")
    proof = sub.add_parser(VERIFY, parents=[where], help="run batched_nms with AMP-style inputs in a child process (imports mmcv and torch)")
    proof.add_argument("--boxes", type=int, default=verify.DEFAULT_BOXES, help=f"boxes to give batched_nms (default {verify.DEFAULT_BOXES}; splitting starts at {verify.DEFAULT_SPLIT_THR})")
    proof.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    try:
        return _main(argv)
    except BrokenPipeError:  # output piped into `head` and the like: not an error of ours
        sys.stdout = open(os.devnull, "w")
        return EXIT_OK


def _main(argv: Optional[Sequence[str]]) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    scan_all = getattr(args, "all", False)
    if len(args.python or ()) > 1 and not scan_all:
        parser.error("--python can be given more than once only with status --all")
    if scan_all and args.path:
        parser.error("status --all scans interpreters; it does not take --path")
    try:
        selected = registry.select(registry.all_patches(), getattr(args, "patch", None))
    except registry.UnknownPatch as error:
        parser.error(str(error))
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
    if args.command == VERIFY:
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


def _status_all(args: argparse.Namespace, interpreters: Sequence[interpreter.Interpreter], patches: Sequence[Patch]) -> int:
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


def _verify(args: argparse.Namespace, target: locate.Target, seen: interpreter.Interpreter) -> int:
    """Runs the real batched_nms in a child of the target interpreter: 0 if it survives."""
    if not args.json:
        print(f"verify imports mmcv and torch in a child process of {seen.executable} (the only command that does)", flush=True)
    result = verify.run(seen.executable, package_dir=target.package_dir if args.path else None, boxes=args.boxes, device=args.device)
    imported = result.get("mmcv_dir")
    if imported and Path(imported).resolve() != target.package_dir.resolve():
        result["detail"] += f" (note: it imported mmcv from {imported}, not {target.package_dir})"
    if args.json:
        print(report.as_json(VERIFY, target, None, None if result["verdict"] == "survived" else result["detail"], verify=result))
    else:
        print("\n".join(report.as_text(target, None) + report.verify_text(result)))
    if result["verdict"] != "survived":
        print(f"mmcv-patcher: error: verify: {result['verdict']}: {result['detail']}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def _emit(args: argparse.Namespace, target: locate.Target, outcome: commands.Outcome, error: Optional[str]) -> None:
    if args.json:
        print(report.as_json(args.command, target, outcome, error))
    else:
        print("\n".join(report.as_text(target, outcome)))


def _fail(args: argparse.Namespace, message: str, code: int) -> int:
    if args.json:
        print(report.as_json(args.command, None, None, message))
    print(f"mmcv-patcher: error: {message}", file=sys.stderr)
    return code
