"""Decide, without I/O, what a patch finds in a file and what apply or revert would write.

Everything here takes text and returns values, so the whole state table is tested with
strings. LibCST is imported only when a file's state cannot be read from our marker or from
the release's RECORD hash (see :func:`assess`).
"""

import enum
import hashlib
import re
from typing import List, NamedTuple, Optional

from packaging.version import InvalidVersion, Version

from mmcv_patcher.model import Patch, State
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


def gate(patch: Patch, release: Release) -> Gate:
    """Places ``release`` against ``patch.affected``. No metadata counts as upstream ``mmcv``.

    A local label (``+cu118``) is a build of the same source, so it is ignored. A pre- or
    dev release is below the range when its release number is, and otherwise outside it,
    even of the first affected release (``1.3.4rc1``): no pre-release was checked.
    """
    affected = patch.affected.get(release.distribution or "mmcv")
    if affected is None or release.version is None:
        return Gate.OUTSIDE
    try:
        version = Version(release.version)
    except InvalidVersion:
        return Gate.OUTSIDE
    if Version(version.base_version) < Version(affected.introduced):
        return Gate.BELOW
    if version.is_prerelease:
        return Gate.OUTSIDE
    public = Version(version.public)
    if affected.last_affected is not None and public <= Version(affected.last_affected):
        return Gate.AFFECTED
    if affected.fixed is not None and public < Version(affected.fixed):
        return Gate.AFFECTED
    return Gate.OUTSIDE


def marker(patch: Patch, original_sha256: str) -> str:
    """The comment that identifies our edit and remembers the bytes it replaced."""
    return f"# mmcv-patcher: {patch.id} sha256={original_sha256}"


class _Marker(NamedTuple):
    start: int
    end: int
    #: the sha256 of the file before we patched it
    sha256: str


def _markers(text: str, patch: Patch) -> List[_Marker]:
    """Each marker of ``patch`` in ``text``: two spaces, the comment, 64 lowercase hex
    digits, and the end of that line."""
    pattern = re.escape("  " + marker(patch, "")) + r"([0-9a-f]{64})(?=\r|\n|\Z)"
    return [_Marker(found.start(), found.end(), found.group(1)) for found in re.finditer(pattern, text)]


def remembered_sha256(source: Source, patch: Patch) -> Optional[str]:
    """The original file's hash our marker keeps, if the file carries exactly one marker."""
    markers = _markers(source.text, patch)
    return markers[0].sha256 if len(markers) == 1 else None


class _Unpatched(NamedTuple):
    """The result of taking our edit out of a file: the text and whether it is the original."""

    text: Optional[str]
    line: int
    exact: bool
    problem: str
    sha256: Optional[str] = None


def _unpatch(source: Source, patch: Patch) -> Optional[_Unpatched]:
    """Removes our marker and insertion as plain text; None when the file has no marker.

    The result is trusted only when its sha256 equals the one the marker kept, which makes
    this exact without LibCST: a revert restores the original bytes or refuses.
    """
    markers = _markers(source.text, patch)
    if not markers:
        return None
    start, end, kept = markers[0]
    line = line_at(source.text, start)
    if len(markers) > 1:
        lines = ", ".join(str(line_at(source.text, m.start)) for m in markers)
        return _Unpatched(None, line, False, f"our marker appears {len(markers)} times (lines {lines})")
    text = source.text[:start] + source.text[end:]
    inserted_at = text.rfind(patch.inserted, 0, start)
    if inserted_at < 0:
        return _Unpatched(None, line, False, f"our marker is there but {patch.inserted!r} is not")
    text = text[:inserted_at] + text[inserted_at + len(patch.inserted):]
    exact = sha256_hex(source.encode(text)) == kept
    return _Unpatched(text, line, exact, "" if exact else "the patched file was edited after mmcv-patcher patched it", kept)


def _differs_from_record(sha256: Optional[str], release: Release) -> bool:
    """Whether RECORD lists the file with a hash other than ``sha256`` (hex)."""
    return release.record_hash is not None and sha256 is not None and not release.installed(bytes.fromhex(sha256))


