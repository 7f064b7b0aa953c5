"""Our edits in a file: find each marker, check the statement it ends, take them out.

Every statement ``apply`` changes gets a marker comment at the end of its last line,
``# mmcv-patcher: <patch id> sha256=<hex of the file before any of our patches>``, and the
statement gets the patch's insertions (:attr:`mmcv_patcher.model.Edit.insertions`). Each
marker is judged on its own statement, found with Python's ``ast``: it is *intact* when the
statement is one of its patch's fixes and taking the insertions out leaves that
edit's anchor, with nothing after the marker on its line. So a person's edit to one of our
statements flags that patch alone, and look-alike text elsewhere can never be taken for ours.

The search for where the insertions stand is confined to the one statement and bounded
(:data:`MAX_TRIES` placements per marker), so any file is judged quickly, whatever it holds.
Nothing here imports LibCST.
"""

import itertools
import re
from typing import Iterator, List, NamedTuple, Optional, Sequence, Set, Tuple

from mmcv_patcher.find import ParseFailure, dump_statement, dumps, offset, parse, statements
from mmcv_patcher.model import Edit, Patch
from mmcv_patcher.source import Source, line_at, line_end, line_starts, sha256_hex

#: Placements of a statement's insertions tried per marker before it is judged edited.
MAX_TRIES = 256

Span = Tuple[int, int]


def marker(patch: Patch, original_sha256: str) -> str:
    """The comment that identifies our edit and remembers the bytes it replaced."""
    return f"# mmcv-patcher: {patch.id} sha256={original_sha256}"


class Mark(NamedTuple):
    """One marker of ours and the statement it ends."""

    patch: Patch
    #: the first line of the statement (the marker's own line when no statement ends there)
    line: int
    #: the sha256 of the file before any of our patches, as the marker keeps it
    sha256: str
    #: what a revert takes out: our insertions still in the statement, then the marker
    spans: Tuple[Span, ...]
    #: whether the statement is exactly as we left it
    intact: bool
    #: whether it is exactly as an earlier version of this tool left it (:attr:`Edit.was`)
    earlier: bool = False


class Ours(NamedTuple):
    """Every marker of one file's patches, in file order, and what taking them out gives."""

    marks: Tuple[Mark, ...]
    #: what every marker remembers (None when they disagree)
    sha256: Optional[str]
    #: the text with all our insertions and markers taken out
    original: str
    #: whether ``original`` is exactly the bytes the markers remember
    exact: bool

    def of(self, patch: Patch) -> Tuple[Mark, ...]:
        return tuple(mark for mark in self.marks if mark.patch.id == patch.id)

    def intact(self, patch: Patch) -> bool:
        """Whether ``patch`` has markers and every one of its statements is as we left it."""
        marks = self.of(patch)
        return bool(marks) and all(mark.intact for mark in marks)

    def earlier(self, patch: Patch) -> bool:
        """Whether ``patch``'s statements are as this version or an earlier one left them, at
        least one of them an earlier version's fix: ours, to take out exactly."""
        marks = self.of(patch)
        return any(mark.earlier for mark in marks) and all(mark.intact or mark.earlier for mark in marks)

    def line(self, patch: Patch) -> int:
        """The first line of ``patch``'s first statement that is not intact, else of its first."""
        marks = self.of(patch)
        return next((mark.line for mark in marks if not mark.intact), marks[0].line)

    def without(self, text: str, patch: Patch) -> str:
        """``text`` with only ``patch``'s insertions and markers taken out."""
        return cut(text, [span for mark in self.of(patch) for span in mark.spans])


def find_ours(source: Source, family: Sequence[Patch]) -> Optional[Ours]:
    """Our edits in ``source`` for the patches of its file (``family``); None without a marker."""
    text = source.text
    found = _markers(text, family)
    if not found:
        return None
    statements = _simple_statements(text)
    claimed: Set[int] = set()  # a statement is one marker's: two on one line take one each
    marks = tuple(_judge(text, statements, claimed, patch, start, end, sha256) for patch, start, end, sha256 in found)
    kept = {mark.sha256 for mark in marks}
    sha256 = kept.pop() if len(kept) == 1 else None
    original = cut(text, [span for mark in marks for span in mark.spans])
    return Ours(marks, sha256, original, sha256 is not None and sha256_hex(source.encode(original)) == sha256)


def cut(text: str, spans: Sequence[Span]) -> str:
    """``text`` without the (disjoint) ``spans``."""
    for start, end in sorted(spans, reverse=True):
        text = text[:start] + text[end:]
    return text


def _markers(text: str, family: Sequence[Patch]) -> List[Tuple[Patch, int, int, str]]:
    """(patch, start, end, sha256) of each marker of ``family`` in ``text``, in file order:
    two spaces, the comment and 64 lowercase hex digits, anywhere on a line."""
    by_id = {patch.id: patch for patch in family}
    return [
        (by_id[m.group(1)], m.start(), m.end(), m.group(2)) for m in re.finditer(_MARKER, text) if m.group(1) in by_id
    ]


class _Simple(NamedTuple):
    """A statement without a body, where it starts in the text."""

    start: int
    line: int


