"""The state table: what each patch finds in a file, and what apply or revert would write.

Everything here takes text and returns values, so the whole table is tested with strings.
Our own edits are read by :mod:`mmcv_patcher.ours`, releases placed by
:mod:`mmcv_patcher.gate`; LibCST (:mod:`mmcv_patcher.codemod`) is imported only when a
file's state cannot be read from our markers or from the release's RECORD hash.
"""

import ast
import functools
import hashlib
from typing import List, NamedTuple, Optional, Sequence, Tuple

from mmcv_patcher.gate import Gate, Release, expected_counts, gate, known_forms
from mmcv_patcher.model import Patch, Scan, State
from mmcv_patcher.ours import Ours, by_patch, cut, find_ours, marker
from mmcv_patcher.source import Source, sha256_hex


class Plan(NamedTuple):
    """A patch's verdict on one file, and the new text when the command should write.

    ``ok`` False means the command fails (exit 1) and writes nothing for this file.
    """

    state: State
    line: Optional[int]
    message: str
    new_text: Optional[str] = None
    ok: bool = True
    #: for a file we patched: the sha256 our marker kept, of the bytes a revert restores
    original_sha256: Optional[str] = None


def _differs_from_record(sha256: Optional[str], release: Release) -> bool:
    """Whether RECORD lists the file with a hash other than ``sha256`` (hex)."""
    return release.record_hash is not None and sha256 is not None and not release.installed(bytes.fromhex(sha256))


def _quick_unpatched_line(source: Source, patch: Patch, release: Release, counts: Tuple[int, ...]) -> Optional[int]:
    """The first anchor's line when the file is byte-identical to its release.

    A file whose hash matches RECORD is the file an affected release installed, and every
    release in the range has the statements (tests/test_matrix.py checks them all), so the
    state is known without LibCST; Python's ``ast`` says where, and confirms the counts.
    """
    if not release.installed(hashlib.sha256(source.encode(source.text)).digest()):
        return None
    tree = _tree(source.text)
    definitions = [node for node in tree.body if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == patch.function] if tree else []
    if not definitions:
        return None
    wanted = {_dumped(edit.anchor): index for index, edit in enumerate(patch.edits)}
    fixed = {_dumped(edit.fixed) for edit in patch.edits}
    statements = [_parsed(code) for edit in patch.edits for code in edit]
    kinds = tuple({type(statement) for statement in statements})
    heads = {_head(statement) for statement in statements}
    found = [0] * len(patch.edits)
    lines = []
    for node in ast.walk(definitions[-1]):  # the one Python binds
        if isinstance(node, kinds) and _head(node) in heads:
            dumped = ast.dump(node)
            if dumped in fixed:
                return None
            if dumped in wanted:
                found[wanted[dumped]] += 1
                lines.append(node.lineno)
    return min(lines) if tuple(found) == counts and lines else None


def assess(source: Source, patch: Patch, release: Release, *, need_text: bool, family: Sequence[Patch] = ()) -> Plan:
    """The state of ``patch`` in ``source``; ``new_text`` holds the text after apply
    (unpatched, unverified) or after revert (patched, or drifted by an edit to ours).
    ``family`` is every patch of this file (default: just this one): our edits are checked
    together, since each marker remembers the file from before all of them.

    With ``need_text`` False the state may be decided without LibCST.
    """
    return assess_all(source, [(patch, release)], need_text=need_text, family=family)[0]


def assess_all(source: Source, patches: Sequence[Tuple[Patch, Release]], *, need_text: bool, family: Sequence[Patch] = ()) -> List[Plan]:
    """:func:`assess` for several patches of one file (each with its release), in one
    LibCST pass for those that need it. Each ``new_text`` is the file with that patch's
    change alone; :func:`combined` merges them."""
    family = tuple(family) or tuple(patch for patch, _ in patches)
    ours = find_ours(source, family)
    decided = [_assess_from_text(source, patch, release, ours, need_text=need_text) for patch, release in patches]
    pending = [(patch, release, counts) for (patch, release), (plan, counts) in zip(patches, decided) if plan is None]
    structural = iter(_assess_structurally(source, pending, family, ours) if pending else [])
    return [plan if plan is not None else next(structural) for plan, _ in decided]


