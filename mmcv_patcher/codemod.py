"""The LibCST codemod behind every patch: find the anchor structurally, insert the fix.

This is the only module that imports LibCST (about 0.15 s), so ``status`` on a file whose
state is known from its hash or marker never loads it. All the patches of a file are found
in one pass: LibCST parses each function they name once, alone when Python's own (much
faster) parser can say exactly which lines hold it, and the whole file otherwise; it visits
only statements, and it finds line numbers by rendering sentinel comments instead of
resolving ``PositionProvider`` metadata, which costs more than the parse itself.
"""

import dataclasses
import functools
import os
from typing import Any, Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple, TypeVar, Union

import libcst as cst

from mmcv_patcher.model import Edit, Patch, Scan
from mmcv_patcher.source import first_newline, line_at, line_starts

#: Fields that carry formatting, not meaning: ignored when comparing shapes.
_FORMATTING_FIELDS = frozenset(
    {
        "lpar",
        "rpar",
        "comma",
        "lbracket",
        "rbracket",
        "dot",
        "first_colon",
        "second_colon",
        "semicolon",
        "leading_lines",
        "trailing_whitespace",
    }
)
_EMPTY = cst.Module(body=[])
_StatementLine = Union[cst.SimpleStatementLine, cst.SimpleStatementSuite]
_Line = TypeVar("_Line", cst.SimpleStatementLine, cst.SimpleStatementSuite)


class ParseFailure(Exception):
    """LibCST could not parse the file; ``line`` is where it stopped (1-based)."""

    def __init__(self, line: int, reason: str) -> None:
        super().__init__(reason)
        self.line = line
        self.reason = reason


class FileScan(NamedTuple):
    """What the codemod found in one file for several patches, in one pass."""

    #: patch id -> what it found for that patch
    scans: Dict[str, Scan]
    #: the whole file with every anchor of every patch fixed and marked
    patched_text: str


def shape(node: Any, memo: Optional[Dict[int, Any]] = None) -> Any:
    """A hashable picture of ``node`` that ignores whitespace, comments and parentheses.
    ``memo`` keeps the picture of each node under it, by id, while the caller keeps the
    nodes alive."""
    if isinstance(node, cst.CSTNode):
        if memo is not None and id(node) in memo:
            return memo[id(node)]
        found = (type(node).__name__,) + tuple(shape(getattr(node, name), memo) for name in _meaningful_fields(type(node)))
        if memo is not None:
            memo[id(node)] = found
        return found
    if isinstance(node, (list, tuple)):
        return tuple(shape(child, memo) for child in node)
    if isinstance(node, cst.MaybeSentinel):
        return None
    return node


@functools.lru_cache(maxsize=None)
def _meaningful_fields(kind: type) -> Tuple[str, ...]:
    """The fields of a kind of node that carry meaning, not formatting (asked once per kind:
    :func:`dataclasses.fields` is too slow to ask for every node)."""
    return tuple(f.name for f in dataclasses.fields(kind) if f.name not in _FORMATTING_FIELDS and not f.name.startswith("whitespace"))


class _Wrap(NamedTuple):
    """Where ``fixed`` wraps what ``anchor`` has (``boxes`` becomes ``boxes.float()``):
    ``template`` is that part of the fix, ``hole`` its node shaped like the anchor's."""

    template: cst.CSTNode
    hole: cst.CSTNode


#: How to turn a statement shaped like an anchor into its fix, worked out once per edit:
#: None (keep the node), a wrap, or per changed field the recipe for its node or children.
_Recipe = Union[None, _Wrap, Tuple[Tuple[str, Any], ...]]


class _Edit(NamedTuple):
    """An edit's statements as LibCST nodes, with their shapes."""

    anchor: cst.BaseSmallStatement
    fixed: cst.BaseSmallStatement
    anchor_shape: Any
    fixed_shape: Any


@functools.lru_cache(maxsize=None)
def _compiled(edit: Edit) -> _Edit:
    """An edit made ready for the codemod, once per run."""
    anchor, fixed = _statement(edit.anchor), _statement(edit.fixed)
    return _Edit(anchor, fixed, shape(anchor), shape(fixed))


def _statement(code: str) -> cst.BaseSmallStatement:
    line = cst.parse_statement(code)
    assert isinstance(line, cst.SimpleStatementLine) and len(line.body) == 1, code
    return line.body[0]


class _Mismatch(Exception):
    """``fixed`` does not add to ``anchor`` in a way :func:`_recipe` can follow."""


