"""The state table: what each patch finds in a file, and what apply or revert would do.

Everything here takes text and returns values, so the whole table is tested with strings.
For each patch a command plans a :class:`Planned`: its :class:`Finding` (the state on disk)
and its :class:`Action` (what the command does about it). Our own edits are read by
:mod:`mmcv_patcher.ours`, releases placed by :mod:`mmcv_patcher.ranges`, the patches'
statements found by :mod:`mmcv_patcher.find`; LibCST (:mod:`mmcv_patcher.codemod`) is
imported only to make a fix's new text.
"""

from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple, Union

from mmcv_patcher.find import Found, ParseFailure, find
from mmcv_patcher.model import Edit, Patch, Release, Replacement, State
from mmcv_patcher.ours import Ours, cut, find_ours, marker
from mmcv_patcher.ranges import Standing, expected_counts, first_covered, known_forms, standing
from mmcv_patcher.source import Source, sha256_hex


class Finding(NamedTuple):
    """What one patch finds in one file: its state, and the text a command would write.

    ``ok`` False means the file cannot be worked on (drifted): the command fails, exit 1.
    """

    state: State
    line: Optional[int]
    message: str
    #: the text after apply (unpatched, unverified: with ``replacements``), or after revert
    #: (patched, or drifted by an edit to ours)
    new_text: Optional[str] = None
    ok: bool = True
    #: for a file we patched: the sha256 our marker kept, of the bytes a revert restores
    original_sha256: Optional[str] = None
    #: for a file we patched: whether those bytes are not what the release's RECORD lists
    differs_from_record: bool = False
    #: with ``new_text`` after apply: the replacements that make it from the file, so the
    #: changes of several patches merge
    replacements: Tuple[Replacement, ...] = ()
    #: for a file patched by an earlier version of this tool, whose fix this one replaces:
    #: ``new_text`` takes that fix out exactly, and a revert needs no ``--force``
    earlier: bool = False


class Action(NamedTuple):
    """What a command does about one patch's finding: the state it leaves, and the new text
    when it writes (with the ``replacements`` that make it, after apply). ``ok`` False: the
    command fails (exit 1) and writes nothing."""

    state: State
    line: Optional[int]
    message: str
    new_text: Optional[str] = None
    ok: bool = True
    replacements: Tuple[Replacement, ...] = ()


class Planned(NamedTuple):
    """One patch of a command: what it found on disk, and what the command does."""

    patch: Patch
    finding: Finding
    action: Action


def assess(source: Source, patch: Patch, release: Release, *, need_text: bool, family: Sequence[Patch] = ()) -> Finding:
    """The state of ``patch`` in ``source``; ``new_text`` holds the text after apply
    (unpatched, unverified) or after revert (patched, or drifted by an edit to ours).
    ``family`` is every patch of this file (default: just this one): our edits are checked
    together, since each marker remembers the file from before all of them.

    With ``need_text`` False no new text is made for a patch to apply (``status``), so
    LibCST is never loaded.
    """
    return assess_all(source, [(patch, release)], need_text=need_text, family=family)[0]


def assess_all(
    source: Source, patches: Sequence[Tuple[Patch, Release]], *, need_text: bool, family: Sequence[Patch] = ()
) -> List[Finding]:
    """:func:`assess` for several patches of one file (each with its release), with one
    parse of the file. Each ``new_text`` is the file with that patch's change alone;
    :func:`combined` merges them."""
    family = tuple(family) or tuple(patch for patch, _ in patches)
    ours = find_ours(source, family)
    decided = [_assess_from_text(source, patch, release, ours, need_text=need_text) for patch, release in patches]
    pending = [
        (patch, release, counts) for (patch, release), (finding, counts) in zip(patches, decided) if finding is None
    ]
    structural = iter(_assess_structurally(source, pending, family, ours, need_text=need_text) if pending else [])
    return [finding if finding is not None else next(structural) for finding, _ in decided]


