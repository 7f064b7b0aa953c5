"""The value objects every step passes along: patches, states and per-patch results.

Nothing here does I/O or imports LibCST, so the registry and ``status`` stay cheap.
"""

import difflib
import enum
import functools
import io
import textwrap
import tokenize
from typing import Any, Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple, Union

from mmcv_patcher.source import matches_record

#: The top-level packages a patch can edit, in the order runs take them, each with the
#: distributions that install it (upstream's and the OneDL forks').
PACKAGES: Mapping[str, Tuple[str, ...]] = {
    "mmcv": ("mmcv", "mmcv-full", "mmcv-lite", "onedl-mmcv"),
    "mmdet": ("mmdet", "onedl-mmdetection"),
    "mmrotate": ("mmrotate", "onedl-mmrotate"),
}


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
    does not change the source, and pre-releases count as affected only inside a range with
    a pre-release as a bound (which names the ones that were checked).

    ``counts`` says how many times every release in the range has each of the patch's
    edits (by position in :attr:`Patch.edits`; empty means each once): the number the
    structural match must find, or refuse. A distribution can have several ranges, where
    the released code took different forms.

    Bounds rather than a PEP 440 specifier set, because "older than the first affected
    release" is its own state (not affected), which a specifier set cannot express.
    """

    introduced: str = "0"
    last_affected: Optional[str] = None
    fixed: Optional[str] = None
    counts: Tuple[int, ...] = ()


def per_distribution(mmcv: Tuple[Affected, ...], onedl_mmcv: Tuple[Affected, ...]) -> Dict[str, Tuple[Affected, ...]]:
    """An mmcv patch's ranges for every distribution of ``mmcv`` (:data:`PACKAGES`): mmcv-full (1.x)
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
    #: the definition the statement is in, when it is not the patch's own (a fix that spans
    #: an autograd function's ``forward`` and its ``backward``), named as :attr:`Patch.function`
    function: Optional[str] = None
    #: the name the fix binds, for an import at module level that the patch's other fixes
    #: need (``import torch.nn as nn`` becoming ``import torch.nn as nn, torch``): the
    #: statement is looked for among the module's own statements, and only where no other
    #: one binds the name, so a file that imports it already is left as it is
    binds: Optional[str] = None
    #: the fixes earlier versions of this tool wrote for the statement, each the anchor with
    #: insertions too: a statement that is one of them (with our marker) is ours, so
    #: ``revert`` takes it out exactly, but not the fix this version writes
    was: Tuple[str, ...] = ()
    #: whether this version added the edit to its patch, so earlier versions left the
    #: statement as released: a file whose other statements are the patch's fix (with our
    #: marker) and this one as released is theirs, for ``revert`` to take out exactly
    added: bool = False

    @property
    def insertions(self) -> Tuple[str, ...]:
        """The texts the fix inserts into the anchor, in order, found by aligning the two
        statements' tokens (:mod:`tokenize`), so each is a whole run of tokens with the
        spacing the fix adds around it."""
        return _insertions(self.anchor, self.fix)


@functools.lru_cache(maxsize=None)
def _insertions(anchor_code: str, fix_code: str) -> Tuple[str, ...]:
    anchor, fix = _tokens(anchor_code), _tokens(fix_code)
    matcher = difflib.SequenceMatcher(None, [t for t, _, _ in anchor], [t for t, _, _ in fix], autojunk=False)
    found = []
    for tag, at, _, start, end in matcher.get_opcodes():
        if tag != "equal":
            if tag != "insert":
                raise ValueError(f"{fix_code!r} is not {anchor_code!r} with insertions")
            # the whole gap between the fix's tokens around it, less the spacing the anchor
            # has there: `x` -> `x if c else y` inserts " if c else y", the space included
            gap = fix_code[fix[start - 1][2] if start else 0 : fix[end][1] if end < len(fix) else len(fix_code)]
            kept = anchor_code[anchor[at - 1][2] if at else 0 : anchor[at][1] if at < len(anchor) else len(anchor_code)]
            if kept and gap.endswith(kept):
                gap = gap[: -len(kept)]
            elif kept and gap.startswith(kept):
                gap = gap[len(kept) :]
            found.append(gap)
    return tuple(found)