def _assess_from_text(
    source: Source, patch: Patch, release: Release, ours: Optional[Ours], *, need_text: bool
) -> Tuple[Optional[Plan], Optional[Tuple[int, ...]]]:
    """The plan when our markers, the gate or the RECORD hash decide it; otherwise None and
    the anchor counts the release must have (None outside the known ranges)."""
    if ours is not None and ours.of(patch):
        line = ours.line(patch)
        undone = ours.without(source.text, patch)
        if not ours.intact(patch):
            message = f"the statement mmcv-patcher patched was edited since; {release.reinstall()}"
            return Plan(State.DRIFTED, line, message, new_text=undone, ok=False), None
        if not ours.exact:
            message = "patched by mmcv-patcher; other lines of the file were edited since, so a revert takes out only our edits"
            return Plan(State.PATCHED, line, message, new_text=undone), None
        message = "patched by mmcv-patcher"
        if _differs_from_record(ours.sha256, release):
            message += "; before that, the file already differed from the release's RECORD"
        return Plan(State.PATCHED, line, message, new_text=undone, original_sha256=ours.sha256), None
    if ours is not None and not ours.exact:
        others = ", ".join(f"{mark.patch.id} at line {mark.line}" for mark in ours.marks)
        message = f"the file was edited since mmcv-patcher patched it ({others}), so its original bytes are unknown; revert those first"
        return Plan(State.DRIFTED, None, message, ok=False), None
    where, affected = gate(patch, release)
    if where is Gate.BELOW:
        return Plan(State.NOT_AFFECTED, None, f"{release.describe()} predates the bug"), None
    counts = None if affected is None else expected_counts(patch, affected)
    if counts is not None and not need_text and ours is None:
        quick = _quick_unpatched_line(source, patch, release, counts)
        if quick is not None:
            return Plan(State.UNPATCHED, quick, f"{release.describe()} has the bug"), None
    return None, counts


def combined(source: Source, changes: Sequence[Tuple[Patch, str]], family: Sequence[Patch]) -> str:
    """``source`` with the changes of several patches, each given as the text with that
    patch's change alone (as :func:`assess_all` gives them): all are pure insertions into
    ``source``, found exactly by :func:`mmcv_patcher.ours.find_ours`, so they merge without conflict."""
    inserted: List[Tuple[int, int, str]] = []  # (where in source, in which order, what)
    for patch, text in changes:
        ours = find_ours(Source(text, source.encoding), family)
        assert ours is not None and ours.exact, "each text is the source plus one patch's change"
        shift = 0
        for start, end in sorted(span for mark in ours.of(patch) for span in mark.spans):
            inserted.append((start - shift, len(inserted), text[start:end]))
            shift += end - start
    text = source.text
    for at, _, piece in sorted(inserted, reverse=True):  # from the end; at one place, in order
        text = text[:at] + piece + text[at:]
    return text


@functools.lru_cache(maxsize=4)
def _tree(text: str) -> Optional[ast.Module]:
    """The file's ``ast``, parsed once for all the patches of a run (None: not Python)."""
    try:
        return ast.parse(text)
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return None


@functools.lru_cache(maxsize=None)
def _parsed(statement: str) -> ast.stmt:
    return ast.parse(statement).body[0]


def _dumped(statement: str) -> str:
    return ast.dump(_parsed(statement))


def _head(node: ast.AST) -> Tuple[str, ...]:
    """What cheaply tells statements apart before whole dumps are compared: an assignment's
    targets (the codemod's filter, in ``ast``'s terms)."""
    return tuple(ast.dump(target) for target in node.targets) if isinstance(node, ast.Assign) else (type(node).__name__,)


def _times(count: int) -> str:
    return "once" if count == 1 else f"{count} times"


def _statements(patch: Patch) -> str:
    return " or ".join(f"`{edit.anchor}`" for edit in patch.edits)


def _assess_structurally(
    source: Source, pending: Sequence[Tuple[Patch, Release, Optional[Tuple[int, ...]]]], family: Sequence[Patch], ours: Optional[Ours]
) -> List[Plan]:
    """The states from one structural scan of the codemod. Per patch, ``counts``: how many
    of each edit's anchors its release must have (None outside the known ranges: a known
    form). ``ours``: the other patches' edits already in the file, exact."""
    from mmcv_patcher import codemod  # LibCST: loaded only when the text alone cannot tell

    original = source.text if ours is None else ours.original
    original_sha = sha256_hex(source.encode(original))
    patches = [patch for patch, _, _ in pending]
    try:
        found = codemod.scan(source.text, patches, {patch.id: marker(patch, original_sha) for patch in patches})
    except codemod.ParseFailure as failure:
        return [Plan(State.DRIFTED, failure.line, f"cannot parse the file: {failure.reason}; {release.reinstall()}", ok=False) for _, release, _ in pending]
    after = find_ours(Source(found.patched_text, source.encoding), family)
    # The edits must be exactly our insertions and markers, so revert can take them out again.
    spans = {} if after is None or not after.exact or after.original != original else by_patch(after.marks)
    exact = cut(found.patched_text, [span for patch in patches for span in spans.get(patch.id, [])]) == source.text
    plans = []
    for patch, release, counts in pending:
        alone = None
        if exact and patch.id in spans:
            alone = cut(found.patched_text, [span for other in patches if other is not patch for span in spans.get(other.id, [])])
        plans.append(_from_scan(patch, release, counts, found.scans[patch.id], alone))
    return plans


