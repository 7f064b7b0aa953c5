"""ranges: where a release stands against a patch's known ranges."""

from __future__ import annotations

from typing import Optional

import pytest

from mmcv_patcher import ranges
from mmcv_patcher.model import Affected, Release
from tests.fixtures import (
    SEED,
)


@pytest.mark.parametrize(
    "distribution, version, expected",
    [
        ("mmcv", "1.3.3", ranges.Standing.BELOW),
        ("mmcv", "1.0rc0", ranges.Standing.BELOW),
        ("mmcv", "1.3.4", ranges.Standing.AFFECTED),
        ("mmcv", "1.7.2", ranges.Standing.AFFECTED),
        ("mmcv-full", "1.7.2", ranges.Standing.AFFECTED),
        ("mmcv-full", "1.3.3", ranges.Standing.BELOW),
        ("mmcv", "2.0.0", ranges.Standing.AFFECTED),
        ("mmcv-lite", "2.2.0", ranges.Standing.AFFECTED),
        ("mmcv", "2.1.0+cu118", ranges.Standing.AFFECTED),
        ("mmcv", "2.2.0+cu121", ranges.Standing.AFFECTED),
        ("mmcv", "2.2.0.post1", ranges.Standing.OUTSIDE),
        ("mmcv", "2.2.0.dev0", ranges.Standing.OUTSIDE),
        ("mmcv", "2.2.1", ranges.Standing.OUTSIDE),
        ("mmcv", "2.0.0rc4", ranges.Standing.OUTSIDE),
        # a pre-release of the first affected release was never checked: outside, not below
        ("mmcv", "1.3.4rc1", ranges.Standing.OUTSIDE),
        ("mmcv", "1.3.4.dev0", ranges.Standing.OUTSIDE),
        ("mmcv-full", "1.3.4a1+cu113", ranges.Standing.OUTSIDE),
        ("mmcv", "1.3.3rc1", ranges.Standing.BELOW),
        ("onedl-mmcv", "2.3.5", ranges.Standing.AFFECTED),
        ("onedl-mmcv", "2.3.5.post1", ranges.Standing.AFFECTED),
        ("onedl-mmcv", "0.1", ranges.Standing.AFFECTED),
        ("onedl-mmcv", "2.3.6rc1", ranges.Standing.OUTSIDE),
        ("onedl-mmcv", "2.3.6", ranges.Standing.OUTSIDE),
        ("someone-elses-mmcv", "2.1.0", ranges.Standing.OUTSIDE),
        (None, "2.1.0", ranges.Standing.AFFECTED),
        ("mmcv", None, ranges.Standing.OUTSIDE),
        ("mmcv", "not a version", ranges.Standing.OUTSIDE),
        # PEP 440 equality: trailing zeros and leading zeros
        ("mmcv", "2.2", ranges.Standing.AFFECTED),
        ("mmcv", "2.2.0.0", ranges.Standing.AFFECTED),
        ("mmcv", "2.2.0.1", ranges.Standing.OUTSIDE),
        ("mmcv", "1.3.4.0", ranges.Standing.AFFECTED),
        ("mmcv", "1.3", ranges.Standing.BELOW),
        ("mmcv", "01.07.02", ranges.Standing.AFFECTED),
        ("mmcv", "10.0", ranges.Standing.OUTSIDE),
        # other spellings PEP 440 normalises
        ("mmcv", " 2.1.0 ", ranges.Standing.AFFECTED),
        ("mmcv", "v2.1.0", ranges.Standing.AFFECTED),
        ("mmcv", "2.1.0.", ranges.Standing.OUTSIDE),
        ("mmcv", "2.\u0661.0", ranges.Standing.OUTSIDE),
    ],
)
def test_standing(distribution: Optional[str], version: Optional[str], expected: ranges.Standing) -> None:
    assert ranges.standing(SEED, Release(distribution, version))[0] is expected


#: mmrotate 1.x as the index has it: two pre-releases, named by the range itself.
PRERELEASES = SEED._replace(
    package="mmrotate", affected={"mmrotate": (Affected(introduced="1.0.0rc0", last_affected="1.0.0rc1"),)}
)


@pytest.mark.parametrize(
    "distribution, version, expected",
    [
        ("mmrotate", "1.0.0rc0", ranges.Standing.AFFECTED),
        ("mmrotate", "1.0.0rc1", ranges.Standing.AFFECTED),
        ("mmrotate", "1.0.0rc2", ranges.Standing.OUTSIDE),
        ("mmrotate", "1.0.0", ranges.Standing.OUTSIDE),
        ("mmrotate", "0.3.4", ranges.Standing.BELOW),
        (None, "1.0.0rc1", ranges.Standing.AFFECTED),
        ("mmcv", "1.0.0rc1", ranges.Standing.OUTSIDE),
    ],
)
def test_a_range_bounded_by_pre_releases_covers_those_it_names(
    distribution: Optional[str], version: str, expected: ranges.Standing
) -> None:
    assert ranges.standing(PRERELEASES, Release(distribution, version, package="mmrotate"))[0] is expected


def test_a_pre_release_before_the_one_a_range_starts_at_is_below_it() -> None:
    # mmrotate 1.0.0rc0 had no clamp of the centres; 1.0.0rc1 brought it
    from_rc1 = PRERELEASES._replace(affected={"mmrotate": (Affected(introduced="1.0.0rc1", last_affected="1.0.0rc1"),)})
    assert ranges.standing(from_rc1, Release("mmrotate", "1.0.0rc0", package="mmrotate"))[0] is ranges.Standing.BELOW
