"""The LibCST codemod behind every patch: make each anchor statement its fix.

:mod:`mmcv_patcher.find` says where the statements are; this module parses each of them
alone with LibCST and puts in the fix's additions while keeping the statement's own
formatting (its spacing, line breaks, comments and parentheses). It is the only module that
imports LibCST, and only ``apply`` and ``revert --force`` of an unpatched file need it.
"""

import dataclasses
import functools
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple, Union

import libcst as cst

from mmcv_patcher.find import Statement
from mmcv_patcher.model import Edit, Patch, Replacement
from mmcv_patcher.source import first_newline, line_end

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


def shape(node: Any, memo: Optional[Dict[int, Any]] = None) -> Any:
    """A hashable picture of ``node`` that ignores whitespace, comments and parentheses.
    ``memo`` keeps the picture of each node under it, by id, while the caller keeps the
    nodes alive."""
    if isinstance(node, cst.CSTNode):
        if memo is not None and id(node) in memo:
            return memo[id(node)]
        found = (type(node).__name__,) + tuple(
            shape(getattr(node, name), memo) for name in _meaningful_fields(type(node))
        )
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
    return tuple(
        f.name
        for f in dataclasses.fields(kind)
        if f.name not in _FORMATTING_FIELDS and not f.name.startswith("whitespace")
    )


class _Wrap(NamedTuple):
    """Where the fix wraps what the anchor has (``boxes`` becomes ``boxes.float()``):
    ``template`` is that part of the fix, ``hole`` its node that stands for the anchor's,
    and ``inner`` the recipe for the anchor's node itself (None: it stays as it is)."""

    template: cst.CSTNode
    hole: cst.CSTNode
    inner: "_Recipe"


class _Insert(NamedTuple):
    """A node the fix adds to a list of the anchor's (``import a`` becomes ``import a, b``)."""

    node: cst.CSTNode


#: How to turn a statement shaped like an anchor into its fix, worked out once per edit:
#: None (keep the node), a wrap, or per changed field the recipe for its node or, for a
#: list, for each of its children, with an :class:`_Insert` for each child the fix adds.
_Recipe = Union[None, _Wrap, Tuple[Tuple[str, Any], ...]]


class _Nodes(NamedTuple):
    """An edit's statements as LibCST nodes."""

    anchor: cst.BaseSmallStatement
    fix: cst.BaseSmallStatement


@functools.lru_cache(maxsize=None)
def _compiled(edit: Edit) -> _Nodes:
    """An edit made ready for the codemod, once per run."""
    return _Nodes(_statement(edit.anchor), _statement(edit.fix))


def _statement(code: str) -> cst.BaseSmallStatement:
    line = cst.parse_statement(code)
    assert isinstance(line, cst.SimpleStatementLine) and len(line.body) == 1, code
    return line.body[0]


class _Mismatch(Exception):
    """The fix does not add to the anchor in a way :func:`_recipe` can follow."""


def _recipe(anchor: Any, fix: Any, memo: Dict[int, Any]) -> _Recipe:
    """How ``fix`` adds to ``anchor``, so that a node shaped like ``anchor`` gets the same
    additions while keeping its own formatting everywhere else.

    Where ``fix`` has the same kind of node as ``anchor``, their children are compared
    pairwise; otherwise ``fix`` wraps ``anchor`` there: the wrapper, parsed from the
    canonical text, is put around the file's own node, which may have additions of its own
    (``f(a)`` becomes ``f(a.float()).to(t)``). Of several nodes that could stand for the
    anchor's, the first in the fix is taken, as the tokens' alignment takes the first (see
    :attr:`mmcv_patcher.model.Edit.insertions`). Raises :class:`_Mismatch` otherwise.
    ``memo`` is as for :func:`shape`: each subtree's shape is taken once.
    """
    if shape(anchor, memo) == shape(fix, memo):
        return None
    if type(anchor) is type(fix) and isinstance(anchor, cst.CSTNode):
        try:
            changes: List[Tuple[str, Any]] = []
            for name in _meaningful_fields(type(anchor)):
                old, new = getattr(anchor, name), getattr(fix, name)
                if shape(old, memo) == shape(new, memo):
                    continue
                if isinstance(old, (list, tuple)) and len(old) != len(new):
                    changes.append((name, _added(old, new, memo)))
                elif isinstance(old, (list, tuple)):
                    changes.append((name, tuple(_recipe(o, n, memo) for o, n in zip(old, new))))
                elif isinstance(old, cst.CSTNode):
                    changes.append((name, _recipe(old, new, memo)))
                else:
                    raise _Mismatch
            return tuple(changes)
        except _Mismatch:
            pass  # the same kind of node can still wrap it: f(x) -> g(f(x))
    if isinstance(fix, cst.CSTNode):
        wanted = shape(anchor, memo)
        inside = _nodes(fix)[1:]
        for node in inside:
            if shape(node, memo) == wanted:
                return _Wrap(fix, node, None)
        for node in inside:
            if type(node) is type(anchor):
                try:
                    return _Wrap(fix, node, _recipe(anchor, node, memo))
                except _Mismatch:
                    continue
    raise _Mismatch


