"""The whole cycle on real releases, through the CLI, as a user runs it.

Pure-Python builds are installed for real into throwaway virtualenvs and found the default
way (the interpreter's own mmcv); releases that only install by compiling are unpacked
sdists reached with ``--path``. Each ends byte-identical to the released file.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Dict, Tuple

import pytest

from mmcv_patcher import interpreter, locate, registry
from scripts import releases
from scripts.releases import Release
from tests.fixtures import SEED, expected_states, tool

pytestmark = pytest.mark.release

#: The patches of mmcv, whose releases these are.
MMCV = [patch for patch in registry.all_patches() if patch.package == "mmcv"]

#: A patch of a file each of mmdet and mmrotate ship, to locate them by (the seed's data otherwise).
IN_MMDET = SEED._replace(id="in-mmdet", package="mmdet", file="models/dense_heads/vfnet_head.py", affected={})
IN_MMROTATE = SEED._replace(id="in-mmrotate", package="mmrotate", file="structures/bbox/box_converters.py", affected={})


def _cycle(python: Path, package: Path, release: Release, *where: str) -> None:
    """status, apply, apply again, status --check, revert; then the released bytes again, in
    every file a patch names that the release has (1.3.3 has no ``ops/rotated_feature_align.py``)."""
    original = {}
    for file in sorted({patch.file for patch in MMCV}):
        try:
            original[file] = releases.released_file(release, f"mmcv/{file}")
        except KeyError:
            assert not (package / file).exists()
    files = {file: package / file for file in original}
    assert _contents(files) == original, "the install does not hold the released files"
    expected = expected_states(release.distribution, release.version)
    assert expected["batched-nms-amp-dtype"] == release.state

    status = _json(python, "status", *where)
    assert status["targets"][0]["distribution"] == release.distribution
    assert status["targets"][0]["version"] == release.version
    assert {p["id"]: p["state"] for p in status["patches"]} == expected
    assert {p["id"]: Path(p["file"]).resolve() for p in status["patches"]} == {
        patch.id: (package / patch.file).resolve() for patch in MMCV
    }

    check = tool("status", "--check", *where, python=python)
    affected = "unpatched" in expected.values()
    assert check.returncode == (3 if affected else 0), check.stdout + check.stderr

    applied = _json(python, "apply", *where)
    for patch in applied["patches"]:
        if expected[patch["id"]] == "unpatched":
            assert patch == dict(patch, state="patched", changed=True, ok=True)
        else:
            assert patch["state"] == expected[patch["id"]] and not patch["changed"]
    patched = _contents(files)
    if release.state == "unpatched":
        assert (
            patched["ops/nms.py"].count(b".to(scores_after_nms.dtype)  # mmcv-patcher: batched-nms-amp-dtype sha256=")
            == 1
        )
    for file in files:
        _assert_only_insertions(original[file], patched[file])

    again = _json(python, "apply", *where)
    assert not any(p["changed"] for p in again["patches"])
    assert _contents(files) == patched

    assert tool("status", "--check", *where, python=python).returncode == 0

    reverted = _json(python, "revert", *where)
    assert [p["changed"] for p in reverted["patches"]] == [
        expected[p["id"]] == "unpatched" for p in reverted["patches"]
    ]
    assert _contents(files) == original


def _contents(files: Dict[str, Path]) -> Dict[str, bytes]:
    return {file: path.read_bytes() for file, path in files.items()}


def _assert_only_insertions(original: bytes, patched: bytes) -> None:
    """The same lines, each changed one the old line with text inserted (its bytes in order)."""
    before, after = original.splitlines(True), patched.splitlines(True)
    assert len(before) == len(after)
    for old, new in zip(before, after):
        rest = iter(new)
        assert all(byte in rest for byte in old), (old, new)


def _json(python: Path, *args: str) -> Dict[str, Any]:
    done = tool(*args, "--json", python=python)
    assert done.returncode == 0, done.stdout + done.stderr
    document: Dict[str, Any] = json.loads(done.stdout)
    return document


@pytest.fixture(scope="module")
def installed_wheels() -> Dict[str, Any]:
    """Download and build once per run (and once per cache) before the venvs are made."""
    return {release.id: releases.wheel(release) for release in releases.INSTALLED}


@pytest.mark.parametrize("release", releases.INSTALLED, ids=lambda r: r.id)
def test_installed_release_round_trip(release: Release, installed_wheels: Dict[str, Any], tmp_path: Path) -> None:
    python = releases.make_venv(tmp_path / "venv")
    releases.pip_install(python, "--no-index", installed_wheels[release.id])
    package = releases.site_packages(python) / "mmcv"
    _cycle(python, package, release)
    assert not _leftovers(package / "ops"), "the tool left files in the package"


@pytest.mark.parametrize("release", releases.CHECKOUTS, ids=lambda r: r.id)
@pytest.mark.parametrize("form", ["root", "package", "file"])
def test_source_checkout_round_trip(release: Release, form: str, tmp_path: Path) -> None:
    root = releases.unpack(release, tmp_path)
    nms = root / "mmcv" / "ops" / "nms.py"
    path = {"root": root, "package": root / "mmcv", "file": nms}[form]
    if form == "file":  # --path naming one file works on that file's patches only
        _file_cycle(nms, release)
    else:
        _cycle(Path(sys.executable), root / "mmcv", release, "--path", str(path))
    assert not _leftovers(nms.parent)


def test_a_venv_holding_mmcv_mmdet_and_mmrotate_is_one_target_each_and_revert_gives_back_every_byte(
    installed_wheels: Dict[str, Any], tmp_path: Path
) -> None:
    python = releases.make_venv(tmp_path / "venv")
    lite = next(release for release in releases.INSTALLED if release.id == "mmcv-lite-2.2.0")
    releases.pip_install(
        python, "--no-index", installed_wheels[lite.id], *(releases.wheel(each) for each in releases.DETECTORS)
    )
    site = releases.site_packages(python)
    packages = {"mmcv": site / "mmcv", "mmdet": site / "mmdet", "mmrotate": site / "mmrotate"}
    released = {path: path.read_bytes() for package in packages.values() for path in package.rglob("*.py")}
    status = _json(python, "status")
    assert [(t["package"], t["package_dir"], t["distribution"], t["version"]) for t in status["targets"]] == [
        (package, str(packages[package]), distribution, version)
        for package, distribution, version in (
            ("mmcv", "mmcv-lite", "2.2.0"),
            ("mmdet", "mmdet", "3.3.0"),
            ("mmrotate", "onedl-mmrotate", "1.2.1"),
        )
        if any(patch.package == package for patch in registry.all_patches())
    ]
    for where in (str(site), None):  # --path site-packages, and the venv's interpreter asked
        located = locate.locate_all(where, [IN_MMDET, IN_MMROTATE], interpreter.ask(str(python)))
        assert [(t.package, t.package_dir, t.release.distribution, t.release.version) for t in located.targets] == [
            ("mmdet", str(packages["mmdet"]), "mmdet", "3.3.0"),
            ("mmrotate", str(packages["mmrotate"]), "onedl-mmrotate", "1.2.1"),
        ]
        assert [
            patch.file in target.release.record for patch, target in zip([IN_MMDET, IN_MMROTATE], located.targets)
        ] == [True, True]
    applied = _json(python, "apply")
    assert applied["patches"] and all(p["state"] == "patched" and p["changed"] for p in applied["patches"])
    assert tool("status", "--check", python=python).returncode == 0
    _json(python, "revert")
    assert {path: path.read_bytes() for path in released} == released


def _file_cycle(nms: Path, release: Release) -> None:
    """apply and revert with ``--path`` naming nms.py: its patches only, then its released bytes."""
    original = nms.read_bytes()
    others = {path: path.read_bytes() for path in nms.parent.glob("*.py") if path != nms}
    applied = _json(Path(sys.executable), "apply", "--path", str(nms))
    assert {p["id"] for p in applied["patches"]} == {
        patch.id for patch in registry.all_patches() if patch.file == "ops/nms.py"
    }
    assert {path: path.read_bytes() for path in others} == others, "no other file is touched"
    _assert_only_insertions(original, nms.read_bytes())
    _json(Path(sys.executable), "revert", "--path", str(nms))
    assert nms.read_bytes() == original


def _leftovers(directory: Path) -> Tuple[str, ...]:
    return tuple(p.name for p in directory.iterdir() if "mmcv-patcher" in p.name or p.name.startswith(".nms.py"))


#: One release of each kind the helpers fetch: an old setup.py (mmcv 1.x, and the same source
#: as mmcv-full), a 2.x sdist that names itself by MMCV_WITH_OPS, a wheel-only distribution,
#: and a fork built with pip's isolation.
EACH_KIND = (
    Release("mmcv", "1.3.4", "unpatched"),
    Release("mmcv-full", "1.7.2", "unpatched"),
    Release("mmcv", "2.2.0", "unpatched"),
    Release("mmcv-lite", "2.2.0", "unpatched"),
    Release("onedl-mmcv", "2.3.6", "fixed-upstream", isolated=True),
)


@pytest.fixture
def empty_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The release helpers' downloads, builds and logs go to an empty directory (the build
    environment, tooling rather than a release, stays shared)."""
    for name in ("DISTS", "WHEELS", "LOGS"):
        monkeypatch.setattr(releases, name, tmp_path / name.lower())
    return tmp_path


@pytest.mark.parametrize("release", EACH_KIND, ids=lambda r: r.id)
def test_a_release_downloads_into_an_empty_cache(release: Release, empty_cache: Path) -> None:
    downloaded = releases.download(release)
    assert downloaded.parent == empty_cache / "dists"
    assert b"def batched_nms(" in releases.released_file(release)


def test_a_pure_python_wheel_builds_into_an_empty_cache(empty_cache: Path) -> None:
    built = releases.wheel(Release("mmcv", "1.3.4", "unpatched"))
    assert built.parent == empty_cache / "wheels" and built.name.startswith("mmcv-1.3.4-")


def test_a_2x_sdist_unpacks_from_an_empty_cache(empty_cache: Path) -> None:
    root = releases.unpack(Release("mmcv", "2.1.0", "unpatched"), empty_cache / "checkout")
    assert (root / "mmcv" / "ops" / "nms.py").is_file()
