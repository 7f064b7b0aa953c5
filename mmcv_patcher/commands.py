"""``status``, ``apply`` and ``revert`` on the located targets (a package each), each one
function read top to bottom: (lock,) read every file, plan every patch, check, write all or
nothing, the results.

Every file of every target is planned before any is written, and nothing is written unless
every patch succeeded and every new file compiles, so a failing command leaves all files of
all packages as they were.
"""

import contextlib
import errno
import os
import shlex
from typing import Callable, Dict, Iterator, List, NamedTuple, Optional, Sequence, Tuple

from mmcv_patcher import plan, ranges, registry, write
from mmcv_patcher.locate import Target
from mmcv_patcher.model import Failure, Outcome, Patch, Problem, Result, State
from mmcv_patcher.plan import Finding, Planned
from mmcv_patcher.source import MAX_SOURCE_BYTES, Source, UndecodableSource, decode, read_source


class Options(NamedTuple):
    """How a writing command runs, beyond which command and which patches."""

    force: bool = False
    dry_run: bool = False
    #: seconds a writing run waits for another run's lock before giving up
    lock_timeout: float = 60.0
    #: told at once when the lock is held by another process (its id, when known)
    on_wait: Callable[[str, Optional[int]], None] = lambda directory, pid: None
    #: ``sys.pycache_prefix`` of the interpreters involved: bytecode can live there too
    pycache_prefixes: Tuple[str, ...] = ()


#: The files a command works on: path -> its package's target and its patches.
Groups = Dict[str, Tuple[Target, List[Patch]]]


class _File:
    """One file of a target: its source as read (None when unreadable), each of its patches
    as planned, and the text the command would write (None: no change)."""

    def __init__(
        self,
        path: str,
        target: Target,
        source: Optional[Source],
        planned: List[Planned],
        new_text: Optional[str] = None,
    ) -> None:
        self.path = path
        self.target = target
        self.source = source
        self.planned = planned
        self.new_text = new_text if source is not None and new_text != source.text else None


def status(targets: Sequence[Target], patches: Sequence[Patch]) -> Outcome:
    """Each patch's state in the files as they are; reads, never writes, never locks."""
    files, readable = _read_all(_by_file(targets, patches))
    for path, target, group, source in readable:
        findings = plan.assess_all(
            source, [(patch, target.release) for patch in group], need_text=False, family=_family(group)
        )
        files.append(
            _File(
                path,
                target,
                source,
                [Planned(patch, finding, plan.plan_status(finding)) for patch, finding in zip(group, findings)],
            )
        )
    return _results(Outcome(), files, patches, written=False, dry_run=False)


def apply(targets: Sequence[Target], patches: Sequence[Patch], options: Options) -> Outcome:
    """Patches every file, each patch judged on the file as it is and their changes merged;
    writes nothing unless every patch succeeds."""
    outcome = Outcome()
    groups = _by_file(targets, patches)
    with _locked(targets, groups, options, outcome):
        files, readable = _read_all(groups)
        for path, target, group, source in readable:
            findings = plan.assess_all(
                source, [(patch, target.release) for patch in group], need_text=True, family=_family(group)
            )
            planned = [
                Planned(patch, finding, plan.plan_apply(finding, force=options.force))
                for patch, finding in zip(group, findings)
            ]
            files.append(_File(path, target, source, planned, plan.combined(source, [each.action for each in planned])))
        written = _write_if_all_ok(files, outcome, options)
    return _results(outcome, files, patches, written=written, dry_run=options.dry_run)


