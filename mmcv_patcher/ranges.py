"""Where a release stands against a patch's known ranges of affected releases.

Pure values and functions over :mod:`packaging.version`; no I/O.
"""

import enum
from typing import Optional, Set, Tuple

from packaging.version import InvalidVersion, Version

from mmcv_patcher.model import Affected, Patch, Release


class Standing(enum.Enum):
    """Where a release stands relative to a patch's known affected ranges."""

    AFFECTED = "affected"
    BELOW = "below"  # older than the first affected release: the bug is not there yet
    OUTSIDE = "outside"  # newer, a pre-release, another distribution, or an unknown version


def standing(patch: Patch, release: Release) -> Tuple[Standing, Optional[Affected]]:
    """Places ``release`` against ``patch.affected``, with the range it falls in. No
    metadata counts as upstream ``mmcv``.

    A local label (``+cu118``) is a build of the same source, so it is ignored. A pre- or
    dev release is below the ranges when its release number is, and otherwise outside them,
    even of the first affected release (``1.3.4rc1``): no pre-release was checked, unless a
    range names one as a bound (``Affected("1.0.0rc0", "1.0.0rc1")``), which checked those,
    and then it is compared as the pre-release it is (1.0.0rc0 is below ``Affected("1.0.0rc1")``).
    """
    ranges = patch.affected.get(release.distribution or patch.package, ())
    if not ranges or release.version is None:
        return Standing.OUTSIDE, None
    try:
        version = Version(release.version)
    except InvalidVersion:
        return Standing.OUTSIDE, None
    if all(_compared(version, each) < Version(each.introduced) for each in ranges):
        return Standing.BELOW, None
    public = Version(version.public)
    for each in ranges:
        if version.is_prerelease and not _names_prereleases(each):
            continue
        if public < Version(each.introduced):
            continue
        if each.last_affected is not None and public <= Version(each.last_affected):
            return Standing.AFFECTED, each
        if each.fixed is not None and public < Version(each.fixed):
            return Standing.AFFECTED, each
    return Standing.OUTSIDE, None


def _compared(version: Version, affected: Affected) -> Version:
    """The version as ``affected``'s bounds are compared with: its release number, or the
    pre-release itself where the range names pre-releases (1.0.0rc0 is older than 1.0.0rc1)."""
    return version if _names_prereleases(affected) else Version(version.base_version)


def _names_prereleases(affected: Affected) -> bool:
    """Whether a bound of the range is itself a pre-release: then the pre-releases inside it
    count, as a PEP 440 specifier that names one admits them (mmrotate's 1.x on the index is
    1.0.0rc0 and 1.0.0rc1)."""
    bounds = (affected.introduced, affected.last_affected, affected.fixed)
    return any(Version(bound).is_prerelease for bound in bounds if bound is not None)


def first_covered(patch: Patch, release: Release) -> str:
    """The oldest release of ``release``'s distribution in the patch's ranges (which a
    release :attr:`Standing.BELOW` them is older than)."""
    ranges = patch.affected.get(release.distribution or patch.package, ())
    return str(min(Version(each.introduced) for each in ranges))


def expected_counts(patch: Patch, affected: Affected) -> Tuple[int, ...]:
    """How many times releases in ``affected`` have each of the patch's edits."""
    return affected.counts or (1,) * len(patch.edits)


def known_forms(patch: Patch) -> Set[Tuple[int, ...]]:
    """The edit counts of every known affected range: a release outside them is only
    ``unverified`` (patchable with --force) when its file has one of these forms."""
    return {expected_counts(patch, each) for ranges in patch.affected.values() for each in ranges}