def _assess_from_text(
    source: Source, patch: Patch, release: Release, ours: Optional[Ours], *, need_text: bool
) -> Tuple[Optional[Finding], Optional[Tuple[int, ...]]]:
    """The finding when our markers or the release's standing decide it; otherwise None and the anchor
    counts the release must have (None outside the known ranges). A patch not applied to a file
    whose other patches were edited since cannot be applied there (the file's original bytes,
    which its marker must remember, are unknown): that decides it only when its fix is asked
    for (``need_text``); ``status`` and ``revert`` judge it on its statements."""
    if ours is not None and ours.of(patch):
        line = ours.line(patch)
        undone = ours.without(source.text, patch)
        if ours.earlier(patch):
            message = (
                "patched by an earlier version of mmcv-patcher, whose fix this version replaces:"
                " revert takes that fix out, then apply writes this one"
            )
            return Finding(State.DRIFTED, line, message, new_text=undone, ok=False, earlier=True), None
        if not ours.intact(patch):
            message = f"the statement mmcv-patcher patched was edited since; {release.reinstall()}"
            return Finding(State.DRIFTED, line, message, new_text=undone, ok=False), None
        added = _added_since(source, patch)
        if added is not None:
            message = (
                f"patched by an earlier version of mmcv-patcher, without this version's fix of `{added.anchor}`:"
                " revert takes that version's fix out, then apply writes this one"
            )
            return Finding(State.DRIFTED, line, message, new_text=undone, ok=False, earlier=True), None
        not_run = _fix_not_run(source, patch, release)
        if not_run is not None:
            return Finding(State.DRIFTED, not_run[0] or line, not_run[1], new_text=undone, ok=False), None
        if not ours.exact:
            message = "patched by mmcv-patcher; other lines of the file were edited since, so a revert takes out only our edits"
            return Finding(State.PATCHED, line, message, new_text=undone), None
        differs = release.installed(patch.file, source.encode(ours.original)) is False
        message = "patched by mmcv-patcher" + (
            "; before that, the file already differed from the release's RECORD" if differs else ""
        )
        return Finding(
            State.PATCHED, line, message, new_text=undone, original_sha256=ours.sha256, differs_from_record=differs
        ), None
    if need_text and ours is not None and not ours.exact:
        others = ", ".join(f"{mark.patch.id} at line {mark.line}" for mark in ours.marks)
        message = f"the file was edited since mmcv-patcher patched it ({others}), so its original bytes are unknown; revert those first"
        return Finding(State.DRIFTED, None, message, ok=False), None
    place, affected = standing(patch, release)
    if place is Standing.BELOW:
        first = first_covered(patch, release)
        return Finding(
            State.NOT_AFFECTED, None, f"{release.describe()} is older than {first}, the first release this patch covers"
        ), None
    return None, None if affected is None else expected_counts(patch, affected)


def combined(source: Source, changes: Sequence[Union[Finding, Action]]) -> str:
    """``source`` with the changes of several patches (the actions :func:`plan_apply` made of
    their findings from :func:`assess_all`): the replacements of different statements
    never overlap, so they merge."""
    return _replaced(source.text, [replacement for change in changes for replacement in change.replacements])


def _replaced(text: str, replacements: Sequence[Replacement]) -> str:
    """``text`` with the (disjoint) ``replacements`` made; insertions at one place in order."""
    for start, end, piece in sorted(replacements, key=lambda r: (r[0], r[1]), reverse=True):
        text = text[:start] + piece + text[end:]
    return text


def _times(count: int) -> str:
    return "once" if count == 1 else f"{count} times"


def _statements(patch: Patch) -> str:
    return " or ".join(f"`{edit.anchor}`" for edit in patch.edits)


def _assess_structurally(
    source: Source,
    pending: Sequence[Tuple[Patch, Release, Optional[Tuple[int, ...]]]],
    family: Sequence[Patch],
    ours: Optional[Ours],
    *,
    need_text: bool,
) -> List[Finding]:
    """The states from where Python's parser finds each patch's statements. Per patch,
    ``counts``: how many of each edit's anchors its release must have (None outside the
    known ranges). ``ours``: the other patches' edits already in the file, exact. With
    ``need_text``, each patch that can be applied gets the file with its fix alone."""
    found = find(source.text, [patch for patch, _, _ in pending])
    if isinstance(found, ParseFailure):
        return [
            Finding(
                State.DRIFTED, found.line, f"cannot parse the file: {found.reason}; {release.reinstall()}", ok=False
            )
            for _, release, _ in pending
        ]
    original = source.text if ours is None else ours.original
    findings = [_from_found(patch, release, counts, found[patch.id]) for patch, release, counts in pending]
    fixable = [
        i for i, finding in enumerate(findings) if need_text and finding.state in (State.UNPATCHED, State.UNVERIFIED)
    ]
    if fixable:
        marker_of = {pending[i][0].id: marker(pending[i][0], sha256_hex(source.encode(original))) for i in fixable}
        made = _fixes(source, [pending[i][0] for i in fixable], found, marker_of, family, original)
        for i in fixable:
            patch = pending[i][0]
            replacements = made.get(patch.id)
            if replacements is None:
                findings[i] = _cannot_edit(patch, findings[i].line)
            else:
                findings[i] = findings[i]._replace(
                    new_text=_replaced(source.text, replacements), replacements=replacements
                )
    return findings


