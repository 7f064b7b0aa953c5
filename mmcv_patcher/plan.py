"""Decide, without I/O, what a patch finds in a file and what apply or revert would write.

Everything here takes text and returns values, so the whole state table is tested with
strings. LibCST is imported only when a file's state cannot be read from our marker or from
the release's RECORD hash (see :func:`assess`).
"""

import ast
import enum
import functools
import hashlib
import re
from typing import Dict, Iterator, List, NamedTuple, Optional, Sequence, Set, Tuple

from packaging.version import InvalidVersion, Version

from mmcv_patcher.model import Affected, Patch, Scan, State
from mmcv_patcher.source import Source, line_at, record_hash, sha256_hex


class Gate(enum.Enum):
    """Where a release stands relative to a patch's known affected range."""

    AFFECTED = "affected"
    BELOW = "below"  # older than the first affected release: the bug is not there yet
    OUTSIDE = "outside"  # newer, a pre-release, another distribution, or an unknown version


class Release(NamedTuple):
    """Which distribution and version own the file; either may be unknown."""

    distribution: Optional[str]
    version: Optional[str]
    #: RECORD's hash of the file as the release installed it (``sha256=<urlsafe base64>``)
    record_hash: Optional[str] = None

    def describe(self) -> str:
        return f"{self.distribution or 'mmcv (no metadata)'} {self.version or '(unknown version)'}"

    def reinstall(self) -> str:
        """What to do about a damaged file: the command that puts the release back."""
        if self.distribution and self.version:
            return f"restore it with `pip install --force-reinstall --no-deps {self.distribution}=={self.version}`"
        return "restore it from a fresh copy of mmcv"

    def installed(self, sha256_digest: bytes) -> bool:
        """Whether RECORD lists the file with this sha256 (False when it gives no hash)."""
        return self.record_hash is not None and self.record_hash == record_hash(sha256_digest)


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


def gate(patch: Patch, release: Release) -> Tuple[Gate, Optional[Affected]]:
    """Places ``release`` against ``patch.affected``, with the range it falls in. No
    metadata counts as upstream ``mmcv``.

    A local label (``+cu118``) is a build of the same source, so it is ignored. A pre- or
    dev release is below the ranges when its release number is, and otherwise outside them,
    even of the first affected release (``1.3.4rc1``): no pre-release was checked.
    """
    ranges = patch.affected.get(release.distribution or "mmcv", ())
    if not ranges or release.version is None:
        return Gate.OUTSIDE, None
    try:
        version = Version(release.version)
    except InvalidVersion:
        return Gate.OUTSIDE, None
    if all(Version(version.base_version) < Version(each.introduced) for each in ranges):
        return Gate.BELOW, None
    if version.is_prerelease:
        return Gate.OUTSIDE, None
    public = Version(version.public)
    for each in ranges:
        if public < Version(each.introduced):
            continue
        if each.last_affected is not None and public <= Version(each.last_affected):
            return Gate.AFFECTED, each
        if each.fixed is not None and public < Version(each.fixed):
            return Gate.AFFECTED, each
    return Gate.OUTSIDE, None


def expected_counts(patch: Patch, affected: Affected) -> Tuple[int, ...]:
    """How many times releases in ``affected`` have each of the patch's edits."""
    return affected.counts or (1,) * len(patch.edits)


def known_forms(patch: Patch) -> Set[Tuple[int, ...]]:
    """The edit counts of every known affected range: a release outside them is only
    ``unverified`` (patchable with --force) when its file has one of these forms."""
    return {expected_counts(patch, each) for ranges in patch.affected.values() for each in ranges}


def marker(patch: Patch, original_sha256: str) -> str:
    """The comment that identifies our edit and remembers the bytes it replaced."""
    return f"# mmcv-patcher: {patch.id} sha256={original_sha256}"


class _Marker(NamedTuple):
    patch: Patch
    start: int
    end: int
    #: the sha256 of the file before any of our patches
    sha256: str


def _markers(text: str, family: Sequence[Patch]) -> List[_Marker]:
    """Each marker of the ``family`` (the patches of one file) in ``text``, in file order:
    two spaces, the comment, 64 lowercase hex digits, and the end of that line."""
    found: List[_Marker] = []
    for patch in family:
        pattern = re.escape("  " + marker(patch, "")) + r"([0-9a-f]{64})(?=\r|\n|\Z)"
        found.extend(_Marker(patch, m.start(), m.end(), m.group(1)) for m in re.finditer(pattern, text))
    return sorted(found, key=lambda m: m.start)


