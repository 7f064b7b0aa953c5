"""Every release on the package index (scripts/releases.MATRIX): each patch finds exactly the
state its ranges promise, apply patches every affected statement, the results compile and
``status --check`` passes, and revert gives back the released bytes. Run through the CLI on
the release's own copy of every file a patch names, and its ``version.py``, with a
dist-info whose RECORD hashes them, as pip would have installed them."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Dict

import pytest

from mmcv_patcher import model, ranges, registry
from scripts import releases
from scripts.releases import Release
from tests.fixtures import dist_info, expected_states, tool

pytestmark = pytest.mark.release

PATCHES = registry.all_patches()
FILES = sorted({patch.file for patch in PATCHES} | {"version.py"})


def _installed(release: Release, root: Path) -> Dict[str, Path]:
    """The release's copy of each of :data:`FILES` it has, under ``root/mmcv``, with a
    dist-info whose RECORD hashes them; returns them by path inside the package."""
    package = root / "mmcv"
    package.mkdir()
    (package / "__init__.py").write_text("")
    installed = {}
    for file in FILES:
        try:
            data = releases.released_file(release, f"mmcv/{file}")
        except KeyError:
            continue
        (package / file).parent.mkdir(parents=True, exist_ok=True)
        (package / file).write_bytes(data)
        installed[file] = package / file
    dist_info(
        root,
        release.distribution,
        release.version,
        {"mmcv/__init__.py": None, **{f"mmcv/{file}": path.read_bytes() for file, path in installed.items()}},
    )
    return installed


@pytest.mark.parametrize("release", releases.MATRIX, ids=lambda r: r.id)
def test_every_release_patches_and_reverts_exactly(release: Release, tmp_path: Path) -> None:
    files = _installed(release, tmp_path)
    original = {file: path.read_bytes() for file, path in files.items()}
    python = Path(sys.executable)

    def run(*args: str, code: int = 0) -> Dict[str, Any]:
        done = tool(*args, "--path", str(tmp_path), "--json", python=python)
        assert done.returncode == code, done.stdout + done.stderr
        document: Dict[str, Any] = json.loads(done.stdout)
        return document

    expected = expected_states(release.distribution, release.version)
    status = run("status", "--check", code=3 if "unpatched" in expected.values() else 0)
    assert {p["id"]: p["state"] for p in status["patches"]} == expected
    applied = run("apply")
    assert {p["id"]: p["state"] for p in applied["patches"]} == {
        k: "patched" if v == "unpatched" else v for k, v in expected.items()
    }
    markers = 0
    for path in files.values():
        patched = path.read_bytes()
        compile(patched, str(path), "exec", dont_inherit=True)
        markers += patched.count(b"# mmcv-patcher: ")
    assert markers == sum(
        sum(ranges.expected_counts(p, a))
        for p in PATCHES
        for _, a in [ranges.standing(p, model.Release(release.distribution, release.version))]
        if a is not None
    )
    assert run("status", "--check")["patches"]
    run("revert")
    assert {file: path.read_bytes() for file, path in files.items()} == original