def _added(old: Sequence[Any], new: Sequence[Any], memo: Dict[int, Any]) -> Tuple[Optional[_Insert], ...]:
    """The recipe for a list the fix adds children to: each of ``new``'s children is the
    next of ``old``'s, shaped the same (None: kept as it is), or one the fix adds. Raises
    :class:`_Mismatch` unless ``old``'s children are all there, in order."""
    recipe: List[Optional[_Insert]] = []
    kept = 0
    for node in new:
        if kept < len(old) and shape(old[kept], memo) == shape(node, memo):
            recipe.append(None)
            kept += 1
        else:
            recipe.append(_Insert(node))
    if kept < len(old):
        raise _Mismatch
    return tuple(recipe)


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
        return recipe.template.deep_replace(recipe.hole, _follow(recipe.inner, actual))
    changes = {}
    for name, inner in recipe:
        mine = getattr(actual, name)
        changes[name] = _follow_children(inner, mine) if isinstance(mine, (list, tuple)) else _follow(inner, mine)
    return actual.with_changes(**changes)


def _follow_children(recipe: Tuple[Any, ...], actual: Sequence[Any]) -> Tuple[Any, ...]:
    """``actual``'s children, each with its recipe's additions, and the children the fix adds."""
    children = iter(actual)
    return tuple(each.node if isinstance(each, _Insert) else _follow(each, next(children)) for each in recipe)


def fixes(
    text: str, wanted: Sequence[Tuple[Patch, Sequence[Statement], str]]
) -> Optional[Dict[str, Tuple[Replacement, ...]]]:
    """Per patch id, the replacements that make each of its anchor statements (as
    :mod:`mmcv_patcher.find` located them in ``text``) its edit's fix, keeping the
    statement's own formatting, and end the line each one ends on with its marker; for
    ``wanted``, (patch, anchors, marker) each. LibCST parses all the statements in one go.
    None when it cannot read one of them on its own."""
    located = [(patch, statement, marker) for patch, anchors, marker in wanted for statement in anchors]
    if not located:
        return {patch.id: () for patch, _, _ in wanted}
    config = cst.PartialParserConfig(default_newline=first_newline(text))
    try:
        module = cst.parse_module(
            "\n".join(text[statement.start : statement.end] for _, statement, _ in located) + "\n", config
        )
    except cst.ParserSyntaxError:
        return None
    if len(module.body) != len(located):
        return None
    found: Dict[str, List[Replacement]] = {patch.id: [] for patch, _, _ in wanted}
    for (patch, statement, marker), line in zip(located, module.body):
        if not (isinstance(line, cst.SimpleStatementLine) and len(line.body) == 1):
            return None
        try:
            made = _follow(_recipe_of(patch.edits[statement.edit]), line.body[0])
        except _Mismatch:
            return None
        end_of_line = line_end(text, statement.end)
        found[patch.id] += [
            (statement.start, statement.end, _EMPTY.code_for_node(made)),
            (end_of_line, end_of_line, "  " + marker),
        ]
    return {id: tuple(replacements) for id, replacements in found.items()}


@functools.lru_cache(maxsize=None)
def _recipe_of(edit: Edit) -> _Recipe:
    compiled = _compiled(edit)
    return _recipe(compiled.anchor, compiled.fix, {})