def _simple_statements(text: str) -> List[_Simple]:
    """Every statement without a body (an assignment, an expression, a return...), in
    file order; none when Python cannot parse the text."""
    tree = parse(text)
    if isinstance(tree, ParseFailure):
        return []
    starts = line_starts(text)
    found = [
        _Simple(offset(text, starts, node.lineno, node.col_offset), node.lineno)
        for node in statements(tree)
        if not hasattr(node, "body")
    ]
    return sorted(found)


def _judge(
    text: str, statements: List[_Simple], claimed: Set[int], patch: Patch, start: int, end: int, sha256: str
) -> Mark:
    """The mark for the marker at ``text[start:end]``: the statement it ends (one no
    earlier marker claimed), and what of ours is left in it. It is intact only when nothing
    but our markers follows it on its line."""
    alone = _ONLY_MARKERS.fullmatch(text, end, line_end(text, end)) is not None
    candidates = _ending_before(statements, start)
    for statement in candidates:
        if statement.start in claimed:
            continue
        segment = text[statement.start : start]
        for edit in patch.edits:
            earlier = _earlier_fix(segment, edit) if alone else None
            if earlier is not None:  # exactly as an earlier version of this tool left it
                shifted = tuple((statement.start + a, statement.start + b) for a, b in earlier)
                claimed.add(statement.start)
                return Mark(patch, statement.line, sha256, shifted + ((start, end),), False, True)
            found = _our_insertions(segment, edit)
            if found is not None:
                spans, complete = found
                intact = complete and alone and dumps(segment)[:1] == [dump_statement(edit.fix)]
                shifted = tuple((statement.start + a, statement.start + b) for a, b in spans)
                claimed.add(statement.start)
                return Mark(patch, statement.line, sha256, shifted + ((start, end),), intact)
    # Edited around our insertions: name the statement the marker ends, if it ends exactly
    # one, and take our insertions out with the marker where they stand in one place only.
    ends_one = bool(candidates) and len(dumps(text[candidates[0].start : start])) == 1
    if not ends_one:
        return Mark(patch, line_at(text, start), sha256, ((start, end),), False)
    statement = candidates[0]
    left = _only_placement(text[statement.start : start], patch)
    return Mark(
        patch,
        statement.line,
        sha256,
        tuple((statement.start + a, statement.start + b) for a, b in left) + ((start, end),),
        False,
    )


def _earlier_fix(segment: str, edit: Edit) -> Optional[Tuple[Span, ...]]:
    """Where the insertions of one of ``edit``'s earlier fixes (:attr:`Edit.was`) stand in
    ``segment``, when the statement is exactly that fix; None otherwise."""
    for earlier in edit.was:
        older = Edit(edit.anchor, earlier)
        found = _our_insertions(segment, older)
        if found is not None and found[1] and dumps(segment)[:1] == [dump_statement(earlier)]:
            return found[0]
    return None


def _only_placement(segment: str, patch: Patch) -> Tuple[Span, ...]:
    """Where one of ``patch``'s edits has all its insertions in ``segment`` when that is
    the only such place (taking them out still leaves a statement); none otherwise."""
    found = []
    for edit in patch.edits:
        for spans in itertools.islice(_placements(segment, edit.insertions, 0), 2):
            if dumps(cut(segment, spans)):
                found.append(tuple(spans))
    return found[0] if len(found) == 1 else ()


_MARKER = r"  # mmcv-patcher: ([A-Za-z0-9_.-]+) sha256=([0-9a-f]{64})(?![0-9a-f])"
_ONLY_MARKERS = re.compile(f"(?:{_MARKER})*")


def _ending_before(statements: List[_Simple], offset: int) -> List[_Simple]:
    """The statements of the logical line that ends at ``offset`` (where a marker is), the
    last first: the last statement starting before it, and those on the same first line."""
    before = [statement for statement in statements if statement.start < offset]
    if not before:
        return []
    last = before[-1]
    return [statement for statement in reversed(before) if statement.line == last.line]


def _our_insertions(segment: str, edit: Edit) -> Optional[Tuple[Tuple[Span, ...], bool]]:
    """Where ``edit``'s insertions stand in ``segment`` (a statement and what follows it on
    its line, up to our marker) such that taking them out leaves the edit's anchor and the
    rest of the line as it is; and whether all of them are there. Tries every insertion
    first, then fewer (some taken out by hand); None when no placement of at most
    :data:`MAX_TRIES` does."""
    anchor = dump_statement(edit.anchor)
    rest = dumps(segment)[1:]
    insertions = edit.insertions
    tries = 0
    for size in range(len(insertions), -1, -1):
        for chosen in itertools.combinations(insertions, size):
            for spans in _placements(segment, chosen, 0):
                tries += 1
                if tries > MAX_TRIES:
                    return None
                if dumps(cut(segment, spans)) == [anchor] + rest:
                    return tuple(spans), size == len(insertions)
    return None


def _placements(segment: str, insertions: Sequence[str], low: int) -> Iterator[List[Span]]:
    """Every way ``insertions`` can stand in ``segment`` in order, apart, from ``low`` on."""
    if not insertions:
        yield []
        return
    first, rest = insertions[0], insertions[1:]
    at = segment.find(first, low)
    while at >= 0:
        for later in _placements(segment, rest, at + len(first)):
            yield [(at, at + len(first))] + later
        at = segment.find(first, at + 1)
