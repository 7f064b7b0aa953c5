"""The LibCST codemod behind every patch: find the anchor structurally, insert the fix.

This is the only module that imports LibCST (about 0.15 s), so ``status`` on a file whose
state is known from its hash or marker never loads it. LibCST parses only the function a
patch names when Python's own (much faster) parser can say exactly which lines hold it, and
the whole file otherwise; it visits only statements, and it finds line numbers by rendering
sentinel comments instead of resolving ``PositionProvider`` metadata, which costs more than
the parse itself.
"""

import dataclasses
import functools
import os
from typing import Any, List, NamedTuple, Optional, Tuple, TypeVar, Union

import libcst as cst

from mmcv_patcher.model import Patch
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


class Scan(NamedTuple):
    """What the codemod found in one file for one patch.

    ``patched_text`` is the whole file with every anchor fixed and marked.
    """

    function_line: Optional[int]
    #: module-level definitions of the function; only the last, which Python binds, counts
    definitions: int
    #: per edit of the patch: how many anchors, and how many already-fixed statements
    anchors: Tuple[int, ...]
    fixed: Tuple[int, ...]
    anchor_lines: Tuple[int, ...]
    fixed_lines: Tuple[int, ...]
    patched_text: str


def shape(node: Any) -> Any:
    """A hashable picture of ``node`` that ignores whitespace, comments and parentheses."""
    if isinstance(node, cst.CSTNode):
        return (type(node).__name__,) + tuple(
            shape(getattr(node, f.name))
            for f in dataclasses.fields(node)
            if f.name not in _FORMATTING_FIELDS and not f.name.startswith("whitespace")
        )
    if isinstance(node, (list, tuple)):
        return tuple(shape(child) for child in node)
    if isinstance(node, cst.MaybeSentinel):
        return None
    return node


@functools.lru_cache(maxsize=None)
def _parsed(anchor: str, fixed: str) -> Tuple[cst.BaseSmallStatement, cst.BaseSmallStatement, Any, Any]:
    """An edit's two statements as LibCST nodes and shapes, made once per run."""
    anchor_node, fixed_node = _statement(anchor), _statement(fixed)
    return anchor_node, fixed_node, shape(anchor_node), shape(fixed_node)


def _statement(code: str) -> cst.BaseSmallStatement:
    line = cst.parse_statement(code)
    assert isinstance(line, cst.SimpleStatementLine) and len(line.body) == 1, code
    return line.body[0]


class _Substitute(cst.CSTTransformer):
    """Replaces each node shaped like ``target`` by ``replacement``, counting them."""

    def __init__(self, target: Any, replacement: cst.CSTNode) -> None:
        super().__init__()
        self.target = target
        self.replacement = replacement
        self.count = 0

    def on_leave(self, original_node: cst.CSTNode, updated_node: cst.CSTNode) -> Any:
        if shape(original_node) == self.target:
            self.count += 1
            return self.replacement
        return updated_node


class _Mismatch(Exception):
    """``fixed`` does not add to ``anchor`` in a way :func:`_insert` can follow."""


def _insert(actual: Any, anchor: Any, fixed: Any) -> Any:
    """``actual`` (shaped like ``anchor``) with what ``fixed`` adds to ``anchor``, keeping
    ``actual``'s own formatting everywhere else.

    Where ``fixed`` has the same kind of node as ``anchor``, their children are compared
    pairwise; where it differs, ``fixed`` wraps ``anchor`` there (``boxes`` becomes
    ``boxes.float()``), and the wrapper, parsed from the canonical text, is put around the
    file's own node. Raises :class:`_Mismatch` otherwise.
    """
    if shape(anchor) == shape(fixed):
        return actual
    if type(anchor) is type(fixed) and isinstance(anchor, cst.CSTNode):
        try:
            changes = {}
            for field in dataclasses.fields(anchor):
                name = field.name
                if name in _FORMATTING_FIELDS or name.startswith("whitespace"):
                    continue
                old, new, mine = getattr(anchor, name), getattr(fixed, name), getattr(actual, name)
                if shape(old) == shape(new):
                    continue
                if isinstance(old, (list, tuple)):
                    if not len(old) == len(new) == len(mine):
                        raise _Mismatch
                    changes[name] = tuple(_insert(m, o, n) for m, o, n in zip(mine, old, new))
                elif isinstance(old, cst.CSTNode):
                    changes[name] = _insert(mine, old, new)
                else:
                    raise _Mismatch
            return actual.with_changes(**changes)
        except _Mismatch:
            pass  # the same kind of node can still wrap it: f(x) -> g(f(x))
    if isinstance(fixed, cst.CSTNode):
        substitute = _Substitute(shape(anchor), actual)
        wrapped = fixed.visit(substitute)
        if substitute.count == 1:
            return wrapped
    raise _Mismatch