def revert(targets: Sequence[Target], patches: Sequence[Patch], options: Options) -> Outcome:
    """Takes our edits out of every file, each patch its own from the text the one after it
    left; writes nothing unless every patch succeeds."""
    outcome = Outcome()
    groups = _by_file(targets, patches)
    with _locked(targets, groups, options, outcome):
        files, readable = _read_all(groups)
        for path, target, group, source in readable:
            text = source.text
            planned: List[Planned] = []
            for patch in reversed(group):
                finding = plan.assess(
                    Source(text, source.encoding), patch, target.release, need_text=False, family=_family(group)
                )
                action = plan.plan_revert(finding, patch, target.release, force=options.force)
                text = action.new_text if action.new_text is not None else text
                planned.insert(0, Planned(patch, finding, action))
            files.append(_File(path, target, source, planned, text))
        written = _write_if_all_ok(files, outcome, options)
    return _results(outcome, files, patches, written=written, dry_run=options.dry_run)


@contextlib.contextmanager
def _locked(targets: Sequence[Target], groups: Groups, options: Options, outcome: Outcome) -> Iterator[None]:
    """Holds every package's lock for a writing run (a dry run takes none; packages in
    :data:`~mmcv_patcher.model.PACKAGES` order, as every run takes them), and removes the
    leftovers of a killed run, and of this one when Ctrl-C stops it mid-write; when a lock
    cannot be had, ``outcome.error`` says why and the body still runs, to report each
    patch's state."""
    with contextlib.ExitStack() as stack:
        held = False
        if not options.dry_run:
            for target in targets:
                outcome.error = _lock(stack, target, groups, options, outcome)
                if outcome.error is not None:
                    break
            else:
                held = True
                _remove_stale_temps(groups, options.pycache_prefixes)
        try:
            yield
        except BaseException:  # Ctrl-C between a temporary file's creation and its use
            if held:
                with write.uninterrupted():
                    _remove_stale_temps(groups, options.pycache_prefixes)
            raise


def _lock(
    stack: contextlib.ExitStack, target: Target, groups: Groups, options: Options, outcome: Outcome
) -> Optional[Failure]:
    """Takes ``target``'s lock into ``stack``: None, or why it cannot be had."""

    def on_wait(pid: Optional[int]) -> None:
        outcome.waited = True
        options.on_wait(target.package_dir, pid)

    try:
        how = stack.enter_context(write.locked(target.package_dir, options.lock_timeout, on_wait))
    except write.LockTimeout as error:
        return Failure(Problem.LOCKED, target.package_dir, error.strerror or str(error))
    except write.CannotLock as error:
        return Failure(Problem.CANNOT_LOCK, target.package_dir, error.strerror or str(error))
    except OSError as error:  # cannot even open the directory (another user's, mode 0711)
        return _unlockable(target.package_dir, groups, error)
    if how is not None:
        outcome.notes.append(how)
    return None


def _unlockable(package_dir: str, groups: Groups, error: OSError) -> Failure:
    """Why a package directory that cannot be opened to lock it is not written: a file that
    could not be written anyway, when there is one (the directory itself never is), or else
    the lock."""
    for path, (target, _) in groups.items():
        if target.package_dir != package_dir:
            continue
        try:
            write.check_writable(os.path.realpath(path))
        except write.ReadOnly as read_only:
            return _write_failure(path, read_only)
    return Failure(Problem.CANNOT_LOCK, package_dir, f"it cannot be opened to lock it: {error.strerror}")


def _remove_stale_temps(groups: Groups, pycache_prefixes: Tuple[str, ...]) -> None:
    """Temporary files a killed run left beside the files we write, in their ``__pycache__``
    or under a pycache prefix (we hold the lock, so no live run owns them); done by every
    writing run, even one with nothing to write."""
    for path in groups:
        for source in dict.fromkeys([path, os.path.realpath(path)]):
            for directory in [os.path.dirname(source)] + write.cache_directories(source, pycache_prefixes)[1:]:
                write.remove_stale_temps(directory)


def _by_file(targets: Sequence[Target], patches: Sequence[Patch]) -> Groups:
    """Patches grouped by the file they change in their package's target, files and patches
    in registry order; a patch whose package has no target is left out."""
    target_of = {target.package: target for target in targets}
    groups: Groups = {}
    for patch in patches:
        target = target_of.get(patch.package)
        if target is not None:
            groups.setdefault(target.file_of(patch), (target, []))[1].append(patch)
    return groups