def _fixes(
    source: Source,
    patches: Sequence[Patch],
    found: Dict[str, Found],
    marker_of: Dict[str, str],
    family: Sequence[Patch],
    original: str,
) -> Dict[str, Tuple[Replacement, ...]]:
    """Per patch id, the replacements that make its fix, for those whose fix is exactly our
    insertions, which :func:`mmcv_patcher.ours.find_ours` finds again (so revert can take
    them out byte for byte). All are checked together; only if that fails, each alone, to
    leave out just the ones at fault."""
    from mmcv_patcher import codemod  # LibCST: loaded only to write a fix

    made = codemod.fixes(source.text, [(patch, found[patch.id].anchors, marker_of[patch.id]) for patch in patches])
    if made is not None and _exact(source, made, patches, family, original):
        return made
    alone = {}
    for patch in patches:
        one = codemod.fixes(source.text, [(patch, found[patch.id].anchors, marker_of[patch.id])])
        if one is not None and _exact(source, one, [patch], family, original):
            alone[patch.id] = one[patch.id]
    return alone


def _exact(
    source: Source,
    made: Dict[str, Tuple[Replacement, ...]],
    patches: Sequence[Patch],
    family: Sequence[Patch],
    original: str,
) -> bool:
    """Whether the text with ``made`` is ``source`` with just our insertions for ``patches``."""
    text = _replaced(source.text, [replacement for patch in patches for replacement in made[patch.id]])
    after = find_ours(Source(text, source.encoding), family)
    if after is None or not after.exact or after.original != original:
        return False
    ours = [span for patch in patches for mark in after.of(patch) for span in mark.spans]
    return all(after.intact(patch) for patch in patches) and cut(text, ours) == source.text


def _cannot_edit(patch: Patch, line: Optional[int]) -> Finding:
    fixes = " and ".join(f"`{edit.fix}`" for edit in patch.edits)
    return Finding(
        State.DRIFTED,
        line,
        f"LibCST cannot make the fix there without changing other bytes; nothing was written; make {fixes} of those lines by hand",
        ok=False,
    )


def _which(patch: Patch, found: Found, edit: Optional[Edit] = None) -> str:
    """Where the patch's statements were looked for, in words; with ``edit``, where that
    edit's statement was (the definition it names, or the module's own statements)."""
    if edit is not None and edit.binds:
        return "the module's own statements"
    if edit is not None and edit.function:
        return f"{edit.function}()"
    return (
        f"{patch.function}()"
        if found.definitions <= 1
        else f"the last of {found.definitions} definitions of {patch.function}(), the one Python runs"
    ) + ("" if edit is not None or not any(each.binds for each in patch.edits) else " and the module's own statements")


def _ambiguity(patch: Patch, found: Found, release: Release) -> Optional[Finding]:
    """Drifted where the file makes the definition the callers reach ambiguous."""
    if found.ambiguous is None:
        return None
    first, use, last = found.ambiguous
    name = patch.function.split(".")[0]
    return Finding(
        State.DRIFTED,
        use,
        f"{name} is defined at lines {first} and {last}, and line {use} uses the first before the second replaces it,"
        f" so which one its callers run cannot be told; refusing to guess: {release.reinstall()}",
        ok=False,
    )


def _added_since(source: Source, patch: Patch) -> Optional[Edit]:
    """The first edit this version added to ``patch`` (:attr:`Edit.added`) whose statement
    stands as released in the definition Python runs, where every statement left as released
    is of such an edit and every other edit has its fix there: a file an earlier version
    patched. None otherwise."""
    found = find(source.text, [patch])
    if isinstance(found, ParseFailure):
        return None
    here = found[patch.id]
    if here.ambiguous is not None or not here.anchors:
        return None
    if not all(patch.edits[statement.edit].added for statement in here.anchors):
        return None
    have = here.counts(here.fixes, len(patch.edits))
    fixed = all(have[index] or edit.added or index in here.unneeded for index, edit in enumerate(patch.edits))
    return patch.edits[here.anchors[0].edit] if fixed else None


