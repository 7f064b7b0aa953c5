"""The command line: parse arguments, then locate -> registry -> commands -> report.

Errors are values until here; this edge turns them into one line and an exit code
(0 done or nothing to do, 1 failure with files untouched, 2 usage, 3 ``status --check``
found an affected install that is not patched).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import List, Optional, Sequence

from mmcv_patcher import __version__, commands, locate, registry, report, verify
from mmcv_patcher.model import State

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNPATCHED = 0, 1, 2, 3
VERIFY = "verify"


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--path", help="site-packages or a checkout containing mmcv/, the mmcv package directory, or the file to patch (default: the mmcv this interpreter imports)")
    common.add_argument("--patch", action="append", metavar="ID", help="only this patch (repeatable; default: all)")
    common.add_argument("--json", action="store_true", help="print one JSON object instead of lines")
    common.add_argument("--force", action="store_true", help="apply: patch a release outside the known range when the statement is there once; revert: remove our edit from a file edited since")
    parser = argparse.ArgumentParser(prog="mmcv-patcher", description="Fix mmcv's batched_nms crash under mixed precision, in place and reversibly.")
    parser.add_argument("--version", action="version", version=f"mmcv-patcher {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="{apply,status,revert,verify}")
    sub.required = True
    apply = sub.add_parser(commands.APPLY, parents=[common], help="patch the installed mmcv")
    apply.add_argument("--dry-run", action="store_true", help="print a unified diff; write nothing")
    status = sub.add_parser(commands.STATUS, parents=[common], help="show each patch's state, file and line")
    status.add_argument("--check", action="store_true", help="exit 3 when an affected install is not patched")
    revert = sub.add_parser(commands.REVERT, parents=[common], help="restore the original file byte for byte")
    revert.add_argument("--dry-run", action="store_true", help="print a unified diff; write nothing")
    check = sub.add_parser(VERIFY, parents=[common], help="run batched_nms with AMP-style inputs in a child process (imports mmcv and torch)")
    check.add_argument("--boxes", type=int, default=verify.DEFAULT_BOXES, help=f"boxes to give batched_nms (default {verify.DEFAULT_BOXES}; splitting starts at {verify.DEFAULT_SPLIT_THR})")
    check.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    every = registry.all_patches()
    try:
        target = locate.locate(args.path, registry.select(every, args.patch))
        patches = registry.select(every, args.patch, target.only_file)
    except registry.UnknownPatch as error:
        parser.error(str(error))
    except locate.BadPath as error:
        return _fail(args, None, str(error), EXIT_USAGE)
    except locate.NotFound as error:
        if args.command == commands.STATUS:
            _emit(args, None, None, f"{error}; nothing to patch")
            return EXIT_OK
        return _fail(args, None, f"{error}; install mmcv first, or pass --path or --python", EXIT_FAILED)
    if args.command == VERIFY:
        return _verify(args, target)
    outcome = commands.run(args.command, target, patches, force=args.force, dry_run=getattr(args, "dry_run", False))
    problems = report.errors(outcome)
    _emit(args, target, outcome, "; ".join(problems) or None)
    for line in problems:
        print(f"mmcv-patcher: error: {line}", file=sys.stderr)
    if not outcome.ok:
        return EXIT_FAILED
    if getattr(args, "check", False) and any(r.state in (State.UNPATCHED, State.UNVERIFIED) for r in outcome.results):
        return EXIT_UNPATCHED
    return EXIT_OK


def _verify(args: argparse.Namespace, target: locate.Target) -> int:
    """Runs the real batched_nms in a child of this interpreter: 0 if it survives."""
    if not args.json:
        print(f"verify imports mmcv and torch in a child process of {sys.executable} (the only command that does)", flush=True)
    result = verify.run(sys.executable, package_dir=target.package_dir if args.path else None, boxes=args.boxes, device=args.device)
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


def _emit(args: argparse.Namespace, target: Optional[locate.Target], outcome: Optional[commands.Outcome], error: Optional[str]) -> None:
    if args.json:
        print(report.as_json(args.command, target, outcome, error))
        return
    lines: List[str] = report.as_text(target, outcome)
    if outcome is None and error:
        lines.append(error)
    print("\n".join(lines))


def _fail(args: argparse.Namespace, target: Optional[locate.Target], message: str, code: int) -> int:
    if args.json:
        print(report.as_json(args.command, target, None, message))
    print(f"mmcv-patcher: error: {message}", file=sys.stderr)
    return code