def _recipe(anchor: Any, fixed: Any, memo: Dict[int, Any]) -> _Recipe:
    """How ``fixed`` adds to ``anchor``, so that a node shaped like ``anchor`` gets the same
    additions while keeping its own formatting everywhere else.

    Where ``fixed`` has the same kind of node as ``anchor``, their children are compared
    pairwise; where it differs, ``fixed`` wraps ``anchor`` there, and the wrapper, parsed from
    the canonical text, is put around the file's own node. Raises :class:`_Mismatch`
    otherwise. ``memo`` is as for :func:`shape`: each subtree's shape is taken once.
    """
    if shape(anchor, memo) == shape(fixed, memo):
        return None
    if type(anchor) is type(fixed) and isinstance(anchor, cst.CSTNode):
        try:
            changes: List[Tuple[str, Any]] = []
            for name in _meaningful_fields(type(anchor)):
                old, new = getattr(anchor, name), getattr(fixed, name)
                if shape(old, memo) == shape(new, memo):
                    continue
                if isinstance(old, (list, tuple)):
                    if len(old) != len(new):
                        raise _Mismatch
                    changes.append((name, tuple(_recipe(o, n, memo) for o, n in zip(old, new))))
                elif isinstance(old, cst.CSTNode):
                    changes.append((name, _recipe(old, new, memo)))
                else:
                    raise _Mismatch
            return tuple(changes)
        except _Mismatch:
            pass  # the same kind of node can still wrap it: f(x) -> g(f(x))
    if isinstance(fixed, cst.CSTNode):
        wanted = shape(anchor, memo)
        holes = [node for node in _nodes(fixed) if shape(node, memo) == wanted]
        if len(holes) == 1:
            return _Wrap(fixed, holes[0])
    raise _Mismatch


def _nodes(node: cst.CSTNode) -> List[cst.CSTNode]:
    """``node`` and every node under it."""
    found = [node]
    for child in node.children:
        found.extend(_nodes(child))
    return found


def _follow(recipe: _Recipe, actual: Any) -> Any:
    """``actual`` (shaped like the recipe's anchor) with the fix's additions."""
    if recipe is None:
        return actual
    if isinstance(recipe, _Wrap):
        return recipe.template.deep_replace(recipe.hole, actual)
    changes = {}
    for name, inner in recipe:
        mine = getattr(actual, name)
        changes[name] = tuple(_follow(r, m) for r, m in zip(inner, mine)) if isinstance(mine, (list, tuple)) else _follow(inner, mine)
    return actual.with_changes(**changes)


#: Nodes whose children can hold statements; the codemod descends into nothing else.
_STATEMENT_CONTAINERS = tuple(
    getattr(cst, name)
    for name in ("BaseCompoundStatement", "BaseSuite", "Else", "ExceptHandler", "ExceptStarHandler", "Finally", "MatchCase")
    if hasattr(cst, name)
)


class _Codemod(cst.CSTTransformer):
    """Fixes and marks every anchor statement of every edit of the patches of one function;
    tags every already-fixed one with its patch's sentinel."""

    def __init__(self, patches: Sequence[Patch], markers: Sequence[str], sentinels: Sequence[str]) -> None:
        super().__init__()
        #: (patch index, edit index, edit) for every edit of every patch
        self.edits = [(k, index, _compiled(edit)) for k, patch in enumerate(patches) for index, edit in enumerate(patch.edits)]
        #: cheap filters: shapes are only worth computing for statements of these kinds, and,
        #: for assignments, with these targets
        statements = [statement for _, _, edit in self.edits for statement in (edit.anchor, edit.fixed)]
        self.kinds = tuple({type(statement) for statement in statements})
        self.heads = {_head(statement) for statement in statements}
        #: per edit that matched, how to fix it: worked out on the first match
        self.recipes: Dict[Tuple[int, int], _Recipe] = {}
        self.markers = markers
        self.sentinels = sentinels
        self.anchors = [[0] * len(patch.edits) for patch in patches]
        self.fixed = [[0] * len(patch.edits) for patch in patches]
        #: per patch, per line it tagged, how far that line runs past its first, in file order
        self.anchor_spans: List[List[int]] = [[] for _ in patches]
        self.fixed_spans: List[List[int]] = [[] for _ in patches]

    def on_visit(self, node: cst.CSTNode) -> bool:
        # Statements never sit inside expressions: skipping those subtrees makes the visit
        # cost a few dozen nodes instead of thousands. leave_* still runs for every node.
        return isinstance(node, _STATEMENT_CONTAINERS)

    def _leave_line(self, updated: _Line) -> _Line:
        body = list(updated.body)
        marked: List[int] = []  # the patches with an anchor on this line
        tagged: List[int] = []  # those with a fixed statement on it (told only on a line without anchors)
        for i, statement in enumerate(body):
            if not isinstance(statement, self.kinds) or _head(statement) not in self.heads:
                continue
            statement_shape = shape(statement)
            for k, index, edit in self.edits:
                if statement_shape == edit.anchor_shape:
                    if (k, index) not in self.recipes:
                        self.recipes[k, index] = _recipe(edit.anchor, edit.fixed, {})
                    body[i] = _follow(self.recipes[k, index], statement)
                    self.anchors[k][index] += 1
                    marked.append(k)
                elif statement_shape == edit.fixed_shape:
                    self.fixed[k][index] += 1
                    tagged.append(k)
        if not marked and not tagged:
            return updated
        span = _line_span(updated)
        trailing = updated.trailing_whitespace
        for k in dict.fromkeys(marked):
            self.anchor_spans[k].append(span)
            trailing = _append_comment(trailing, self.markers[k])
        for k in dict.fromkeys(tagged) if not marked else ():
            self.fixed_spans[k].append(span)
            trailing = _append_comment(trailing, self.sentinels[k])
        return updated.with_changes(body=body, trailing_whitespace=trailing)

    def leave_SimpleStatementLine(
        self, original_node: cst.SimpleStatementLine, updated_node: cst.SimpleStatementLine
    ) -> cst.SimpleStatementLine:
        return self._leave_line(updated_node)

    def leave_SimpleStatementSuite(
        self, original_node: cst.SimpleStatementSuite, updated_node: cst.SimpleStatementSuite
    ) -> cst.SimpleStatementSuite:
        return self._leave_line(updated_node)


