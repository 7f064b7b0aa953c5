"""Where a patch's statements are in a file, read with Python's own parser.

:mod:`ast` finds the definition a patch names (a module-level function, or a method of a
module-level class: ``"RoIAlign.forward"``, or inherited from a class of the same file; the
last binding definition counts, as Python runs that one) and, inside it, every statement shaped like one of the patch's anchors or
fixes (compared as ``ast.dump``, so formatting, comments and parentheses do not matter);
an import a fix needs (:attr:`mmcv_patcher.model.Edit.binds`) among the module's own statements.
:mod:`tokenize` says where each such statement ends. Both ``status`` and ``apply`` use it;
the edit itself is LibCST's job (:mod:`mmcv_patcher.codemod`), on the statements found here.
"""

import ast
import functools
import io
import re
import tokenize
import warnings
from typing import Dict, FrozenSet, Iterable, Iterator, List, NamedTuple, Optional, Sequence, Tuple, Union

from mmcv_patcher.model import Edit, Patch
from mmcv_patcher.source import line_starts


class ParseFailure(NamedTuple):
    """Python cannot parse the file; ``line`` is where it stopped."""

    line: int
    reason: str


class Statement(NamedTuple):
    """One statement of the file: where it starts and ends (offsets), its first line, and
    which of its patch's edits it is (the index into :attr:`Patch.edits`)."""

    start: int
    end: int
    line: int
    edit: int


class Found(NamedTuple):
    """What one patch finds in one file."""

    #: the ``def`` line of the definition Python binds (None: no such definition)
    definition_line: Optional[int]
    #: how many binding definitions of the name there are; only the last counts
    definitions: int
    #: the statements shaped like an anchor (to fix) and like a fix (there already)
    anchors: Tuple[Statement, ...]
    fixes: Tuple[Statement, ...]
    #: the edits not looked for: imports (:attr:`~mmcv_patcher.model.Edit.binds`) of a name
    #: another of the module's statements binds already
    unneeded: FrozenSet[int] = frozenset()
    #: where the file makes the definition its callers reach ambiguous: the lines of the
    #: first and the last definition of the patch's module-level name, and of a statement
    #: between them that uses the first (``f = Function.apply``), or None
    ambiguous: Optional[Tuple[int, int, int]] = None

    def counts(self, statements: Tuple[Statement, ...], edits: int) -> Tuple[int, ...]:
        """How many of ``statements`` there are of each of the ``edits`` edits."""
        return tuple(sum(1 for s in statements if s.edit == index) for index in range(edits))

    def needed(self, counts: Tuple[int, ...]) -> Tuple[int, ...]:
        """A release's ``counts`` for this file: none of an edit not looked for."""
        return tuple(0 if index in self.unneeded else count for index, count in enumerate(counts))


@functools.lru_cache(maxsize=4)
def parse(text: str) -> Union[ast.Module, ParseFailure]:
    """The file's ``ast``, parsed once for every patch of a run."""
    return _parse(text)


def _parse(text: str) -> Union[ast.Module, ParseFailure]:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # invalid escapes and the like are not ours to report
            return ast.parse(text)
    except SyntaxError as error:
        return ParseFailure(error.lineno or 1, error.msg)
    except (ValueError, MemoryError, RecursionError) as error:
        return ParseFailure(1, str(error) or type(error).__name__)


def dumps(code: str) -> List[str]:
    """The ``ast.dump`` of each statement in ``code`` (a statement and what follows it on
    its line, say); none when it does not parse on its own."""
    tree = _parse(code)  # not cached: the segments would crowd the file's tree out
    return [] if isinstance(tree, ParseFailure) else [ast.dump(node) for node in tree.body]


@functools.lru_cache(maxsize=None)
def dump_statement(code: str) -> str:
    """The ``ast.dump`` of the one statement in ``code`` (a patch's anchor or fix)."""
    return dumps(code)[0]


def find(text: str, patches: Sequence[Patch]) -> Union[Dict[str, Found], ParseFailure]:
    """What each patch (by id) finds in ``text``."""
    tree = parse(text)
    if isinstance(tree, ParseFailure):
        return tree
    return {patch.id: _find(text, tree, patch) for patch in patches}


def statements(node: ast.AST) -> Iterator[ast.stmt]:
    """Every statement under ``node``, in preorder: only the lists that hold statements are
    followed (bodies, ``else`` and ``finally`` blocks, handlers, match cases), never the
    expressions, which are most of a file's nodes and never hold a statement."""
    for name in ("body", "orelse", "finalbody", "handlers", "cases"):
        children = getattr(node, name, None)
        if isinstance(children, list):
            for child in children:
                if isinstance(child, ast.stmt):
                    yield child
                yield from statements(child)