def remembered_sha256(source: Source, family: Sequence[Patch]) -> Optional[str]:
    """The original file's hash our markers keep, if the file carries them and they agree."""
    kept = {found.sha256 for found in _markers(source.text, family)}
    return kept.pop() if len(kept) == 1 else None


class Ours(NamedTuple):
    """Our edits in a file: the markers and insertions of each patch of its family."""

    #: whether taking all of them out gives exactly the bytes the markers remember
    exact: bool
    #: whether the text we insert was found before every marker at all
    placed: bool
    #: what the markers remember (None when they disagree)
    sha256: Optional[str]
    #: the text with all of them taken out (the original when exact)
    original: str
    #: patch id -> the (start, end) spans of its markers and insertions
    spans: Dict[str, List[Tuple[int, int]]]
    #: patch id -> the line of its first marker
    lines: Dict[str, int]

    def without(self, text: str, patch: Patch) -> str:
        """``text`` with only ``patch``'s markers and insertions taken out."""
        return _cut(text, self.spans[patch.id])


#: How many placements of our insertions are tried before giving up (each costs one hash of
#: the file); the nearest-first first try is right unless the file was edited since.
_MAX_TRIES = 256


def find_ours(source: Source, family: Sequence[Patch]) -> Optional[Ours]:
    """Our edits in ``source`` as plain text, found without LibCST; None when there is no marker.

    Each marker ends the last line of a statement we changed, and that statement's
    insertions (one of its patch's edits) are the nearest such texts before it. Taking all
    of them out must give the bytes whose sha256 every marker keeps, which makes this exact:
    a revert restores the original bytes or refuses. Other placements are tried, nearest
    first, in case the same text also stands nearby.
    """
    text = source.text
    markers = _markers(text, family)
    if not markers:
        return None
    lines: Dict[str, int] = {}
    for found in markers:
        lines.setdefault(found.patch.id, line_at(text, found.start))
    kept = {found.sha256 for found in markers}
    sha256 = kept.pop() if len(kept) == 1 else None
    first: Optional[List[List[Tuple[int, int]]]] = None
    for tries, placement in enumerate(_placements(text, markers, len(markers))):
        first = first or placement
        if sha256 is not None and sha256_hex(source.encode(_cut(text, _all_spans(markers, placement)))) == sha256:
            return Ours(True, True, sha256, _cut(text, _all_spans(markers, placement)), _by_patch(markers, placement), lines)
        if tries + 1 >= _MAX_TRIES:
            break
    placed = first is not None
    if first is None:  # a marker without the text we insert before it
        first = [[] for _ in markers]
    return Ours(False, placed, sha256, _cut(text, _all_spans(markers, first)), _by_patch(markers, first), lines)


def _placements(text: str, markers: List[_Marker], count: int) -> Iterator[List[List[Tuple[int, int]]]]:
    """Every placement of the first ``count`` markers' insertions (a list of spans per
    marker), each between the marker before and its own, nearest placements first."""
    if count == 0:
        yield []
        return
    found = markers[count - 1]
    low = markers[count - 2].end if count > 1 else 0
    for edit in found.patch.edits:
        for spans in _spans(text, low, found.start, edit.insertions):
            for earlier in _placements(text, markers, count - 1):
                yield earlier + [spans]


def _spans(text: str, low: int, high: int, insertions: Tuple[str, ...]) -> Iterator[List[Tuple[int, int]]]:
    """Where ``insertions`` (in order, apart) can stand in ``text[low:high]``, nearest to
    ``high`` first."""
    if not insertions:
        yield []
        return
    *before, last = insertions
    at = text.rfind(last, low, high)
    while at >= 0:
        for earlier in _spans(text, low, at, tuple(before)):
            yield earlier + [(at, at + len(last))]
        at = text.rfind(last, low, at + len(last) - 1)


def _all_spans(markers: List[_Marker], placement: List[List[Tuple[int, int]]]) -> List[Tuple[int, int]]:
    return [span for found, spans in zip(markers, placement) for span in spans + [(found.start, found.end)]]