def _fix_not_run(source: Source, patch: Patch, release: Release) -> Optional[Tuple[Optional[int], str]]:
    """Why the code Python runs is not ``patch``'s fix although its markers are intact (a
    statement put back as released, a definition added after the patched one, an import the
    fix needs taken out), as (line, message); None when every statement of the patch, in the
    definition Python runs, is the fix."""
    found = find(source.text, [patch])
    if isinstance(found, ParseFailure):
        return found.line, f"cannot parse the file: {found.reason}; {release.reinstall()}"
    here = found[patch.id]
    ambiguous = _ambiguity(patch, here, release)
    if ambiguous is not None:
        return ambiguous.line, ambiguous.message
    again = "revert --force takes out what is left of mmcv-patcher's edit, then apply patches it again"
    if here.anchors:
        standing_still = here.anchors[0]
        edit = patch.edits[standing_still.edit]
        return (
            standing_still.line,
            f"`{edit.anchor}` stands as released at line {standing_still.line}, in {_which(patch, here, edit)}, the code Python runs, although mmcv-patcher's markers are there; {again}",
        )
    _, affected = standing(patch, release)
    have = here.counts(here.fixes, len(patch.edits))
    if affected is not None:
        missing = [
            index for index, count in enumerate(here.needed(expected_counts(patch, affected))) if have[index] < count
        ]
    else:
        missing = [] if here.fixes else [0]
    if here.definition_line is None or missing:
        what = " or ".join(f"`{patch.edits[index].fix}`" for index in missing) or "the fix"
        places = {_which(patch, here, patch.edits[index]) for index in missing}
        where = places.pop() if len(places) == 1 else _which(patch, here)
        return (
            here.definition_line,
            f"{what} is not in {where}, the code Python runs, although mmcv-patcher's markers are there; {again}",
        )
    return None


def _unmarked_fixes(text: Optional[str], patch: Patch, release: Release) -> Optional[Tuple[Optional[int], str]]:
    """Where ``text``, a revert's result, still holds a fix of ``patch`` without our marker
    (a formatter that joined or moved the marked lines leaves some fixes unmarked), as (line,
    message) for a refusal; None when it holds none, or cannot be read."""
    if text is None:
        return None
    found = find(text, [patch])
    if isinstance(found, ParseFailure) or not found[patch.id].fixes:
        return None
    lines = ", ".join(str(statement.line) for statement in found[patch.id].fixes)
    return (
        found[patch.id].fixes[0].line,
        f"taking out mmcv-patcher's marked edits would leave its fix without a marker at line {lines}"
        f" (a formatter moved or joined the marked lines?), which no revert can tell from a hand edit;"
        f" {release.reinstall()}",
    )