def _head(statement: cst.CSTNode) -> Any:
    """What cheaply tells statements apart before their whole shapes are compared."""
    return shape(statement.targets) if isinstance(statement, cst.Assign) else type(statement).__name__


def _line_span(line: _StatementLine) -> int:
    """How many lines past its first the statement line runs (0 for a one-liner)."""
    if isinstance(line, cst.SimpleStatementLine):
        line = line.with_changes(leading_lines=())
    code = _EMPTY.code_for_node(line)  # ends with its newline
    return line_at(code, len(code)) - 2


def _append_comment(trailing: cst.TrailingWhitespace, text: str) -> cst.TrailingWhitespace:
    """Adds ``text`` at the end of the line, after any comment already there."""
    if trailing.comment is None:
        return trailing.with_changes(whitespace=cst.SimpleWhitespace(trailing.whitespace.value + "  "), comment=cst.Comment(text))
    return trailing.with_changes(comment=cst.Comment(trailing.comment.value + "  " + text))


def _lines_of(text: str, needle: str) -> List[int]:
    """1-based numbers of the lines of ``text`` that contain ``needle``, counted as Python does."""
    lines: List[int] = []
    start = 0
    while True:
        found = text.find(needle, start)
        if found < 0:
            return lines
        lines.append(line_at(text, found))
        start = found + len(needle)


def _first_lines(last_lines: List[int], spans: List[int]) -> Tuple[int, ...]:
    """First lines of the tagged statement lines, from the lines their tags landed on."""
    return tuple(last - span for last, span in zip(last_lines, spans))


def scan(text: str, patches: Sequence[Patch], markers: Mapping[str, str]) -> FileScan:
    """Finds every patch's anchor and fixed statements in its function, and fixes anchors,
    in one pass: each function is parsed once, whatever number of patches change it.

    ``markers`` (patch id -> comment) are put on the last line of each fixed anchor. Raises
    :class:`ParseFailure` when LibCST cannot parse ``text``.
    """
    functions: Dict[str, List[Patch]] = {}
    for patch in patches:
        functions.setdefault(patch.function, []).append(patch)
    regions = _function_regions(text, list(functions))
    if regions is not None:
        scans: Dict[str, Scan] = {}
        pieces = []
        config = cst.PartialParserConfig(default_newline=first_newline(text))
        for function, group in functions.items():
            region = regions.get(function)
            if region is None:  # ast is sure: no such module-level function
                scans.update((patch.id, _absent(patch)) for patch in group)
                continue
            start, end, first_line, definitions = region
            try:
                found = _scan(text[start:end], {function: group}, markers, config)
            except ParseFailure:
                break  # LibCST reads this syntax differently from ast: let the whole file decide
            if any(each.function_line is None for each in found.scans.values()):
                break
            shift = first_line - 1
            for id, each in found.scans.items():
                scans[id] = Scan(
                    function_line=(each.function_line or 0) + shift,
                    definitions=definitions,
                    anchors=each.anchors,
                    fixed=each.fixed,
                    anchor_lines=tuple(line + shift for line in each.anchor_lines),
                    fixed_lines=tuple(line + shift for line in each.fixed_lines),
                )
            pieces.append((start, end, found.patched_text))
        else:
            for start, end, piece in sorted(pieces, reverse=True):
                text = text[:start] + piece + text[end:]
            return FileScan(scans, text)
    return _scan(text, functions, markers, cst.PartialParserConfig())