def _family(patches: List[Patch]) -> List[Patch]:
    """Every registered patch of the file, the selected ones first: our edits in a file are
    checked together (each marker remembers the file from before all of them)."""
    chosen = {patch.id for patch in patches}
    first = patches[0]
    return list(patches) + [
        p for p in registry.all_patches() if (p.package, p.file) == (first.package, first.file) and p.id not in chosen
    ]


def _read_all(groups: Groups) -> Tuple[List[_File], List[Tuple[str, Target, List[Patch], Source]]]:
    """Every file read: those missing or unreadable as Python source already planned as such
    (a finding for each patch, nothing to write), and (path, target, patches, source) of the rest."""
    unreadable, readable = [], []
    for path, (target, patches) in groups.items():
        try:
            readable.append((path, target, patches, decode(read_source(path))))
        except (OSError, UndecodableSource) as error:
            findings = [(patch, _unreadable(patch, target, error)) for patch in patches]
            unreadable.append(
                _File(path, target, None, [Planned(patch, found, plan.plan_status(found)) for patch, found in findings])
            )
    return unreadable, readable


def _unreadable(patch: Patch, target: Target, error: Exception) -> Finding:
    """The finding for a file that is missing or cannot be read as Python source."""
    release = target.release
    if isinstance(error, FileNotFoundError) and ranges.standing(patch, release)[0] is not ranges.Standing.AFFECTED:
        return Finding(State.NOT_AFFECTED, None, f"{release.describe()} has no {patch.file}")
    reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
    return Finding(State.DRIFTED, None, f"cannot read the file: {reason}; {release.reinstall()}", ok=False)


def _write_if_all_ok(files: List[_File], outcome: Outcome, options: Options) -> bool:
    """Writes (or, for a dry run, diffs) every changed file when nothing failed so far and
    every patch succeeded; returns whether the files were written.

    Before the first byte is written, every new text must compile, and every file and the
    ``__pycache__`` beside it must resolve inside the package (a symlink leaving it is refused
    unless ``--force``). A file that then fails to write (read-only, disk full) rolls the
    earlier ones back. What of a file's owner, group or mode could not be kept is noted.
    """
    if outcome.error is not None or not all(each.action.ok for file in files for each in file.planned):
        return False
    ready = []
    for file in files:
        if file.source is None or file.new_text is None:
            continue
        data = file.source.encode(file.new_text)
        if len(data) > MAX_SOURCE_BYTES:  # what we write, a later revert or status must read
            outcome.error = Failure(
                Problem.TOO_LARGE, file.path, f"the patched file would be over {MAX_SOURCE_BYTES // 2**20} MB"
            )
            return False
        try:  # as the interpreter will, unoptimized whatever our own -O: the code is kept for the .pyc
            code = compile(data, file.path, "exec", dont_inherit=True, optimize=0)
        except (SyntaxError, ValueError) as error:
            outcome.error = Failure(
                Problem.WOULD_NOT_COMPILE, file.path, f"line {getattr(error, 'lineno', None) or '?'}: {error}"
            )
            return False
        real = os.path.realpath(file.path)
        caches = [os.path.join(os.path.dirname(each), "__pycache__") for each in dict.fromkeys([file.path, real])]
        for place, resolved in [(file.path, real)] + [
            (cache, os.path.realpath(cache)) for cache in caches if os.path.lexists(cache)
        ]:
            outcome.error = _outside(place, resolved, file.target, options.force)
            if outcome.error is not None:
                return False
        ready.append((file, real, data, code))
    if options.dry_run:
        outcome.previews.extend(
            (file.path, file.source.text, file.new_text)
            for file, _, _, _ in ready
            if file.source and file.new_text is not None
        )
        return False
    for index, (file, real, data, code) in enumerate(ready):
        try:
            note = write.replace_file(
                real, data, import_path=file.path, code=code, pycache_prefixes=options.pycache_prefixes
            )
        except BaseException as error:  # a write failed, or Ctrl-C: keep "all or nothing" across files
            _roll_back(
                [
                    (each.path, each_real, each_data, each.source)
                    for each, each_real, each_data, _ in ready[: index + 1]
                ],
                options,
            )
            if not isinstance(error, OSError):
                raise
            outcome.error = _write_failure(real, error)
            return False
        if note is not None:
            outcome.notes.append(note)
    return True