#: Nodes whose children can hold statements; the codemod descends into nothing else.
_STATEMENT_CONTAINERS = tuple(
    getattr(cst, name)
    for name in ("BaseCompoundStatement", "BaseSuite", "Else", "ExceptHandler", "ExceptStarHandler", "Finally", "MatchCase")
    if hasattr(cst, name)
)


class _Codemod(cst.CSTTransformer):
    """Fixes and marks every anchor statement of every edit; tags every already-fixed one
    with a sentinel."""

    def __init__(self, patch: Patch, marker: str, sentinel: str) -> None:
        super().__init__()
        parsed = [_parsed(edit.anchor, edit.fixed) for edit in patch.edits]
        self.edits = [(anchor, fixed) for anchor, fixed, _, _ in parsed]
        self.shapes = [(anchor_shape, fixed_shape) for _, _, anchor_shape, fixed_shape in parsed]
        #: cheap filters: shapes are only worth computing for statements of these kinds, and,
        #: for assignments, with these targets
        self.kinds = tuple({type(statement) for edit in self.edits for statement in edit})
        self.heads = {_head(statement) for edit in self.edits for statement in edit}
        self.marker = marker
        self.sentinel = sentinel
        self.anchors = [0] * len(self.edits)
        self.fixed = [0] * len(self.edits)
        #: per tagged line, how far it runs past its first line, in file order
        self.anchor_spans: List[int] = []
        self.fixed_spans: List[int] = []

    def on_visit(self, node: cst.CSTNode) -> bool:
        # Statements never sit inside expressions: skipping those subtrees makes the visit
        # cost a few dozen nodes instead of thousands. leave_* still runs for every node.
        return isinstance(node, _STATEMENT_CONTAINERS)

    def _leave_line(self, updated: _Line) -> _Line:
        body = list(updated.body)
        tag = None
        for i, statement in enumerate(body):
            if not isinstance(statement, self.kinds) or _head(statement) not in self.heads:
                continue
            statement_shape = shape(statement)
            for index, (anchor_shape, fixed_shape) in enumerate(self.shapes):
                if statement_shape == anchor_shape:
                    anchor, fixed = self.edits[index]
                    body[i] = _insert(statement, anchor, fixed)
                    self.anchors[index] += 1
                    tag = self.marker
                elif statement_shape == fixed_shape:
                    self.fixed[index] += 1
                    tag = tag or self.sentinel
        if tag is None:
            return updated
        (self.anchor_spans if tag == self.marker else self.fixed_spans).append(_line_span(updated))
        return updated.with_changes(body=body, trailing_whitespace=_append_comment(updated.trailing_whitespace, tag))

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


def scan(text: str, patch: Patch, marker: str) -> Scan:
    """Finds the patch's anchor and fixed statements in ``patch.function`` and fixes anchors.

    ``marker`` is the comment put on each fixed anchor's last line. Raises
    :class:`ParseFailure` when LibCST cannot parse ``text``.
    """
    region = _function_region(text, patch.function)
    if region is not None:
        start, end, first_line, definitions = region
        config = cst.PartialParserConfig(default_newline=first_newline(text))
        try:
            found = _scan(text[start:end], patch, marker, config)
        except ParseFailure:
            found = None  # LibCST reads this syntax differently from ast: let the whole file decide
        if found is not None and found.function_line is not None:
            shift = first_line - 1
            return Scan(
                function_line=found.function_line + shift,
                definitions=definitions,
                anchors=found.anchors,
                fixed=found.fixed,
                anchor_lines=tuple(line + shift for line in found.anchor_lines),
                fixed_lines=tuple(line + shift for line in found.fixed_lines),
                patched_text=text[:start] + found.patched_text + text[end:],
            )
    return _scan(text, patch, marker, cst.PartialParserConfig())