def _from_found(patch: Patch, release: Release, counts: Optional[Tuple[int, ...]], found: Found) -> Finding:
    """The state from the statements found for ``patch``."""
    affected = counts is not None
    which = _which(patch, found)
    if found.definition_line is None:
        if affected:
            return Finding(State.DRIFTED, None, f"no definition of {patch.function}(); {release.reinstall()}", ok=False)
        return Finding(State.NOT_AFFECTED, None, f"no definition of {patch.function}()")
    ambiguous = _ambiguity(patch, found, release)
    if ambiguous is not None:
        return ambiguous
    anchors, fixes = len(found.anchors), len(found.fixes)
    anchor_counts = found.counts(found.anchors, len(patch.edits))
    counts = None if counts is None else found.needed(counts)
    lines = sorted(statement.line for statement in found.anchors + found.fixes)
    if anchors == 0 and fixes >= 1:
        return Finding(State.FIXED_UPSTREAM, found.fixes[0].line, "the fix is already there; nothing to do")
    if anchors == 0:
        if affected:
            return Finding(
                State.DRIFTED,
                found.definition_line,
                f"{_statements(patch)} is not in {which}; the file was edited: {release.reinstall()}",
                ok=False,
            )
        return Finding(State.NOT_AFFECTED, found.definition_line, f"{patch.function}() has no such statement")
    if not affected and not fixes and anchor_counts not in {found.needed(form) for form in known_forms(patch)}:
        return Finding(
            State.NOT_AFFECTED,
            found.definition_line,
            f"{patch.function}() does not have {_statements(patch)} as any known release does",
        )
    if fixes:
        return Finding(
            State.DRIFTED,
            lines[0],
            f"{_statements(patch)} stands as released {_times(anchors)} and fixed without mmcv-patcher's marker {_times(fixes)} in {which} (lines {', '.join(map(str, lines))}): part of the fix was made by hand; refusing to guess which to patch: {release.reinstall()}",
            ok=False,
        )
    if affected and counts is not None and anchor_counts != counts:
        index = next(index for index, count in enumerate(counts) if anchor_counts[index] != count)
        return Finding(
            State.DRIFTED,
            lines[0],
            f"`{patch.edits[index].anchor}` found {_times(anchor_counts[index])} in {which} (lines {', '.join(map(str, lines))}); {release.describe()} has it {_times(counts[index])}; refusing to guess which to patch: {release.reinstall()}",
            ok=False,
        )
    line = found.anchors[0].line
    if affected:
        return Finding(State.UNPATCHED, line, f"{release.describe()} has the bug")
    return Finding(
        State.UNVERIFIED,
        line,
        f"{release.describe()} is outside the releases this patch knows, but has the statement; apply --force patches it",
    )


def plan_status(finding: Finding) -> Action:
    """What ``status`` does: nothing; it reports the finding."""
    return Action(finding.state, finding.line, finding.message, ok=finding.ok)


def plan_apply(finding: Finding, *, force: bool) -> Action:
    """What ``apply`` does given the file's state (``--force`` patches ``unverified``)."""
    state = finding.state
    if state is State.UNPATCHED or (state is State.UNVERIFIED and force):
        return Action(
            State.PATCHED, finding.line, "applied the fix", new_text=finding.new_text, replacements=finding.replacements
        )
    if state is State.UNVERIFIED:
        return Action(state, finding.line, finding.message, ok=False)
    if state is State.PATCHED:
        return Action(state, finding.line, "already patched; nothing to do")
    return Action(state, finding.line, finding.message, ok=finding.ok)


def plan_revert(finding: Finding, patch: Patch, release: Release, *, force: bool) -> Action:
    """What ``revert`` does: take out exactly our edit. A statement edited since is left
    alone unless ``--force``, which takes out whatever of ours is left in it; files we did
    not patch are never touched."""
    state = finding.state
    leftover = _unmarked_fixes(finding.new_text, patch, release) if state in (State.PATCHED, State.DRIFTED) else None
    if leftover is not None:
        return Action(state, leftover[0], leftover[1], ok=False)
    if state is State.PATCHED:
        after = State.UNPATCHED if standing(patch, release)[0] is Standing.AFFECTED else State.UNVERIFIED
        if finding.original_sha256 is None:
            message = f"took out our edit; other lines were edited since, so the file is not the original: {release.reinstall()}"
            return Action(after, finding.line, message, new_text=finding.new_text)
        if finding.differs_from_record:
            # Exactly what was there before we patched, but not what the release installed.
            message = f"reverted to the bytes from before patching, which differ from the release's RECORD (edited before it was patched); {release.reinstall()}"
            return Action(after, finding.line, message, new_text=finding.new_text)
        return Action(after, finding.line, "reverted to the original bytes", new_text=finding.new_text)
    if state is State.DRIFTED and finding.earlier:
        after = State.UNPATCHED if standing(patch, release)[0] is Standing.AFFECTED else State.UNVERIFIED
        return Action(after, finding.line, "took out the fix of an earlier mmcv-patcher", new_text=finding.new_text)
    if state is State.DRIFTED and finding.new_text is not None:
        if force:
            return Action(
                State.UNPATCHED,
                finding.line,
                "took out what is left of our edit (--force); the edits made since stay",
                new_text=finding.new_text,
            )
        return Action(
            state, finding.line, finding.message + "; revert --force takes out what is left of our edit", ok=False
        )
    if state is State.DRIFTED:
        return Action(state, finding.line, finding.message, ok=False)
    return Action(state, finding.line, f"{finding.message}; nothing to revert")
