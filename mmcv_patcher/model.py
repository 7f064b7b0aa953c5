"""The value objects every step passes along: patches, states and per-patch results.

Nothing here does I/O or imports LibCST, so the registry and ``status`` stay cheap.
"""

import enum
from typing import Mapping, NamedTuple, Optional, Tuple

#: Distributions that install the top-level package ``mmcv``.
MMCV_DISTRIBUTIONS = ("mmcv", "mmcv-full", "mmcv-lite", "onedl-mmcv")


class State(str, enum.Enum):
    """What a patch finds in a file. The value is the word shown in output and JSON."""

    UNPATCHED = "unpatched"
    PATCHED = "patched"
    FIXED_UPSTREAM = "fixed-upstream"
    NOT_AFFECTED = "not-affected"
    UNVERIFIED = "unverified"
    DRIFTED = "drifted"

    def __str__(self) -> str:
        return self.value


class Affected(NamedTuple):
    """The releases of one distribution that have a bug, as an OSV range: from
    ``introduced`` on, up to and including ``last_affected`` or up to but not including
    ``fixed`` (exactly one of the two: later releases were not checked). Versions are
    PEP 440; a local label (``2.1.0+cu118``) does not change the source, and pre-releases
    never count as affected (none was checked).

    Bounds rather than a PEP 440 specifier set, because "older than the first affected
    release" is its own verdict (not affected), which a specifier set cannot express.
    """

    introduced: str = "0"
    last_affected: Optional[str] = None
    fixed: Optional[str] = None


class Patch(NamedTuple):
    """One fix: pure data, turned into a LibCST codemod by :mod:`mmcv_patcher.codemod`.

    ``anchor`` is the statement as released, ``fixed`` the statement as it must become;
    both are matched structurally (formatting, comments and parentheses are ignored).
    ``fixed`` must be ``anchor`` with text appended, so the edit is a pure insertion that
    a revert can take out again byte for byte.
    """

    id: str
    summary: str
    #: distribution name -> the releases that have the bug
    affected: Mapping[str, Affected]
    #: POSIX path of the file inside the ``mmcv`` package directory
    file: str
    #: name of the module-level function the anchor must be in
    function: str
    anchor: str
    fixed: str
    #: (before, after) source pairs that document and pin the codemod; run as tests
    examples: Tuple[Tuple[str, str], ...] = ()

    @property
    def inserted(self) -> str:
        """The exact text the codemod inserts right after the anchor's value."""
        return self.fixed[len(self.anchor):]


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