def _by_patch(markers: List[_Marker], placement: List[List[Tuple[int, int]]]) -> Dict[str, List[Tuple[int, int]]]:
    spans: Dict[str, List[Tuple[int, int]]] = {}
    for found, insertions in zip(markers, placement):
        spans.setdefault(found.patch.id, []).extend(insertions + [(found.start, found.end)])
    return spans


def _cut(text: str, spans: List[Tuple[int, int]]) -> str:
    """``text`` without the (disjoint) ``spans``."""
    for start, end in sorted(spans, reverse=True):
        text = text[:start] + text[end:]
    return text


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
    if ours is not None and patch.id in ours.spans:
        line = _first_line(ours.original, ours.lines[patch.id])
        undone = ours.without(source.text, patch)
        if ours.exact:
            message = "patched by mmcv-patcher"
            if _differs_from_record(ours.sha256, release):
                message += "; before that, the file already differed from the release's RECORD"
            return Plan(State.PATCHED, line, message, new_text=undone, original_sha256=ours.sha256), None
        if not ours.placed:
            return Plan(State.DRIFTED, line, f"our marker is there but the text we inserted is not; {release.reinstall()}", ok=False), None
        return Plan(State.DRIFTED, line, f"the patched file was edited after mmcv-patcher patched it; {release.reinstall()}", new_text=undone, ok=False), None
    if ours is not None and not ours.exact:
        others = ", ".join(f"{id} at line {_first_line(ours.original, at)}" for id, at in ours.lines.items())
        return Plan(State.DRIFTED, None, f"other mmcv-patcher edits in this file ({others}) were changed since; revert them (--force) first", ok=False), None
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
    ``source``, found exactly by :func:`find_ours`, so they merge without conflict."""
    inserted: List[Tuple[int, int, str]] = []  # (where in source, in which order, what)
    for patch, text in changes:
        ours = find_ours(Source(text, source.encoding), family)
        assert ours is not None and ours.exact, "each text is the source plus one patch's change"
        shift = 0
        for start, end in sorted(ours.spans[patch.id]):
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


def _first_line(original: str, last: int) -> int:
    """The first line of the statement line that ends on line ``last`` (where our marker
    is), so that every state names the line the codemod names; ``last`` itself when
    ``ast`` cannot say (the file does not parse, or Python 3.7, whose ``ast`` has no end
    lines). Asked of the text without our edits, which has the same lines (we insert no
    newline) and stays the same while a revert takes our edits out one by one."""
    tree = _tree(original)
    ending = [node.lineno for node in ast.walk(tree) if isinstance(node, ast.stmt) and not hasattr(node, "body") and getattr(node, "end_lineno", None) == last] if tree else []
    return min(ending, default=last)


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
    spans = {} if after is None or not after.exact or after.original != original else after.spans
    exact = _cut(found.patched_text, [span for patch in patches for span in spans.get(patch.id, [])]) == source.text
    plans = []
    for patch, release, counts in pending:
        alone = None
        if exact and patch.id in spans:
            alone = _cut(found.patched_text, [span for other in patches if other is not patch for span in spans.get(other.id, [])])
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
    """What ``revert`` does: take out exactly our edit, only onto the original's hash
    unless ``--force``; files we did not patch are never touched."""
    state = assessed.state
    if state is State.PATCHED:
        after = State.UNPATCHED if gate(patch, release)[0] is Gate.AFFECTED else State.UNVERIFIED
        if _differs_from_record(assessed.original_sha256, release):
            # Exactly what was there before we patched, but not what the release installed.
            message = f"reverted to the bytes from before patching, which differ from the release's RECORD (edited before it was patched); {release.reinstall()}"
            return Plan(after, assessed.line, message, new_text=assessed.new_text)
        return Plan(after, assessed.line, "reverted to the original bytes", new_text=assessed.new_text)
    if state is State.DRIFTED and assessed.new_text is not None:
        if force:
            return Plan(State.UNPATCHED, assessed.line, "removed our edit (--force; the rest of the file was edited)", new_text=assessed.new_text)
        return Plan(state, assessed.line, assessed.message + "; revert --force removes our edit anyway", ok=False)
    if state is State.DRIFTED:
        return Plan(state, assessed.line, assessed.message, ok=False)
    return Plan(state, assessed.line, f"{assessed.message}; nothing to revert")