def _quick_unpatched_line(source: Source, patch: Patch, release: Release) -> Optional[int]:
    """The anchor's line when the file is byte-identical to its release and has it once.

    A file whose hash matches RECORD is the file an affected release installed, and every
    such release has the statement (tests/test_releases.py checks them structurally), so
    the state is known without parsing; the text only has to say where. It must be the
    canonical statement alone on its line, once, below ``def <function>(`` as the nearest
    top-level ``def``; anything less plain goes to the structural scan.
    """
    if not release.installed(hashlib.sha256(source.encode(source.text)).digest()):
        return None
    text = source.text
    first = text.find(patch.anchor)
    if first < 0 or text.find(patch.anchor, first + 1) >= 0 or patch.fixed in text:
        return None
    start = max(text.rfind("\n", 0, first), text.rfind("\r", 0, first)) + 1
    end = first + len(patch.anchor)
    if text[start:first].strip(" \t") or (end < len(text) and text[end] not in "\r\n"):
        return None
    above = max(text.rfind("\ndef ", 0, first), text.rfind("\rdef ", 0, first))
    if above < 0 or not text.startswith(f"def {patch.function}(", above + 1):
        return None
    if text.count(f"def {patch.function}(") != 1:  # which one Python binds is the scan's to say
        return None
    return line_at(text, first)


def assess(source: Source, patch: Patch, release: Release, *, need_text: bool) -> Plan:
    """The state of ``patch`` in ``source``; ``new_text`` holds the text after apply
    (unpatched, unverified) or after revert (patched, or drifted by an edit to ours).

    With ``need_text`` False the state may be decided without LibCST.
    """
    undone = _unpatch(source, patch)
    if undone is not None:
        if undone.exact:
            message = "patched by mmcv-patcher"
            if _differs_from_record(undone.sha256, release):
                message += "; before that, the file already differed from the release's RECORD"
            return Plan(State.PATCHED, undone.line, message, new_text=undone.text, original_sha256=undone.sha256)
        return Plan(State.DRIFTED, undone.line, f"{undone.problem}; {release.reinstall()}", new_text=undone.text, ok=False)
    where = gate(patch, release)
    if where is Gate.BELOW:
        return Plan(State.NOT_AFFECTED, None, f"{release.describe()} predates the bug")
    if where is Gate.AFFECTED and not need_text:
        line = _quick_unpatched_line(source, patch, release)
        if line is not None:
            return Plan(State.UNPATCHED, line, f"{release.describe()} has the bug")
    return _assess_structurally(source, patch, release, where)


def _assess_structurally(source: Source, patch: Patch, release: Release, where: Gate) -> Plan:
    from mmcv_patcher import codemod  # LibCST: loaded only when the text alone cannot tell

    original_sha = sha256_hex(source.encode(source.text))
    try:
        found = codemod.scan(source.text, patch, marker(patch, original_sha))
    except codemod.ParseFailure as failure:
        return Plan(State.DRIFTED, failure.line, f"cannot parse the file: {failure.reason}; {release.reinstall()}", ok=False)
    affected = where is Gate.AFFECTED
    if found.function_line is None:
        if affected:
            return Plan(State.DRIFTED, None, f"no module-level function {patch.function}(); {release.reinstall()}", ok=False)
        return Plan(State.NOT_AFFECTED, None, f"no function {patch.function}()")
    if found.anchors == 1 and found.fixed == 0:
        line = found.anchor_lines[0]
        undone = _unpatch(Source(found.patched_text, source.encoding), patch)
        if undone is None or undone.text != source.text:
            # The edit must be exactly our two insertions, so revert can take them out again.
            return Plan(
                State.DRIFTED,
                line,
                f"LibCST cannot edit this file without changing other bytes (unusual newlines?); nothing was written;"
                f" append `{patch.inserted}` to that line by hand",
                ok=False,
            )
        if affected:
            return Plan(State.UNPATCHED, line, f"{release.describe()} has the bug", new_text=found.patched_text)
        return Plan(
            State.UNVERIFIED,
            line,
            f"{release.describe()} is outside the releases this patch knows, but has the statement;"
            " apply --force patches it",
            new_text=found.patched_text,
        )
    if found.anchors == 0 and found.fixed >= 1:
        return Plan(State.FIXED_UPSTREAM, found.fixed_lines[0], "the cast is already there; nothing to do")
    if found.anchors == 0:
        if affected:
            which = f"{patch.function}()" if found.definitions == 1 else f"the last of {found.definitions} definitions of {patch.function}(), the one Python runs"
            return Plan(
                State.DRIFTED,
                found.function_line,
                f"the statement `{patch.anchor}` is not in {which}; the file was edited: {release.reinstall()}",
                ok=False,
            )
        return Plan(State.NOT_AFFECTED, found.function_line, f"{patch.function}() has no such statement")
    lines = ", ".join(str(n) for n in found.anchor_lines + found.fixed_lines)
    return Plan(
        State.DRIFTED,
        (found.anchor_lines + found.fixed_lines)[0],
        f"the statement is in {patch.function}() {found.anchors + found.fixed} times (lines {lines});"
        f" refusing to guess which to patch: {release.reinstall()}",
        ok=False,
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
        after = State.UNPATCHED if gate(patch, release) is Gate.AFFECTED else State.UNVERIFIED
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
