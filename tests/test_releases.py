"""The whole cycle on real releases, through the CLI, as a user runs it.

Pure-Python builds are installed for real into throwaway virtualenvs and found the default
way (the interpreter's own mmcv); releases that only install by compiling are unpacked
sdists reached with ``--path``. Each ends byte-identical to the released file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Tuple

import pytest

from tests import releases
from tests.releases import Release

pytestmark = pytest.mark.release


def _cycle(python: Path, nms: Path, release: Release, *where: str) -> None:
    """status, apply, apply again, status --check, revert; then the released bytes again."""
    original = releases.released_file(release)
    assert nms.read_bytes() == original, "the install does not hold the released file"

    status = _json(python, "status", *where)
    assert status["target"]["distribution"] == release.distribution
    assert status["target"]["version"] == release.version
    [patch] = status["patches"]
    assert patch["state"] == release.state, patch
    assert Path(patch["file"]).resolve() == nms.resolve()

    check = releases.tool(python, "status", "--check", *where)
    affected = release.state == "unpatched"
    assert check.returncode == (3 if affected else 0), check.stdout + check.stderr

    applied = _json(python, "apply", *where)
    [patch] = applied["patches"]
    if not affected:
        assert patch["state"] == release.state and not patch["changed"]
        assert nms.read_bytes() == original
        assert releases.tool(python, "revert", *where).returncode == 0
        assert nms.read_bytes() == original
        return
    assert patch == dict(patch, state="patched", changed=True, ok=True)
    patched = nms.read_bytes()
    assert patched.count(b".to(scores_after_nms.dtype)") == 1
    _assert_only_the_anchor_changed(original, patched)

    again = _json(python, "apply", *where)
    assert again["patches"][0]["state"] == "patched" and not again["patches"][0]["changed"]
    assert nms.read_bytes() == patched

    assert releases.tool(python, "status", "--check", *where).returncode == 0

    reverted = _json(python, "revert", *where)
    assert reverted["patches"][0] == dict(reverted["patches"][0], state="unpatched", changed=True)
    assert nms.read_bytes() == original


def _assert_only_the_anchor_changed(original: bytes, patched: bytes) -> None:
    before, after = original.splitlines(True), patched.splitlines(True)
    assert len(before) == len(after)
    changed = [(b, a) for b, a in zip(before, after) if b != a]
    assert len(changed) == 1
    old, new = changed[0]
    assert old.strip() == b"scores_after_nms[mask[keep]] = dets[:, -1]"
    assert new.startswith(old.rstrip(b"\n") + b".to(scores_after_nms.dtype)  # mmcv-patcher: batched-nms-amp-dtype sha256=")


def _json(python: Path, *args: str) -> dict:
    done = releases.tool(python, *args, "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout)


@pytest.fixture(scope="module")
def installed_wheels() -> dict:
    """Download and build once per run (and once per cache) before the venvs are made."""
    return {release.id: releases.wheel(release) for release in releases.INSTALLED}


@pytest.mark.parametrize("release", releases.INSTALLED, ids=lambda r: r.id)
def test_installed_release_round_trip(release: Release, installed_wheels: dict, tmp_path: Path) -> None:
    python = releases.make_venv(tmp_path / "venv")
    releases.pip_install(python, "--no-index", installed_wheels[release.id])
    nms = releases.site_packages(python) / "mmcv" / "ops" / "nms.py"
    _cycle(python, nms, release)
    assert not _leftovers(nms.parent), "the tool left files in the package"


@pytest.mark.parametrize("release", releases.CHECKOUTS, ids=lambda r: r.id)
@pytest.mark.parametrize("form", ["root", "package", "file"])
def test_source_checkout_round_trip(release: Release, form: str, tmp_path: Path) -> None:
    import sys

    root = releases.unpack(release, tmp_path)
    nms = root / "mmcv" / "ops" / "nms.py"
    path = {"root": root, "package": root / "mmcv", "file": nms}[form]
    _cycle(Path(sys.executable), nms, release, "--path", str(path))
    assert not _leftovers(nms.parent)


def _leftovers(directory: Path) -> Tuple[str, ...]:
    return tuple(p.name for p in directory.iterdir() if "mmcv-patcher" in p.name or p.name.startswith(".nms.py"))
