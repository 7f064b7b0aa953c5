"""The version gate: which release owns a file, and where it stands against a patch's ranges.

Pure values and functions over :mod:`packaging.version`; no I/O.
"""

import enum
from typing import NamedTuple, Optional, Set, Tuple

from packaging.version import InvalidVersion, Version

from mmcv_patcher.model import Affected, Patch
from mmcv_patcher.source import matches_record


class Gate(enum.Enum):
    """Where a release stands relative to a patch's known affected range."""

    AFFECTED = "affected"
    BELOW = "below"  # older than the first affected release: the bug is not there yet
    OUTSIDE = "outside"  # newer, a pre-release, another distribution, or an unknown version


class Release(NamedTuple):
    """Which distribution and version own the file; either may be unknown."""

    distribution: Optional[str]
    version: Optional[str]
    #: RECORD's hash field of the file as the release installed it (``sha256=<urlsafe base64>``,
    #: or another algorithm RECORD allows)
    record_hash: Optional[str] = None
    #: the pip command that installs into the environment the file is in
    installer: str = "pip install"

    def describe(self) -> str:
        return f"{self.distribution or 'mmcv (no metadata)'} {self.version or '(unknown version)'}"

    def reinstall(self) -> str:
        """What to do about a damaged file: the command that puts the release back."""
        if self.distribution and self.version:
            return f"restore it with `{self.installer} --force-reinstall --no-deps {self.distribution}=={self.version}`"
        return "restore it from a fresh copy of mmcv"

    def installed(self, data: bytes) -> Optional[bool]:
        """Whether RECORD lists the file with these bytes; None when it gives no hash (or
        one in an algorithm we cannot compute)."""
        return None if self.record_hash is None else matches_record(self.record_hash, data)


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
