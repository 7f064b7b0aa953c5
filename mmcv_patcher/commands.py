"""``status``, ``apply`` and ``revert`` on one located target: read, plan every patch, then write.

Every file is planned before any is written, and nothing is written unless every patch
succeeded and every new file compiles, so a failing command leaves all files as they were.
"""

import contextlib
import os
from typing import Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

from mmcv_patcher import gate, plan, registry, report, write
from mmcv_patcher.locate import Target
from mmcv_patcher.model import Outcome, Patch, Result, State
from mmcv_patcher.source import MAX_SOURCE_BYTES, Source, UndecodableSource, decode, read_source


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


def status(target: Target, patches: Sequence[Patch]) -> Outcome:
    """Each patch's state in the files as they are; reads, never writes, never locks."""
    file_plans = [_plan_file(target, path, group, _as_they_are, force=False) for path, group in _by_file(target, patches).items()]
    return _outcome(file_plans, patches, Outcome(), written=False, dry_run=False)


def apply(target: Target, patches: Sequence[Patch], options: Options) -> Outcome:
    """Patches every file whose patches all succeed; writes nothing unless every one does."""
    return _change(target, patches, options, _applied)


def revert(target: Target, patches: Sequence[Patch], options: Options) -> Outcome:
    """Takes our edits out of every file; writes nothing unless every patch succeeds."""
    return _change(target, patches, options, _reverted)


def _change(target: Target, patches: Sequence[Patch], options: Options, planner: "_Planner") -> Outcome:
    """``apply`` or ``revert``: under the package's lock (unless a dry run), leftovers of a
    killed run removed, every file planned, then all written or none."""
    outcome = Outcome()
    groups = _by_file(target, patches)

    def on_wait(pid: Optional[int]) -> None:
        outcome.waited = True
        options.on_wait(target.package_dir, pid)

    with contextlib.ExitStack() as stack:
        if not options.dry_run:
            try:
                stack.enter_context(write.locked(target.package_dir, options.lock_timeout, on_wait))
            except write.LockTimeout as error:
                outcome.error = f"{target.package_dir}: {error.strerror}; nothing was written (--lock-timeout waits longer)"
            except OSError as error:  # cannot even open the directory (another user's, mode 0711)
                outcome.error = report.write_error(target.package_dir, error)
            if outcome.error is None:
                _remove_stale_temps(groups, options.pycache_prefixes)
        file_plans = [_plan_file(target, path, group, planner, force=options.force) for path, group in groups.items()]
        written = False
        if outcome.error is None and all(action.ok for file_plan in file_plans for _, _, action in file_plan.verdicts):
            outcome.error, written = _write_all(file_plans, outcome, package_dir=target.package_dir, options=options)
        return _outcome(file_plans, patches, outcome, written=written, dry_run=options.dry_run)


def _outcome(file_plans: List[_FilePlan], patches: Sequence[Patch], outcome: Outcome, *, written: bool, dry_run: bool) -> Outcome:
    """``outcome`` with one result per patch, in the order they apply."""
    results = {patch.id: _result(file_plan.path, patch, verdict, action, written=written, dry_run=dry_run) for file_plan in file_plans for patch, verdict, action in file_plan.verdicts}
    outcome.results = [results[patch.id] for patch in patches]
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


#: How a command plans one readable file: (its source, the target, its patches, the file's
#: family of patches, --force) -> per patch (patch, verdict, action), and the new text.
_Planner = Callable[[Source, Target, List[Patch], List[Patch], bool], Tuple[List[Tuple[Patch, plan.Verdict, plan.Verdict]], str]]


def _plan_file(target: Target, path: str, patches: List[Patch], planner: _Planner, *, force: bool) -> _FilePlan:
    """One file read and planned; a file that cannot be read gets a verdict for each patch."""
    file_plan = _FilePlan(path)
    try:
        source = decode(read_source(path))
    except (OSError, UndecodableSource) as error:
        for patch in patches:
            verdict = _unreadable(patch, target, path, error)
            file_plan.verdicts.append((patch, verdict, verdict))
        return file_plan
    # Our edits in a file are checked together (each marker remembers the file from before
    # all of them), so every registered patch of the file counts, selected or not.
    chosen = {patch.id for patch in patches}
    family = list(patches) + [p for p in registry.all_patches() if p.file == patches[0].file and p.id not in chosen]
    file_plan.source = source
    file_plan.verdicts, text = planner(source, target, patches, family, force)
    if text != source.text:
        file_plan.new_text = text
    return file_plan


def _as_they_are(source: Source, target: Target, patches: List[Patch], family: List[Patch], force: bool) -> Tuple[List[Tuple[Patch, plan.Verdict, plan.Verdict]], str]:
    """``status``: every patch judged on the file as it is, in one pass; no text needed."""
    every = plan.assess_all(source, [(patch, target.release(patch)) for patch in patches], need_text=False, family=family)
    return [(patch, verdict, verdict) for patch, verdict in zip(patches, every)], source.text


def _applied(source: Source, target: Target, patches: List[Patch], family: List[Patch], force: bool) -> Tuple[List[Tuple[Patch, plan.Verdict, plan.Verdict]], str]:
    """``apply``: every patch judged on the file as it is, in one pass; their changes merged."""
    every = plan.assess_all(source, [(patch, target.release(patch)) for patch in patches], need_text=True, family=family)
    verdicts = [(patch, verdict, plan.plan_apply(verdict, force=force)) for patch, verdict in zip(patches, every)]
    return verdicts, plan.combined(source, [action for _, _, action in verdicts])


def _reverted(source: Source, target: Target, patches: List[Patch], family: List[Patch], force: bool) -> Tuple[List[Tuple[Patch, plan.Verdict, plan.Verdict]], str]:
    """``revert``: each patch takes out its own edit from the text the one after it left."""
    text = source.text
    verdicts: List[Tuple[Patch, plan.Verdict, plan.Verdict]] = []
    for patch in reversed(patches):
        release = target.release(patch)
        verdict = plan.assess(Source(text, source.encoding), patch, release, need_text=True, family=family)
        action = plan.plan_revert(verdict, patch, release, force=force)
        text = action.new_text if action.new_text is not None else text
        verdicts.insert(0, (patch, verdict, action))
    return verdicts, text


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
            return report.write_error(real, error), False
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


def _result(path: str, patch: Patch, verdict: plan.Verdict, action: plan.Verdict, *, written: bool, dry_run: bool) -> Result:
    """What a user sees for one patch: the action taken, or, when its change was not
    written (a dry run, or a failure elsewhere), the state still on disk."""
    would_change = action is not verdict and action.new_text is not None
    if would_change and not written:
        why = "--dry-run" if dry_run else "not written, the command failed"
        return Result(patch.id, verdict.state, path, verdict.line, f"{why}: would become {action.state}")
    return Result(patch.id, action.state, path, action.line, action.message, changed=would_change, ok=action.ok)