def _roll_back(written: List[Tuple[str, str, bytes, Optional[Source]]], options: Options) -> None:
    """Puts back the source of each (import path, real path, new bytes, source) whose file
    holds the new bytes, the last first; Ctrl-C waits until that is done."""
    with write.uninterrupted():
        for path, real, data, source in reversed(written):
            with contextlib.suppress(OSError, UndecodableSource):
                if source is not None and read_source(real) == data:
                    write.replace_file(
                        real, source.encode(source.text), import_path=path, pycache_prefixes=options.pycache_prefixes
                    )


def _write_failure(path: str, error: OSError) -> Failure:
    """What a failed write (or lock) of ``path`` was, as a value."""
    failed = error.filename or path
    if isinstance(error, write.StaleBytecode):
        return Failure(Problem.STALE_BYTECODE, failed, error.strerror or str(error))
    if error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return Failure(Problem.READ_ONLY, failed, "read-only")
    return Failure(Problem.WRITE_FAILED, failed, error.strerror or str(error))


def _outside(path: str, real: str, target: Target, force: bool) -> Optional[Failure]:
    """Refuses to write through a symlink (``path`` resolving to ``real``) that leaves the
    package (``--force`` allows it): such a link most often points into a store that other
    environments share (uv's symlink link mode, conda's softlinks), and writing there would
    patch every one of them. Says how to patch this install alone instead."""
    package = os.path.realpath(target.package_dir)

    def inside(resolved: str) -> bool:
        return resolved == package or resolved.startswith(package.rstrip(os.sep) + os.sep)

    if force or inside(real):
        return None
    where = f"resolves to {real}, outside the {target.package} package {package}"
    if os.path.islink(path) and os.path.isfile(path) and inside(os.path.realpath(os.path.dirname(path))):
        own_copy = f"give it a file of its own: cp --remove-destination {shlex.quote(real)} {shlex.quote(path)}, then run again"
    else:
        own_copy = f"reinstall {target.package} as copies (uv: --link-mode=copy; conda: --copy), then run again"
    return Failure(
        Problem.OUTSIDE_PACKAGE,
        path,
        f"{where}, perhaps a store other environments share (uv's or conda's cache), so writing there would patch"
        f" every environment linked to it; to patch this one alone, {own_copy} (--force writes into the linked file)",
    )


def _results(
    outcome: Outcome, files: List[_File], patches: Sequence[Patch], *, written: bool, dry_run: bool
) -> Outcome:
    """``outcome`` with one result per patch that has a target, in the order they apply."""
    results = {
        each.patch.id: _result(file.path, each, written=written, dry_run=dry_run)
        for file in files
        for each in file.planned
    }
    outcome.results = [results[patch.id] for patch in patches if patch.id in results]
    return outcome


def _result(path: str, planned: Planned, *, written: bool, dry_run: bool) -> Result:
    """What a user sees for one patch: the action taken, or, when its change was not
    written (a dry run, or a failure elsewhere), the state still on disk."""
    finding, action = planned.finding, planned.action
    would_change = action.new_text is not None
    if would_change and not written:
        why = "--dry-run" if dry_run else "not written, the command failed"
        return Result(planned.patch.id, finding.state, path, finding.line, f"{why}: would become {action.state}")
    return Result(planned.patch.id, action.state, path, action.line, action.message, changed=would_change, ok=action.ok)