def _from_scan(patch: Patch, release: Release, counts: Optional[Tuple[int, ...]], found: Scan, patched: Optional[str]) -> Plan:
    """The state from what the scan found for ``patch``; ``patched`` is the file with its
    anchors fixed and marked (None when LibCST could not edit it exactly)."""
    affected = counts is not None
    which = f"{patch.function}()" if found.definitions <= 1 else f"the last of {found.definitions} definitions of {patch.function}(), the one Python runs"
    if found.function_line is None:
        if affected:
            return Plan(State.DRIFTED, None, f"no module-level function {patch.function}(); {release.reinstall()}", ok=False)
        return Plan(State.NOT_AFFECTED, None, f"no function {patch.function}()")
    anchors, fixed = sum(found.anchors), sum(found.fixed)
    if anchors == 0 and fixed >= 1:
        return Plan(State.FIXED_UPSTREAM, found.fixed_lines[0], "the fix is already there; nothing to do")
    if anchors == 0:
        if affected:
            return Plan(State.DRIFTED, found.function_line, f"{_statements(patch)} is not in {which}; the file was edited: {release.reinstall()}", ok=False)
        return Plan(State.NOT_AFFECTED, found.function_line, f"{patch.function}() has no such statement")
    if not affected and not fixed and found.anchors not in known_forms(patch):
        return Plan(State.NOT_AFFECTED, found.function_line, f"{patch.function}() does not have {_statements(patch)} as any known release does")
    if fixed or (affected and found.anchors != counts):
        lines = ", ".join(str(n) for n in sorted(found.anchor_lines + found.fixed_lines))
        expected = f"; {release.describe()} has it {_times(sum(counts or ()))}" if affected else ""
        return Plan(
            State.DRIFTED,
            min(found.anchor_lines + found.fixed_lines),
            f"{_statements(patch)} found {_times(anchors + fixed)} in {which} (lines {lines}){expected};"
            f" refusing to guess which to patch: {release.reinstall()}",
            ok=False,
        )
    line = found.anchor_lines[0]
    if patched is None:
        return Plan(
            State.DRIFTED,
            line,
            "LibCST cannot edit this file without changing other bytes (unusual newlines?); nothing was written;"
            f" make {' and '.join(f'`{edit.fixed}`' for edit in patch.edits)} of those lines by hand",
            ok=False,
        )
    if affected:
        return Plan(State.UNPATCHED, line, f"{release.describe()} has the bug", new_text=patched)
    return Plan(
        State.UNVERIFIED,
        line,
        f"{release.describe()} is outside the releases this patch knows, but has the statement; apply --force patches it",
        new_text=patched,
    )


def plan_apply(assessed: Plan, *, force: bool) -> Plan:
    """What ``apply`` does given the file's state (``--force`` patches ``unverified``)."""
    state = assessed.state
    if state is State.UNPATCHED or (state is State.UNVERIFIED and force):
        return Plan(State.PATCHED, assessed.line, "applied the fix", new_text=assessed.new_text)
    if state is State.UNVERIFIED:
        return Plan(state, assessed.line, assessed.message, ok=False)
    if state is State.PATCHED:
        return Plan(state, assessed.line, "already patched; nothing to do")
    return Plan(state, assessed.line, assessed.message, ok=assessed.ok)


def plan_revert(assessed: Plan, patch: Patch, release: Release, *, force: bool) -> Plan:
    """What ``revert`` does: take out exactly our edit. A statement edited since is left
    alone unless ``--force``, which takes out whatever of ours is left in it; files we did
    not patch are never touched."""
    state = assessed.state
    if state is State.PATCHED:
        after = State.UNPATCHED if gate(patch, release)[0] is Gate.AFFECTED else State.UNVERIFIED
        if assessed.original_sha256 is None:
            message = f"took out our edit; other lines were edited since, so the file is not the original: {release.reinstall()}"
            return Plan(after, assessed.line, message, new_text=assessed.new_text)
        if _differs_from_record(assessed.original_sha256, release):
            # Exactly what was there before we patched, but not what the release installed.
            message = f"reverted to the bytes from before patching, which differ from the release's RECORD (edited before it was patched); {release.reinstall()}"
            return Plan(after, assessed.line, message, new_text=assessed.new_text)
        return Plan(after, assessed.line, "reverted to the original bytes", new_text=assessed.new_text)
    if state is State.DRIFTED and assessed.new_text is not None:
        if force:
            return Plan(State.UNPATCHED, assessed.line, "took out what is left of our edit (--force); the edits made since stay", new_text=assessed.new_text)
        return Plan(state, assessed.line, assessed.message + "; revert --force takes out what is left of our edit", ok=False)
    if state is State.DRIFTED:
        return Plan(state, assessed.line, assessed.message, ok=False)
    return Plan(state, assessed.line, f"{assessed.message}; nothing to revert")