def definitions(tree: ast.Module, name: str) -> List[Union[ast.FunctionDef, ast.AsyncFunctionDef]]:
    """The binding definitions of ``name`` (``function`` or ``Class.method``) at module
    level: of a method, those in the last class of that name, which is the one Python binds,
    or, when that class does not define it, in the class it inherits it from (:func:`_method`)."""
    *classes, function = name.split(".")
    scope: List[ast.stmt] = tree.body
    if not classes:
        return _functions(scope, function)
    owner: Optional[ast.ClassDef] = None
    for class_name in classes:
        found = [node for node in scope if isinstance(node, ast.ClassDef) and node.name == class_name]
        if not found:
            return []
        owner, outer, scope = found[-1], scope, found[-1].body
    assert owner is not None
    return _method(outer, owner, function)


def _binds(node: ast.stmt) -> List[str]:
    """The names ``node`` binds at its own level (a ``class``, a ``def``, an assignment with a
    value, an import); a bare annotation (``torch: ModuleType``) binds none."""
    if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
        return [node.name]
    if isinstance(node, ast.Assign):
        return [target.id for target in node.targets if isinstance(target, ast.Name)]
    if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
        return [node.target.id]
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        return [alias.asname or alias.name.split(".")[0] for alias in node.names]
    return []


def _last_binding(body: List[ast.stmt], name: str) -> Optional[ast.stmt]:
    """The last statement of ``body`` that binds ``name`` at its level (:func:`_binds`), or
    None, also when a ``del`` of the name follows it."""
    bound = None
    for node in body:
        if name in _binds(node):
            bound = node
        elif isinstance(node, ast.Delete) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
            bound = None
    return bound


def _ambiguous(body: List[ast.stmt], name: str) -> Optional[Tuple[int, int, int]]:
    """Whether the module binds ``name`` more than once and, between the first and the last
    binding, runs a statement that uses it (an alias such as ``f = Function.apply``, a
    decorator, a call): code that holds on to the first. Function bodies look the name up
    when they run, so they do not count. Returns (first, use, last) lines, or None."""
    bindings = [index for index, node in enumerate(body) if name in _binds(node)]
    if len(bindings) < 2:
        return None
    first, last = bindings[0], bindings[-1]
    for node in body[first + 1 : last]:
        if any(
            isinstance(each, ast.Name) and each.id == name and isinstance(each.ctx, ast.Load) for each in _run_now(node)
        ):
            return body[first].lineno, node.lineno, body[last].lineno
    return None


def _run_now(node: ast.AST) -> Iterator[ast.AST]:
    """The nodes of ``node`` that run when the module does: all but the bodies of functions
    and lambdas (their decorators, defaults and annotations do run)."""
    yield node
    for name, child in ast.iter_fields(node):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)) and name == "body":
            continue
        for each in child if isinstance(child, list) else [child]:
            if isinstance(each, ast.AST):
                yield from _run_now(each)


def _functions(body: List[ast.stmt], name: str) -> List[Union[ast.FunctionDef, ast.AsyncFunctionDef]]:
    return [node for node in body if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == name]


def _method(
    scope: List[ast.stmt], owner: ast.ClassDef, name: str
) -> List[Union[ast.FunctionDef, ast.AsyncFunctionDef]]:
    """The definitions of method ``name`` that ``owner`` (a class statement in ``scope``)
    runs: its own, or else those of the first base that has them, bases read left to right
    and depth first. A base is followed while it is a plain name bound, earlier in
    ``scope``, to a class statement (``class X(X)`` re-wrapping included: the base is the
    earlier ``X``); at a base from anywhere else (``nn.Module``, an import) nothing can be
    known, so none are returned."""
    own = _last_binding(owner.body, name)
    if own is not None:  # bound in the class: by a def, or by something else, which is not ours to read
        return _functions(owner.body, name) if isinstance(own, (ast.FunctionDef, ast.AsyncFunctionDef)) else []
    before = scope[: next(index for index, node in enumerate(scope) if node is owner)]
    for base in owner.bases:
        bound = _last_binding(before, base.id) if isinstance(base, ast.Name) else None
        if not isinstance(bound, ast.ClassDef):
            return []
        inherited = _method(before, bound, name)
        if inherited:
            return inherited
    return []