def _function_region(text: str, function: str) -> Optional[Tuple[int, int, int, int]]:
    """(start, end, first line, number of definitions) for the lines that hold the last
    module-level ``def function`` (the one Python binds), decorators included, as Python's
    ``ast`` sees it in a tenth of LibCST's parse time.

    None when ``ast`` cannot say for sure: a syntax error, no such function, or Python 3.7
    (whose ``ast`` has no end lines).
    """
    import ast
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # invalid escapes and the like are not ours to report
            tree = ast.parse(text)
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return None
    found = [node for node in tree.body if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == function]
    last = getattr(found[-1], "end_lineno", None) if found else None
    if last is None:
        return None
    first = min([found[-1].lineno] + [decorator.lineno for decorator in found[-1].decorator_list])
    starts = line_starts(text)
    return starts[first - 1], starts[last] if last < len(starts) else len(text), first, len(found)


def _scan(text: str, patch: Patch, marker: str, config: cst.PartialParserConfig) -> Scan:
    """:func:`scan` on ``text`` as a whole module."""
    try:
        module = cst.parse_module(text, config)
    except cst.ParserSyntaxError as error:
        raise ParseFailure(error.raw_line, error.message) from None
    fixed_sentinel = f"# mmcv-patcher-fixed-{os.urandom(16).hex()}"  # never already in the text
    def_sentinel = f"# mmcv-patcher-def-{os.urandom(16).hex()}"
    codemod = _Codemod(patch, marker, fixed_sentinel)
    definitions = [(index, statement) for index, statement in enumerate(module.body) if isinstance(statement, cst.FunctionDef) and statement.name.value == patch.function]
    if not definitions:
        return Scan(None, 0, (0,) * len(patch.edits), (0,) * len(patch.edits), (), (), text)
    index, statement = definitions[-1]  # Python binds the last one
    changed = statement.visit(codemod)
    assert isinstance(changed, cst.FunctionDef)  # the codemod never removes a function
    if isinstance(changed.body, cst.IndentedBlock):
        header = _append_comment(changed.body.header, def_sentinel)
        changed = changed.with_changes(body=changed.body.with_changes(header=header))
    marked = _render(text, module, index, statement, changed)
    function_lines = _lines_of(marked, def_sentinel)
    return Scan(
        function_line=function_lines[0] if function_lines else None,
        definitions=len(definitions),
        anchors=tuple(codemod.anchors),
        fixed=tuple(codemod.fixed),
        anchor_lines=_first_lines(_lines_of(marked, marker), codemod.anchor_spans),
        fixed_lines=_first_lines(_lines_of(marked, fixed_sentinel), codemod.fixed_spans),
        patched_text=marked.replace("  " + def_sentinel, "").replace("  " + fixed_sentinel, ""),
    )


def _render(text: str, module: cst.Module, index: int, before: cst.FunctionDef, after: cst.FunctionDef) -> str:
    """``text`` with the top-level statement at ``index`` changed from ``before`` to
    ``after``. Renders only that statement and splices it in when the original statement's
    text occurs exactly once (so its place is certain); otherwise renders the whole module,
    which costs several times more."""
    if len(module.body) == 1 and module.default_newline != "\r":
        # The function alone (ast placed it): render just that. (A whole module with old-Mac
        # newlines loses its last one when LibCST renders it; those take the splice below.)
        return module.with_changes(body=[after]).code
    old = module.code_for_node(before)
    at = text.find(old)
    if at >= 0 and text.find(old, at + 1) < 0:
        return text[:at] + module.code_for_node(after) + text[at + len(old):]
    body: List[Any] = list(module.body)
    body[index] = after
    return module.with_changes(body=body).code
