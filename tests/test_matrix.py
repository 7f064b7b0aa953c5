"""Every release on the package index (scripts/releases.MATRIX): each patch finds exactly the
state its ranges promise, apply patches every affected statement, the results compile and
``status --check`` passes, and revert gives back the released bytes. Run through the CLI on
the release's own copy of every file a patch names, and its ``version.py``, with a
dist-info whose RECORD hashes them, as pip would have installed them."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Dict, List

import pytest

from mmcv_patcher import model, ranges, registry
from mmcv_patcher.model import PACKAGES
from scripts import releases
from scripts.releases import Release
from tests.fixtures import dist_info, expected_states, tool

pytestmark = pytest.mark.release


def package_of(release: Release) -> str:
    """The package the release's distribution installs."""
    return next(package for package, distributions in PACKAGES.items() if release.distribution in distributions)


def patches_of(release: Release) -> List[model.Patch]:
    """The registered patches of the release's package."""
    return [patch for patch in registry.all_patches() if patch.package == package_of(release)]


def _installed(release: Release, root: Path) -> Dict[str, Path]:
    """The release's copy of each file its package's patches name that it has, and its
    ``version.py``, under ``root/PACKAGE``, with a dist-info whose RECORD hashes them;
    returns them by path inside the package."""
    name = package_of(release)
    package = root / name
    package.mkdir()
    (package / "__init__.py").write_text("")
    installed = {}
    for file in sorted({patch.file for patch in patches_of(release)} | {"version.py"}):
        try:
            data = releases.released_file(release, f"{name}/{file}")
        except KeyError:
            continue
        (package / file).parent.mkdir(parents=True, exist_ok=True)
        (package / file).write_bytes(data)
        installed[file] = package / file
    dist_info(
        root,
        release.distribution,
        release.version,
        {f"{name}/__init__.py": None, **{f"{name}/{file}": path.read_bytes() for file, path in installed.items()}},
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

    expected = expected_states(release.distribution, release.version, package_of(release))
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
        for p in patches_of(release)
        for _, a in [ranges.standing(p, model.Release(release.distribution, release.version))]
        if a is not None
    )
    assert run("status", "--check")["patches"]
    run("revert")
    assert {file: path.read_bytes() for file, path in files.items()} == original