def _absent(patch: Patch) -> Scan:
    """What a scan finds for a patch whose function is not in the file."""
    return Scan(None, 0, (0,) * len(patch.edits), (0,) * len(patch.edits), (), ())


def _function_regions(text: str, functions: Sequence[str]) -> Optional[Dict[str, Tuple[int, int, int, int]]]:
    """Per function, (start, end, first line, number of definitions) for the lines that hold
    its last module-level definition (the one Python binds), decorators included, as Python's
    ``ast`` sees it in a tenth of LibCST's parse time; functions not defined are left out.

    None when ``ast`` cannot say for sure: a syntax error, or Python 3.7 (whose ``ast`` has no
    end lines).
    """
    import ast
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # invalid escapes and the like are not ours to report
            tree = ast.parse(text)
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return None
    starts = line_starts(text)
    regions = {}
    for function in functions:
        found = [node for node in tree.body if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == function]
        if not found:
            continue
        last = getattr(found[-1], "end_lineno", None)
        if last is None:
            return None
        first = min([found[-1].lineno] + [decorator.lineno for decorator in found[-1].decorator_list])
        regions[function] = (starts[first - 1], starts[last] if last < len(starts) else len(text), first, len(found))
    return regions


def _scan(text: str, functions: Mapping[str, Sequence[Patch]], markers: Mapping[str, str], config: cst.PartialParserConfig) -> FileScan:
    """:func:`scan` on ``text`` as a whole module, for the patches of each function."""
    try:
        module = cst.parse_module(text, config)
    except cst.ParserSyntaxError as error:
        raise ParseFailure(error.raw_line, error.message) from None
    token = os.urandom(16).hex()  # sentinels are never already in the text
    scans: Dict[str, Scan] = {}
    changes = []
    tags = []  # per function: its sentinel, and per patch its marker and fixed-sentinel
    for number, (function, group) in enumerate(functions.items()):
        def_sentinel = f"# mmcv-patcher-def-{number}-{token}"
        sentinels = [f"# mmcv-patcher-fixed-{number}-{k}-{token}" for k in range(len(group))]
        found = [(index, statement) for index, statement in enumerate(module.body) if isinstance(statement, cst.FunctionDef) and statement.name.value == function]
        if not found:
            scans.update((patch.id, _absent(patch)) for patch in group)
            continue
        index, statement = found[-1]  # Python binds the last one
        codemod = _Codemod(group, [markers[patch.id] for patch in group], sentinels)
        changed = statement.visit(codemod)
        assert isinstance(changed, cst.FunctionDef)  # the codemod never removes a function
        if isinstance(changed.body, cst.IndentedBlock):
            header = _append_comment(changed.body.header, def_sentinel)
            changed = changed.with_changes(body=changed.body.with_changes(header=header))
        changes.append((index, statement, changed))
        tags.append((group, len(found), codemod, def_sentinel, sentinels))
    marked = _render(text, module, changes)
    for group, definitions, codemod, def_sentinel, sentinels in tags:
        function_lines = _lines_of(marked, def_sentinel)
        for k, patch in enumerate(group):
            scans[patch.id] = Scan(
                function_line=function_lines[0] if function_lines else None,
                definitions=definitions,
                anchors=tuple(codemod.anchors[k]),
                fixed=tuple(codemod.fixed[k]),
                anchor_lines=_first_lines(_lines_of(marked, markers[patch.id]), codemod.anchor_spans[k]),
                fixed_lines=_first_lines(_lines_of(marked, sentinels[k]), codemod.fixed_spans[k]),
            )
        for sentinel in [def_sentinel] + sentinels:
            marked = marked.replace("  " + sentinel, "")
    return FileScan(scans, marked)


def _render(text: str, module: cst.Module, changes: Sequence[Tuple[int, cst.FunctionDef, cst.FunctionDef]]) -> str:
    """``text`` with each top-level statement at ``index`` changed from ``before`` to
    ``after``. Renders only those statements and splices them in when each original
    statement's text occurs exactly once (so its place is certain); otherwise renders the
    whole module, which costs several times more."""
    if len(module.body) == 1 and len(changes) == 1 and module.default_newline != "\r":
        # The function alone (ast placed it): render just that. (A whole module with old-Mac
        # newlines loses its last one when LibCST renders it; those take the splice below.)
        return module.with_changes(body=[changes[0][2]]).code
    spliced = text
    for _, before, after in changes:
        old = module.code_for_node(before)
        at = spliced.find(old)
        if at < 0 or spliced.find(old, at + 1) >= 0:
            break
        spliced = spliced[:at] + module.code_for_node(after) + spliced[at + len(old):]
    else:
        return spliced
    body: List[Any] = list(module.body)
    for index, _, after in changes:
        body[index] = after
    return module.with_changes(body=body).code
