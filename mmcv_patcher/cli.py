"""The command line's edge: a request in, results on stdout, an exit code out.

The flow runs one way: :mod:`arguments` reads the command line into a request;
:mod:`interpreter` and :mod:`locate` find the mmcv package and its release; :mod:`registry`
picks the patches; :mod:`commands` plans each file (:mod:`plan`, pure) and writes
(:mod:`write`); :mod:`report` renders what happened as lines or as one JSON object.

Each fact is said once: results go to stdout, and stderr carries only what stdout does not
(a usage line, a failure that is no patch's result); with ``--json``, stdout alone. Errors are
values until here, where they become an exit code: 0 done or nothing to do, 1 failure with
files untouched, 2 usage, 3 ``status --check`` found an affected install that is not patched.
"""

import gc
import os
import signal
import sys
from types import FrameType
from typing import List, NoReturn, Optional, Sequence

from mmcv_patcher import arguments, commands, interpreter, locate, registry, report, verify
from mmcv_patcher.arguments import Request
from mmcv_patcher.model import Command, Failure, Outcome, Patch, Problem, State

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNPATCHED = 0, 1, 2, 3
#: A run stopped by Ctrl-C, or by SIGTERM (``docker stop``, a cancelled CI job, ``timeout``),
#: exits as a shell reports a process ended by that signal.
EXIT_INTERRUPTED, EXIT_TERMINATED = 130, 143
_WHOLE = "every file is whole, as it was or as this run finished it: `status` says which"
INTERRUPTED = Failure(Problem.INTERRUPTED, None, f"interrupted (Ctrl-C); {_WHOLE}")
TERMINATED = Failure(Problem.INTERRUPTED, None, f"terminated (SIGTERM); {_WHOLE}")


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the run is, so that it stops as Ctrl-C stops it: every file it
    wrote put back, its temporary files and its lock file removed."""


def _terminate(signum: int, frame: Optional[FrameType]) -> None:
    raise Terminated()


def run() -> NoReturn:
    """The ``mmcv-patcher`` script and ``python -m mmcv_patcher``: :func:`main`, then exit.

    SIGTERM stops a run as Ctrl-C does. Both are held back from the entry point's first line
    (:mod:`mmcv_patcher.__main__`) until :func:`main` can answer them, so one that comes while
    the tool starts is answered in one line too. The process ends here, so everything it made
    (LibCST's modules and trees among them) is frozen first (:func:`gc.freeze`): the
    interpreter's last garbage collection then skips it instead of walking it all. Called
    in-process, :func:`main` freezes nothing.
    """
    signal.signal(signal.SIGTERM, _terminate)
    try:
        code = main()
    except Terminated:  # after main said what it did, before the exit
        code = EXIT_TERMINATED
    except KeyboardInterrupt:
        code = EXIT_INTERRUPTED
    gc.freeze()
    sys.exit(code)


def deliver_held_signals() -> None:
    """Lets SIGINT and SIGTERM in, as the entry point held them back; one that came meanwhile
    is raised here."""
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Runs one command line; returns its exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    report.safe_streams()
    report.begin()
    try:
        deliver_held_signals()
        request = arguments.parse(argv)
    except KeyboardInterrupt as stopped:
        return _interrupted("--json" in argv, stopped)
    except arguments.UsageError as error:
        failure = Failure(Problem.USAGE, None, error.message)
        if "--json" in argv:
            report.out(report.as_json(error.command, failure))
        else:
            report.err(error.usage.rstrip("\n"))
            report.print_error(failure)
        return EXIT_USAGE
    try:
        return _run(request)
    except KeyboardInterrupt as stopped:
        return _interrupted(request.json, stopped)
    except Exception as error:  # the promise: one line, never a traceback
        return _fail(
            request,
            Failure(
                Problem.INTERNAL,
                None,
                f"internal error: {type(error).__name__}: {error}; please report it with --json output",
            ),
            EXIT_FAILED,
        )


def _run(request: Request) -> int:
    """The command, top to bottom: which interpreter, which mmcv, which patches; then the
    command's one function (:mod:`commands`, or verify's child), and what it did, said."""
    patches = registry.select(registry.all_patches(), request.patch_ids)
    try:
        interpreters = [interpreter.ask(python) for python in request.pythons] or [interpreter.current()]
    except interpreter.InterpreterError as error:
        return _fail(request, Failure(Problem.INTERPRETER, None, str(error)), EXIT_USAGE)
    if request.all:
        return _status_all(request, interpreters, patches)
    try:
        located = locate.locate_all(request.path, patches, interpreters[0])
    except locate.BadPath as error:
        if not request.json:
            report.err(request.usage.rstrip("\n"))
        return _fail(request, Failure(Problem.USAGE, None, str(error)), EXIT_USAGE)
    except locate.NotFound as error:
        if request.command is Command.STATUS:  # nothing installed is nothing to fix
            report.out(report.as_json(request.command, None) if request.json else f"{error}; nothing to patch")
            return EXIT_OK
        return _fail(
            request,
            Failure(Problem.NO_MMCV, None, f"{error}; install mmcv first, or pass --path or --python"),
            EXIT_FAILED,
        )
    targets = located.targets
    patches = tuple(
        patch
        for target in targets
        for patch in registry.select(patches, None, target.only_file)
        if patch.package == target.package
    )
    if request.command is Command.VERIFY:
        return _verify(request, targets, interpreters[0], patches)
    if request.command is Command.STATUS:
        outcome = commands.status(targets, patches)
    elif request.command is Command.APPLY:
        outcome = commands.apply(targets, patches, _options(request, interpreters[0]))
    else:
        outcome = commands.revert(targets, patches, _options(request, interpreters[0]))
    outcome.notes[:0] = [f"{absent}; nothing to patch there" for absent in located.absent]
    if request.json:
        report.out(report.as_json(request.command, outcome.error, targets=targets, outcome=outcome))
    else:
        report.out("\n".join(report.as_text(targets, outcome)))
        if outcome.error:
            report.print_error(outcome.error)
    return _exit_code([outcome], request.check)


def _options(request: Request, python: interpreter.Interpreter) -> commands.Options:
    """How ``apply`` and ``revert`` run: the request's options, the lock's wait told on
    stderr (in text; ``--json`` says ``waited``), bytecode prefixes of both interpreters."""

    def on_wait(directory: str, pid: Optional[int]) -> None:
        if not request.json:
            report.err(report.waiting(directory, pid, request.lock_timeout))

    prefixes = {prefix for prefix in (getattr(sys, "pycache_prefix", None), python.pycache_prefix) if prefix}  # 3.8+
    return commands.Options(
        force=request.force,
        dry_run=request.dry_run,
        lock_timeout=request.lock_timeout,
        on_wait=on_wait,
        pycache_prefixes=tuple(sorted(prefixes)),
    )


def _exit_code(outcomes: Sequence[Outcome], check: bool) -> int:
    if not all(outcome.ok for outcome in outcomes):
        return EXIT_FAILED
    if check and any(r.state in (State.UNPATCHED, State.UNVERIFIED) for outcome in outcomes for r in outcome.results):
        return EXIT_UNPATCHED
    return EXIT_OK


def _status_all(request: Request, interpreters: Sequence[interpreter.Interpreter], patches: Sequence[Patch]) -> int:
    """``status`` of every copy of each package with patches on each interpreter's sys.path,
    the imported one first; an interpreter with none of a package is listed too. The same
    interpreter asked twice counts once."""
    copies: List[report.Copy] = []
    for each in dict.fromkeys(interpreters):  # asked twice (two names of one python), listed once
        for package in dict.fromkeys(patch.package for patch in patches):
            chosen = [patch for patch in patches if patch.package == package]
            found = locate.every_copy(each, chosen)
            copies.extend(
                report.Copy(each.executable, package, imported, target, commands.status([target], chosen))
                for target, imported in found
            )
            if not found:
                why = each.found(package).problem or f"no {package} on the sys.path of {each.executable}"
                copies.append(report.Copy(each.executable, package, False, None, None, why))
    problems = [copy.outcome.error for copy in copies if copy.outcome is not None and copy.outcome.error]
    if request.json:
        report.out(report.copies_json(copies, problems[0] if problems else None))
    else:
        report.out("\n".join(report.copies_text(copies)))
        for problem in problems:
            report.print_error(problem)
    return _exit_code([copy.outcome for copy in copies if copy.outcome is not None], request.check)


def _verify(
    request: Request,
    targets: Sequence[locate.Target],
    python: interpreter.Interpreter,
    patches: Sequence[Patch],
) -> int:
    """Each patch's state, then each patch's AMP case run on the real packages in a child of
    the target interpreter: 0 if every case survives."""
    outcome = commands.status(targets, patches)
    if not request.json:
        report.out("\n".join(report.as_text(targets, outcome)))
        report.out(
            f"verify imports mmcv and torch in a child process of {python.executable} (the only command that does)"
        )
    target = next((each for each in targets if each.package == "mmcv"), None)
    result = verify.run(
        python.executable,
        patches,
        package_dir=target.package_dir if request.path and target else None,
        boxes=request.boxes,
        device=request.device,
        dtypes=request.dtypes,
    )
    imported = result.get("mmcv_dir")
    if imported and target and os.path.realpath(imported) != os.path.realpath(target.package_dir):
        result["detail"] += f" (note: it imported mmcv from {imported}, not {target.package_dir})"
    failure = (
        None
        if result["verdict"] == "survived"
        else Failure(Problem.VERIFY_FAILED, None, f"verify: {result['verdict']}: {result['detail']}")
    )
    if request.json:
        report.out(report.as_json(Command.VERIFY, failure, targets=targets, outcome=outcome, verify=result))
    else:
        report.out("\n".join(report.verify_text(result)))
    return EXIT_OK if failure is None else EXIT_FAILED


def _interrupted(json: bool, stopped: KeyboardInterrupt) -> int:
    """Ctrl-C or SIGTERM: one line on stderr, or with ``--json`` one JSON object, unless the
    run had already printed its one; exit 130 or 143. Every file is whole (a write rolls
    back, see :mod:`commands`)."""
    failure, code = (
        (TERMINATED, EXIT_TERMINATED) if isinstance(stopped, Terminated) else (INTERRUPTED, EXIT_INTERRUPTED)
    )
    if not json:
        report.print_error(failure)
    elif not report.said():
        report.out(report.as_json(None, failure))
    return code


def _fail(request: Request, failure: Failure, code: int) -> int:
    """A failure that is no patch's result: one JSON object on stdout, or one line on stderr."""
    if request.json:
        report.out(report.as_json(request.command, failure))
    else:
        report.print_error(failure)
    return code