def _tokens(code: str) -> List[Tuple[str, int, int]]:
    """(text, start offset, end offset) of each token of one line of code."""
    tokens = tokenize.generate_tokens(io.StringIO(code).readline)
    return [
        (t.string, t.start[1], t.end[1])
        for t in tokens
        if t.type not in (tokenize.NEWLINE, tokenize.NL, tokenize.ENDMARKER)
    ]


def listed(words: Sequence[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} and {words[-1]}"


def _code(text: str) -> str:
    """Source written as a dedented triple-quoted string: its common indentation and the
    newline right after the opening quotes taken out."""
    return textwrap.dedent(text[1:] if text.startswith("\n") else text)


class Example(NamedTuple):
    """A source the patch changes, and what it must become, without our markers (the tests
    add them at the end of each fixed statement). ``why`` names the example (a test id)."""

    before: str
    after: str
    why: str

    @classmethod
    def of(cls, before: str, after: str, why: str) -> "Example":
        """An example from dedented triple-quoted code."""
        return cls(_code(before), _code(after), why)


class Untouched(NamedTuple):
    """A source that looks alike but that the patch must leave as it is, and why."""

    source: str
    why: str

    @classmethod
    def of(cls, source: str, why: str) -> "Untouched":
        """A look-alike from dedented triple-quoted code."""
        return cls(_code(source), why)


class Tensor(NamedTuple):
    """A tensor that ``verify`` makes for a case, from a seeded generator (see
    :mod:`mmcv_patcher.probe`, which knows each ``kind``):

    - ``boxes``: ``size`` boxes (x1, y1, x2, y2), corners within ``scale`` (default 1000)
    - ``scores``: ``size`` scores in [0, 1)
    - ``labels``: ``size`` class ids below ``scale``
    - ``rotated-boxes``: ``size`` boxes (cx, cy, w, h, angle), centres within ``scale`` (default
      500); a shape for ``size`` makes a map of them (that shape, then the box)
    - ``features``: values in [0, ``scale``) of shape ``size`` (``scale`` 1 by default)
    - ``rois``: ``size`` RoIs (image index below ``images``, then a box within ``scale``)
    - ``rotated-rois``: ``size`` rotated RoIs (image index below ``images``, then a rotated
      box with its centre within ``scale``)
    - ``shapes``: the (height, width) of each feature level ``size`` lists, as int64
    - ``starts``: where each level of ``size`` starts in the flattened levels, as int64
    - ``levels``: a tuple of feature maps, one of each shape ``size`` lists, values in [0, 1)
    - ``det-samples``: one image's ground truth as mmdet gives a head: a list of one
      ``DetDataSample`` with ``size`` boxes in a ``scale`` x ``scale`` image, labels below
      ``classes``, and each box's mask (the box filled)

    ``size`` ``"boxes"`` is ``verify --boxes``. ``amp``: the tensor comes in the AMP dtype
    (fp16 or bf16), as autocast gives it; otherwise in fp32.
    """

    kind: str
    size: Union[int, str, Tuple[int, ...], Tuple[Tuple[int, ...], ...]]
    amp: bool = False
    scale: float = 0.0
    images: int = 1
    classes: int = 1


class Case(NamedTuple):
    """What ``verify`` runs to prove a patch on the real packages: ``<module>.<op>`` (by
    default ``mmcv.ops.<op>``) called with ``args`` (a :class:`Tensor`, a list of them, or a JSON value
    passed as it is), or, with ``init``, the module ``<module>.<op>(*init)`` (``**init``
    for a dict) called with them, or its ``method``. The result is compared with the same
    call on fp32 copies of the same values: ``boxes`` for NMS results (the same kept indices,
    boxes and scores within 1e-3), ``values`` for a tensor (in the AMP dtype, and the fp32
    values within its rounding), ``losses`` for a head's loss dict (the fp32 run's losses,
    every one finite), ``loss`` for a loss tensor (finite, the fp32 value within the AMP
    dtype's rounding, in any dtype), ``costs`` for a matching cost matrix (finite, of the
    fp32 run's shape). ``gave`` says what the call gives the package: ``{amp}``
    stands for the dtype's short name (fp16, bf16), ``{boxes}`` for ``--boxes``."""

    op: str
    args: Tuple[Any, ...]
    gave: str
    compare: str = "boxes"
    init: Optional[Union[Tuple[Any, ...], Dict[str, Any]]] = None
    #: what is called instead of ``<module>.<op>``, as a dotted path under ``module``: the
    #: autograd function the op's module calls, when the module's arguments are what
    #: autocast itself would have to make
    call: Optional[str] = None
    #: the module that has the op
    module: str = "mmcv.ops"
    #: the method of the object ``init`` makes that is called (a head's ``loss``), if not the object itself
    method: Optional[str] = None
    #: the devices the case runs on (where mmcv has the op's kernel, or where the package's
    #: call crashes); on any other it is skipped, and ``skipped`` says why
    devices: Tuple[str, ...] = ("cpu", "cuda")
    #: why the case is skipped on another device, ``%(device)s`` standing for that device,
    #: ``%(op)s`` for :attr:`op` and ``%(runs_on)s`` for the first of :attr:`devices`
    skipped: str = (
        "mmcv has no %(device)s kernel for %(op)s; verify --device %(runs_on)s runs this case on a build with one"
    )
    #: the AMP dtypes mmcv's CPU kernel takes as released, so the case survives there unpatched
    cpu_kernel_takes: Tuple[str, ...] = ()
    #: whether training takes the gradient through the op (a layer, a loss), so ``verify``
    #: runs backward too; NMS and IoUs run on detached boxes
    backward: bool = False

    def as_json(self) -> Dict[str, Any]:
        """The case as the probe reads it: JSON values, each tensor an object of its fields."""
        return {
            "op": self.op,
            "args": _json(self.args),
            "gave": self.gave,
            "compare": self.compare,
            "init": None if self.init is None else _json(self.init),
            "call": f"{self.module}.{self.call or self.op}",
            "method": self.method,
            "devices": list(self.devices),
            "skipped": self.skipped,
            "backward": self.backward,
        }


def _json(value: Any) -> Any:
    """``value`` as JSON has it: a :class:`Tensor` as an object of its fields, tuples as
    lists, all the way down."""
    if isinstance(value, Tensor):
        return _json(dict(value._asdict(), tensor=True))
    if isinstance(value, (list, tuple)):
        return [_json(each) for each in value]
    if isinstance(value, dict):
        return {key: _json(each) for key, each in value.items()}
    return value


#: The AMP dtypes, each with the name torch's messages give it.
AMP_DTYPES = (("float16", "Half"), ("bfloat16", "BFloat16"))
#: A case of an op's grid: the arguments its runner's ``run`` takes (dtype names, op names).
GridCase = Tuple[str, ...]


class Fails(NamedTuple):
    """A case of a :class:`Grid` that fails as released, and what it gives once patched.

    ``error`` is what the release raises (``"Type: first line"``), or None where the release
    runs but gives a wrong result: a difference from the fp32 run over ``tolerance``. Once
    patched the case runs, each output and gradient in ``dtypes`` (in the runner's order),
    each within ``tolerance`` of the same values in fp32 and, where ``kernel`` is given, the
    op's kernel given floating tensors of that dtype only.
    """

    case: GridCase
    error: Optional[str]
    dtypes: Tuple[str, ...]
    tolerance: float
    kernel: Optional[str] = None


class Grid(NamedTuple):
    """An op called on the real mmcv build in every dtype that matters (the e2e suite runs it):
    ``runner`` names a module of ``tests/e2e_ops`` whose ``run(*case)`` answers one case. The
    ``works`` cases run as released and give bit-identical results, with no more copies, once
    patched; the ``fails`` cases fail as released and run once patched; after ``revert`` the
    files are the release's bytes and the failures come back. ``after``: patches applied
    first, on the release and patched alike, that take the cases to this patch's statements
    (the grid is skipped where one is not registered)."""

    runner: str
    works: Tuple[GridCase, ...]
    fails: Tuple[Fails, ...]
    after: Tuple[str, ...] = ()


class Step(NamedTuple):
    """One training step of a real model that shows the patch (``scripts/model_step.py``, on
    the real build, random weights): on the release it crashes in ``crashes_in`` (a file of
    the patched package, from the package's name on) with ``says`` in its message, once
    the patch is applied it trains with finite losses and gradients, and after its revert it
    crashes again. ``config`` is a config of mmdet 3.3.0,
    or of onedl-mmrotate as ``mmrotate::PATH``; ``after`` as for :class:`Grid`; ``rules``:
    whose autocast and kernels' dtypes it runs under, the CPU's or CUDA's, simulated (the
    patches of CUDA-only kernels)."""

    config: str
    crashes_in: str
    dtype: str = "bf16"
    size: str = "256x256"
    after: Tuple[str, ...] = ()
    rules: str = "cpu"
    #: what the crash's message says, if not the AMP dtype's name (``BFloat16``, ``Half``)
    says: Optional[str] = None


class Proofs(NamedTuple):
    """How a patch is proven beyond its examples and its ``verify`` case."""

    grids: Tuple[Grid, ...] = ()
    steps: Tuple[Step, ...] = ()
    #: the op's tests in mmcv's own repository (paths in its tree), which must pass patched
    #: wherever they pass on the release (``scripts/upstream_tests.py``)
    upstream: Tuple[str, ...] = ()


class Patch(NamedTuple):
    """One fix: pure data, turned into a LibCST codemod by :mod:`mmcv_patcher.codemod`."""

    id: str
    summary: str
    #: distribution name -> the ranges of its releases that have the bug
    affected: Mapping[str, Tuple[Affected, ...]]
    #: POSIX path of the file inside the :attr:`package`'s directory (any ``.py`` file)
    file: str
    #: where the edits are (those that name none, see :attr:`Edit.function`): a module-level
    #: function (``nms``) or a method of a module-level class (``RoIAlign.forward``); the
    #: last binding definition counts, as Python runs it
    function: str
    #: the statements it changes; a release has some or all of them (see Affected.counts)
    edits: Tuple[Edit, ...]
    #: what users see without the fix (Markdown), for README's list of what the tool fixes and the table of patches (docs/patches.md)
    error: str
    #: what ``verify`` runs to prove it on the real mmcv, in each AMP dtype
    case: Case
    #: sources it changes, with what they become; the first one's ``before`` is the
    #: synthetic file the tests patch, unless the tests write that file themselves
    #: (``ops/nms.py``: tests/fixtures.py)
    examples: Tuple[Example, ...]
    #: sources that look alike but that the patch must leave as they are
    untouched: Tuple[Untouched, ...]
    #: the e2e grids, model steps and upstream tests that prove it on the real mmcv
    proofs: Proofs = Proofs()
    #: the top-level package whose file it edits (a key of :data:`PACKAGES`); its ranges name
    #: that package's distributions
    package: str = "mmcv"

    @property
    def definitions(self) -> Tuple[str, ...]:
        """Every definition the edits are in: :attr:`function` first, then those edits name."""
        return tuple(dict.fromkeys([self.function, *(edit.function for edit in self.edits if edit.function)]))

    @property
    def op(self) -> str:
        """The op users know the fix by: what ``mmcv.ops`` calls it, as its case does."""
        return self.case.op


class Release(NamedTuple):
    """Which distribution and version installed a package (either may be unknown),
    what its RECORD says of each file, and the pip command that installs where it is."""

    distribution: Optional[str]
    version: Optional[str]
    #: POSIX path inside the package -> RECORD's hash field for it as written
    #: (``sha256=<urlsafe base64>``, or another algorithm RECORD allows)
    record: Mapping[str, str] = {}
    #: the pip command that installs into the environment the package is in
    installer: str = "pip install"
    #: the top-level package it installed (a key of :data:`PACKAGES`)
    package: str = "mmcv"

    def describe(self) -> str:
        return f"{self.distribution or f'{self.package} (no metadata)'} {self.version or '(unknown version)'}"

    def reinstall(self) -> str:
        """What to do about a damaged file: the command that puts the release back."""
        if self.distribution and self.version:
            return f"restore it with `{self.installer} --force-reinstall --no-deps {self.distribution}=={self.version}`"
        return f"restore it from a fresh copy of {self.package}"

    def installed(self, file: str, data: bytes) -> Optional[bool]:
        """Whether RECORD lists ``file`` (a POSIX path inside the package) with these bytes;
        None when it gives no hash (or one in an algorithm we cannot compute)."""
        field = self.record.get(file)
        return None if field is None else matches_record(field, data)


#: A change to a text: (start, end, new text), in the text's own offsets.
Replacement = Tuple[int, int, str]


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


class Problem(_Word):
    """The kind of a command's failure: the JSON's ``failure.kind``, stable for scripts. The
    value is the word shown in JSON."""

    USAGE = "usage"  # the command line cannot be run (exit 2)
    INTERPRETER = "interpreter"  # --python names nothing that answers (exit 2)
    NO_MMCV = "no-mmcv"  # nothing to apply or revert
    DRIFTED = "drifted"  # a patch's statements are not as any release has them
    UNVERIFIED = "unverified"  # a release outside the known ranges, without --force
    LOCKED = "locked"  # another run held the package's lock too long
    CANNOT_LOCK = "cannot-lock"  # the package directory cannot be locked at all
    READ_ONLY = "read-only"  # this user cannot write the file or its directory
    STALE_BYTECODE = "stale-bytecode"  # bytecode of the file could not be removed
    OUTSIDE_PACKAGE = "outside-package"  # a file or its __pycache__ resolves outside mmcv
    WOULD_NOT_COMPILE = "would-not-compile"  # the new text would not compile
    TOO_LARGE = "too-large"  # the new text would be over the size the tool reads
    WRITE_FAILED = "write-failed"  # the file could not be written for another reason
    VERIFY_FAILED = "verify-failed"  # a verify case did not survive, or none could run
    INTERRUPTED = "interrupted"  # Ctrl-C (SIGINT): exit 130; SIGTERM: exit 143
    INTERNAL = "internal"  # a bug: anything else


class Failure(NamedTuple):
    """Why a command failed: its kind, the path it is about (None when none is), and the
    detail. Only :mod:`mmcv_patcher.report` turns it into words."""

    kind: Problem
    path: Optional[str]
    detail: str


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
        self.error: Optional[Failure] = None

    @property
    def ok(self) -> bool:
        return self.error is None and all(result.ok for result in self.results)

    @property
    def failure(self) -> Optional[Failure]:
        """Why the command failed: the failure that is no patch's, or else the first patch
        that failed (its state is the kind), or None."""
        if self.error is not None:
            return self.error
        failed = next((result for result in self.results if not result.ok), None)
        if failed is None:
            return None
        kind = Problem.UNVERIFIED if failed.state is State.UNVERIFIED else Problem.DRIFTED
        return Failure(kind, failed.file, f"{failed.id}: {failed.message}")
