"""apply, status and revert on one located target: read, plan every patch, then write.

Every file is planned before any is written, and nothing is written unless every patch
succeeded and every new file compiles, so a failing command leaves all files as they were.
"""

import contextlib
import errno
import os
from typing import Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

from mmcv_patcher import gate, plan, registry, write
from mmcv_patcher.locate import Target
from mmcv_patcher.model import Command, Patch, Result, State
from mmcv_patcher.source import MAX_SOURCE_BYTES, Source, UndecodableSource, decode, read_source


class Outcome:
    """Everything a command did, for :mod:`mmcv_patcher.report` to render."""

    def __init__(self) -> None:
        self.results: List[Result] = []
        #: for ``--dry-run``: (path, text now, text it would write) of each file it would change
        self.previews: List[Tuple[str, str, str]] = []
        #: whether the run had to wait for another run's lock (also when it then gave up)
        self.waited = False
        #: what the user should know that is no patch's result (an owner that could not be kept)
        self.notes: List[str] = []
        #: a failure that is not one patch's (a file that cannot be written, say)
        self.error: Optional[str] = None

    @property
    def ok(self) -> bool:
        return self.error is None and all(result.ok for result in self.results)


class _FilePlan:
    """One file: what is there now, what it should become, and each patch's verdict."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.source: Optional[Source] = None
        self.new_text: Optional[str] = None
        #: per patch: its verdict (the state on disk), and the command's action about it
        self.verdicts: List[Tuple[Patch, plan.Verdict, plan.Verdict]] = []


class Options(NamedTuple):
    """How a command runs, beyond which command and which patches."""

    force: bool = False
    dry_run: bool = False
    #: seconds a writing run waits for another run's lock before giving up
    lock_timeout: float = 60.0
    #: told at once when the lock is held by another process (its id, when known)
    on_wait: Callable[[str, Optional[int]], None] = lambda directory, pid: None
    #: ``sys.pycache_prefix`` of the interpreters involved: bytecode can live there too
    pycache_prefixes: Tuple[str, ...] = ()


def run(command: Command, target: Target, patches: Sequence[Patch], options: Optional[Options] = None) -> Outcome:
    """Runs ``command`` for ``patches`` on ``target``. Bad files become failed results,
    never exceptions; files are written only when the whole command succeeds."""
    options = options or Options()
    writes = command is not Command.STATUS and not options.dry_run
    outcome = Outcome()
    groups = _by_file(target, patches)

    def on_wait(pid: Optional[int]) -> None:
        outcome.waited = True
        options.on_wait(target.package_dir, pid)

    with contextlib.ExitStack() as stack:
        if writes:
            try:
                stack.enter_context(write.locked(target.package_dir, options.lock_timeout, on_wait))
            except write.LockTimeout as error:
                outcome.error = f"{target.package_dir}: {error.strerror}; nothing was written (--lock-timeout waits longer)"
            except OSError as error:  # cannot even open the directory (another user's, mode 0711)
                outcome.error = _write_error(target.package_dir, error)
            if outcome.error is None:
                _remove_stale_temps(groups, options.pycache_prefixes)
        file_plans = [_plan_file(command, target, path, group, options.force) for path, group in groups.items()]
        succeeded = outcome.error is None and all(action.ok for file_plan in file_plans for _, _, action in file_plan.verdicts)
        written = False
        if succeeded and command is not Command.STATUS:
            outcome.error, written = _write_all(file_plans, outcome, package_dir=target.package_dir, options=options)
        results = {patch.id: _result(file_plan.path, patch, verdict, action, written=written, dry_run=options.dry_run) for file_plan in file_plans for patch, verdict, action in file_plan.verdicts}
        outcome.results = [results[patch.id] for patch in patches]  # in the order they apply
    return outcome


def _remove_stale_temps(groups: Dict[str, List[Patch]], pycache_prefixes: Tuple[str, ...]) -> None:
    """Temporary files a killed run left beside the files we write, in their ``__pycache__``
    or under a pycache prefix (we hold the lock, so no live run owns them); done by every
    writing run, even one with nothing to write."""
    for path in groups:
        for source in dict.fromkeys([path, os.path.realpath(path)]):
            for directory in [os.path.dirname(source)] + write.cache_directories(source, pycache_prefixes)[1:]:
                write.remove_stale_temps(directory)


def _by_file(target: Target, patches: Sequence[Patch]) -> Dict[str, List[Patch]]:
    """Patches grouped by the file they change, files and patches in registry order."""
    groups: Dict[str, List[Patch]] = {}
    for patch in patches:
        groups.setdefault(target.file_of(patch), []).append(patch)
    return groups


def _plan_file(command: Command, target: Target, path: str, patches: List[Patch], force: bool) -> _FilePlan:
    file_plan = _FilePlan(path)
    try:
        file_plan.source = decode(read_source(path))
    except (OSError, UndecodableSource) as error:
        for patch in patches:
            verdict = _unreadable(patch, target, path, error)
            file_plan.verdicts.append((patch, verdict, verdict))
        return file_plan
    source = file_plan.source
    # Our edits in a file are checked together (each marker remembers the file from before
    # all of them), so every registered patch of the file counts, selected or not.
    chosen = {patch.id for patch in patches}
    family = list(patches) + [p for p in registry.all_patches() if p.file == patches[0].file and p.id not in chosen]
    if command is Command.REVERT:  # each takes out its own edit, from the text the one before left
        text = source.text
        for patch in reversed(patches):
            release = target.release(patch)
            verdict = plan.assess(Source(text, source.encoding), patch, release, need_text=True, family=family)
            action = plan.plan_revert(verdict, patch, release, force=force)
            text = action.new_text if action.new_text is not None else text
            file_plan.verdicts.insert(0, (patch, verdict, action))
    else:  # all on the file as it is, in one pass; apply merges the changes
        every = plan.assess_all(source, [(patch, target.release(patch)) for patch in patches], need_text=command is not Command.STATUS, family=family)
        for patch, verdict in zip(patches, every):
            file_plan.verdicts.append((patch, verdict, plan.plan_apply(verdict, force=force) if command is Command.APPLY else verdict))
        text = source.text
        if command is Command.APPLY:
            changes = [(patch, action.new_text) for patch, _, action in file_plan.verdicts if action.new_text is not None]
            text = plan.combined(source, changes, family) if changes else text
    if text != source.text:
        file_plan.new_text = text
    return file_plan


def _unreadable(patch: Patch, target: Target, path: str, error: Exception) -> plan.Verdict:
    """The verdict for a file that is missing or cannot be read as Python source."""
    if isinstance(error, FileNotFoundError) and gate.gate(patch, target.release(patch))[0] is not gate.Gate.AFFECTED:
        return plan.Verdict(State.NOT_AFFECTED, None, f"{target.release(patch).describe()} has no {patch.file}")
    reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
    return plan.Verdict(State.DRIFTED, None, f"cannot read the file: {reason}; {target.release(patch).reinstall()}", ok=False)


def _write_all(file_plans: List[_FilePlan], outcome: Outcome, *, package_dir: str, options: Options) -> Tuple[Optional[str], bool]:
    """Writes (or diffs) every changed file; returns an error line or None, and whether
    the files were written.

    Before the first byte is written, every new text must compile, and every file and the
    ``__pycache__`` beside it must resolve inside the package (a symlink leaving it is refused
    unless ``--force``). A file that then fails to write (read-only, disk full) rolls the
    earlier ones back. What of a file's owner, group or mode could not be kept is noted.
    """
    changed = [fp for fp in file_plans if fp.new_text is not None and fp.source is not None]
    encoded = []
    for file_plan in changed:
        assert file_plan.source is not None and file_plan.new_text is not None
        data = file_plan.source.encode(file_plan.new_text)
        if len(data) > MAX_SOURCE_BYTES:  # what we write, a later revert or status must read
            return f"{file_plan.path}: the patched file would be over {MAX_SOURCE_BYTES // 2**20} MB; nothing was written", False
        try:  # as the interpreter will, unoptimized whatever our own -O: the code is kept for the .pyc
            code = compile(data, file_plan.path, "exec", dont_inherit=True, optimize=0)
        except (SyntaxError, ValueError) as error:
            return f"{file_plan.path}:{getattr(error, 'lineno', None) or '?'}: the patched file would not compile ({error}); nothing was written", False
        real = os.path.realpath(file_plan.path)
        caches = [os.path.join(os.path.dirname(each), "__pycache__") for each in dict.fromkeys([file_plan.path, real])]
        for place, resolved in [(file_plan.path, real)] + [(cache, os.path.realpath(cache)) for cache in caches if os.path.lexists(cache)]:
            problem = _outside_problem(place, resolved, package_dir, options.force)
            if problem is not None:
                return problem, False
        encoded.append((file_plan, real, data, code))
    if options.dry_run:
        outcome.previews.extend((fp.path, fp.source.text, fp.new_text) for fp, _, _, _ in encoded if fp.source and fp.new_text is not None)
        return None, False
    done: List[Tuple[_FilePlan, str]] = []
    notes = []
    for file_plan, real, data, code in encoded:
        try:
            notes.append(write.replace_file(real, data, import_path=file_plan.path, code=code, pycache_prefixes=options.pycache_prefixes))
        except OSError as error:
            for earlier, earlier_real in reversed(done):  # keep "all or nothing" across files
                assert earlier.source is not None
                with contextlib.suppress(OSError):
                    write.replace_file(earlier_real, earlier.source.encode(earlier.source.text), import_path=earlier.path, pycache_prefixes=options.pycache_prefixes)
            return _write_error(real, error), False
        done.append((file_plan, real))
    outcome.notes.extend(note for note in notes if note is not None)
    return None, True


def _outside_problem(path: str, real: str, package_dir: str, force: bool) -> Optional[str]:
    """Refuses to write through a symlink (``path`` resolving to ``real``) that leaves the
    package (``--force`` allows it)."""
    package = os.path.realpath(package_dir)
    if force or real == package or real.startswith(package.rstrip(os.sep) + os.sep):
        return None
    return f"{path}: resolves to {real}, outside the mmcv package {package}; refusing to write there (--force writes through it)"


def _write_error(path: str, error: OSError) -> str:
    """One line for a failed write; the file (and every other) was left as it was."""
    where = error.filename or path
    if isinstance(error, write.StaleBytecode):
        return f"cannot remove stale bytecode {where}: {error.strerror}; the source was left as it was"
    if error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"cannot write {where}: read-only; re-run as the owner or use --python/--path on a writable copy"
    return f"cannot write {where}: {error.strerror or error}; the file was left as it was"


def _result(path: str, patch: Patch, verdict: plan.Verdict, action: plan.Verdict, *, written: bool, dry_run: bool) -> Result:
    """What a user sees for one patch: the action taken, or, when its change was not
    written (a dry run, or a failure elsewhere), the state still on disk."""
    would_change = action is not verdict and action.new_text is not None
    if would_change and not written:
        why = "--dry-run" if dry_run else "not written, the command failed"
        return Result(patch.id, verdict.state, path, verdict.line, f"{why}: would become {action.state}")
    return Result(patch.id, action.state, path, action.line, action.message, changed=would_change, ok=action.ok)