def _find(text: str, tree: ast.Module, patch: Patch) -> Found:
    bound = definitions(tree, patch.function)
    if not bound:
        return Found(None, 0, (), ())
    heads = {_head(_parsed(code)) for edit in patch.edits for code in (edit.anchor, edit.fix)}
    starts = line_starts(text)
    found: Dict[str, List[Statement]] = {"anchor": [], "fix": []}

    def collect(nodes: Iterable[ast.stmt], anchors: Dict[str, int], fixes: Dict[str, int]) -> None:
        for node in nodes:
            if hasattr(node, "body") or _head(node) not in heads:
                continue
            dumped = ast.dump(node)
            for kind, wanted in (("anchor", anchors), ("fix", fixes)):
                if dumped in wanted:
                    start = offset(text, starts, node.lineno, node.col_offset)
                    found[kind].append(Statement(start, statement_end(text, start), node.lineno, wanted[dumped]))

    for function in patch.definitions:
        scope = bound if function == patch.function else definitions(tree, function)
        if scope:  # else its statements are missing, which the counts tell
            collect(statements(scope[-1]), *_wanted(patch.edits, patch.function, function))
    imports = [index for index, edit in enumerate(patch.edits) if edit.binds is not None]
    unneeded = frozenset(index for index in imports if _bound_otherwise(tree.body, patch.edits[index]))
    for index in imports:
        if index not in unneeded:
            edit = patch.edits[index]
            collect(tree.body, {dump_statement(edit.anchor): index}, {dump_statement(edit.fix): index})
    ordered = {kind: tuple(sorted(statements)) for kind, statements in found.items()}
    ambiguous = _ambiguous(tree.body, patch.function.split(".")[0])
    return Found(bound[-1].lineno, len(bound), ordered["anchor"], ordered["fix"], unneeded, ambiguous)


@functools.lru_cache(maxsize=None)
def _wanted(edits: Tuple[Edit, ...], default: str, function: str) -> Tuple[Dict[str, int], Dict[str, int]]:
    """The dumps of the anchors and of the fixes of the edits in ``function`` (an edit that
    names none is in ``default``, the patch's), each to its edit's index."""
    inside = [
        (index, edit)
        for index, edit in enumerate(edits)
        if edit.binds is None and (edit.function or default) == function
    ]
    anchors = {dump_statement(edit.anchor): index for index, edit in inside}
    fixes = {dump_statement(edit.fix): index for index, edit in inside}
    return anchors, fixes


def _bound_otherwise(body: List[ast.stmt], edit: Edit) -> bool:
    """Whether a statement of ``body`` (the module's own) other than one shaped like
    ``edit``'s fix binds the name the fix binds (:attr:`Edit.binds`)."""
    fix = _parsed(edit.fix)
    others = [node for node in body if _head(node) != _head(fix) or ast.dump(node) != dump_statement(edit.fix)]
    return edit.binds is not None and _last_binding(others, edit.binds) is not None


@functools.lru_cache(maxsize=None)
def _parsed(statement: str) -> ast.stmt:
    return ast.parse(statement).body[0]


def _head(node: ast.AST) -> Tuple[str, ...]:
    """What cheaply tells statements apart before whole dumps are compared: an
    assignment's targets, or the kind of statement."""
    return (
        tuple(ast.dump(target) for target in node.targets) if isinstance(node, ast.Assign) else (type(node).__name__,)
    )


def offset(text: str, starts: List[int], line: int, col_offset: int) -> int:
    """The offset in ``text`` of ``ast``'s (line, col_offset); col_offset counts UTF-8 bytes."""
    start = starts[line - 1]
    prefix = text[start : start + col_offset].encode("utf-8")[:col_offset]
    return start + len(prefix.decode("utf-8", "ignore"))


def statement_end(text: str, start: int) -> int:
    """Where the statement starting at ``start`` ends: after its last token, before a
    comment, at its line's end or at a ``;`` outside brackets."""
    # tokenize splits lines at "\n" only: give it the same text with every newline one "\n"
    # (both replacements keep each character's offset)
    rest = text[start:].replace("\r\n", " \n").replace("\r", "\n")
    within = [0] + [match.end() for match in re.finditer("\n", rest)]  # where each of its lines starts
    depth, end = 0, start
    try:
        for token in tokenize.generate_tokens(io.StringIO(rest).readline):
            if token.type in (tokenize.NEWLINE, tokenize.ENDMARKER) or (
                token.type == tokenize.OP and token.string == ";" and depth == 0
            ):
                break
            if token.type == tokenize.OP and token.string in "([{":
                depth += 1
            elif token.type == tokenize.OP and token.string in ")]}":
                depth -= 1
            if token.type not in (tokenize.COMMENT, tokenize.NL):
                end = start + within[token.end[0] - 1] + token.end[1]
    except (tokenize.TokenError, SyntaxError):
        pass  # the file parsed, so the statement was whole before this point
    return end
