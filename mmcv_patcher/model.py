"""The value objects every step passes along: patches, states and per-patch results.

Nothing here does I/O or imports LibCST, so the registry and ``status`` stay cheap.
"""

import difflib
import enum
import functools
import io
import tokenize
from typing import Dict, List, Mapping, NamedTuple, Optional, Tuple

#: Distributions that install the top-level package ``mmcv``.
MMCV_DISTRIBUTIONS = ("mmcv", "mmcv-full", "mmcv-lite", "onedl-mmcv")


class _Word(str, enum.Enum):
    """An enum whose values are the words shown in output and JSON."""

    def __str__(self) -> str:
        return str(self.value)


class Command(_Word):
    """What the tool is asked to do. The value is the word typed and shown in JSON."""

    APPLY = "apply"
    STATUS = "status"
    REVERT = "revert"
    VERIFY = "verify"


class State(_Word):
    """What a patch finds in a file. The value is the word shown in output and JSON."""

    UNPATCHED = "unpatched"
    PATCHED = "patched"
    FIXED_UPSTREAM = "fixed-upstream"
    NOT_AFFECTED = "not-affected"
    UNVERIFIED = "unverified"
    DRIFTED = "drifted"


class Affected(NamedTuple):
    """A range of one distribution's releases that have a bug, as an OSV range: from
    ``introduced`` on, up to and including ``last_affected`` or up to but not including
    ``fixed`` (exactly one of the two). Versions are PEP 440; a local label (``2.1.0+cu118``)
    does not change the source, and pre-releases never count as affected (none was checked).

    ``counts`` says how many times every release in the range has each of the patch's
    edits (by position in :attr:`Patch.edits`; empty means each once): the number the
    structural match must find, or refuse. A distribution can have several ranges, where
    the released code took different forms.

    Bounds rather than a PEP 440 specifier set, because "older than the first affected
    release" is its own verdict (not affected), which a specifier set cannot express.
    """

    introduced: str = "0"
    last_affected: Optional[str] = None
    fixed: Optional[str] = None
    counts: Tuple[int, ...] = ()


def per_distribution(mmcv: Tuple[Affected, ...], onedl_mmcv: Tuple[Affected, ...]) -> Dict[str, Tuple[Affected, ...]]:
    """A patch's ranges for every distribution of :data:`MMCV_DISTRIBUTIONS`: mmcv-full (1.x)
    and mmcv-lite (2.x) are built from the same tagged source as mmcv of the same version,
    so they share its ranges; the onedl-mmcv fork has its own."""
    return {"mmcv": mmcv, "mmcv-full": mmcv, "mmcv-lite": mmcv, "onedl-mmcv": onedl_mmcv}


class Edit(NamedTuple):
    """One statement a patch changes: ``anchor`` as released, ``fix`` as it must become.

    Both are matched structurally (formatting, comments and parentheses are ignored).
    ``fix`` is ``anchor`` with text inserted anywhere (the anchor is a subsequence of the
    fix), so the edit is pure insertion that a revert can take out again byte for byte.
    """

    anchor: str
    fix: str

    @property
    def insertions(self) -> Tuple[str, ...]:
        """The texts the fix inserts into the anchor, in order, found by aligning the two
        statements' tokens (:mod:`tokenize`), so each is a whole run of tokens."""
        return _insertions(self.anchor, self.fix)


@functools.lru_cache(maxsize=None)
def _insertions(anchor_code: str, fix_code: str) -> Tuple[str, ...]:
    anchor, fix = _tokens(anchor_code), _tokens(fix_code)
    matcher = difflib.SequenceMatcher(None, [t for t, _, _ in anchor], [t for t, _, _ in fix], autojunk=False)
    found = []
    for tag, _, _, start, end in matcher.get_opcodes():
        if tag != "equal":
            if tag != "insert":
                raise ValueError(f"{fix_code!r} is not {anchor_code!r} with insertions")
            found.append(fix_code[fix[start][1] : fix[end - 1][2]])
    return tuple(found)


def _tokens(code: str) -> List[Tuple[str, int, int]]:
    """(text, start offset, end offset) of each token of one line of code."""
    tokens = tokenize.generate_tokens(io.StringIO(code).readline)
    return [(t.string, t.start[1], t.end[1]) for t in tokens if t.type not in (tokenize.NEWLINE, tokenize.NL, tokenize.ENDMARKER)]


class Patch(NamedTuple):
    """One fix: pure data, turned into a LibCST codemod by :mod:`mmcv_patcher.codemod`."""

    id: str
    summary: str
    #: distribution name -> the ranges of its releases that have the bug
    affected: Mapping[str, Tuple[Affected, ...]]
    #: POSIX path of the file inside the ``mmcv`` package directory (any ``.py`` file)
    file: str
    #: where the edits are: a module-level function (``nms``) or a method of a module-level
    #: class (``RoIAlign.forward``); the last binding definition counts, as Python runs it
    function: str
    #: the statements it changes; a release has some or all of them (see Affected.counts)
    edits: Tuple[Edit, ...]
    #: the error text users search for, for README's table of patches
    error: str = ""
    #: (before, after) source pairs that document and pin the codemod; run as tests. The
    #: first example's ``before`` of each patch makes the synthetic file the tests patch,
    #: unless the tests write that file themselves (``ops/nms.py``: tests/fixtures.py)
    examples: Tuple[Tuple[str, str], ...] = ()
    #: sources that look alike but that the patch must leave as they are; run as tests
    untouched: Tuple[str, ...] = ()


class Result(NamedTuple):
    """The outcome of one patch on one target, rendered as a human line or a JSON object."""

    id: str
    state: State
    file: str
    line: Optional[int]
    message: str
    changed: bool = False
    #: False when this patch makes the command fail (exit 1)
    ok: bool = True


class Outcome:
    """Everything a command did, for :mod:`mmcv_patcher.report` to render."""

    def __init__(self) -> None:
        self.results: List[Result] = []
        #: for ``--dry-run``: (path, text now, text it would write) of each file it would change
        self.previews: List[Tuple[str, str, str]] = []
        #: whether the run had to wait for another run's lock (also when it then gave up)
        self.waited = False
        #: what the user should know that is no patch's result (an owner that could not be kept)
        self.notes: List[str] = []
        #: a failure that is not one patch's (a file that cannot be written, say)
        self.error: Optional[str] = None

    @property
    def ok(self) -> bool:
        return self.error is None and all(result.ok for result in self.results)
