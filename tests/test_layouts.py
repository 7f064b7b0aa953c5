"""Every place mmcv lives, each with the real mmcv 1.7.2 installed that way.

Wheel installs are covered by test_releases.py; here: editable (PEP 660 and the old
``setup.py develop``), an ``.egg`` directory, a source checkout on ``sys.path``, a
``--target`` directory, the user site, another interpreter (``--python``), two
distributions claiming one tree, and a copy that shadows the installed one.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import zipfile
from pathlib import Path
from typing import Any, Dict, Optional

import pytest

from scripts import releases
from tests.fixtures import tool

pytestmark = pytest.mark.release

MMCV = next(r for r in releases.INSTALLED if r.id == "mmcv-1.7.2")
LITE = next(r for r in releases.INSTALLED if r.id == "mmcv-lite-2.2.0")
NO_OPS = {"MMCV_WITH_OPS": "0"}


def cycle(
    python: Path,
    nms: Path,
    *args: str,
    env: Optional[Dict[str, str]] = None,
    distribution: Optional[str] = "mmcv",
    version: str = "1.7.2",
    release: releases.Release = MMCV,
) -> Dict[str, Any]:
    """status, apply, status --check, revert through the CLI; returns the first status."""
    original = releases.released_file(release)
    assert nms.read_bytes() == original

    def run(*words: str) -> Dict[str, Any]:
        done = tool(*words, *args, "--json", env=env, python=python)
        assert done.returncode == 0, done.stdout + done.stderr
        document: Dict[str, Any] = json.loads(done.stdout)
        return document

    status = run("status")
    assert (status["targets"][0]["distribution"], status["targets"][0]["version"]) == (distribution, version), status
    assert Path(status["patches"][0]["file"]).resolve() == nms.resolve()
    assert status["patches"][0]["state"] == "unpatched"
    assert run("apply")["patches"][0]["state"] == "patched"
    assert b"# mmcv-patcher: batched-nms-amp-dtype" in nms.read_bytes()
    assert tool("status", "--check", *args, env=env, python=python).returncode == 0
    assert run("revert")["patches"][0]["state"] == "unpatched"
    assert nms.read_bytes() == original
    return status


def setuptools_venv(where: Path) -> Path:
    """A venv that can build mmcv 1.7.2's old setup.py: pip, setuptools<70, wheel."""
    python = releases.make_venv(where, with_pip=True)
    releases.run([python, "-m", "pip", "install", "-q", "setuptools<70", "wheel"])
    return python


def test_editable_install_pep660(tmp_path: Path) -> None:
    root = releases.unpack(MMCV, tmp_path)
    python = setuptools_venv(tmp_path / "venv")
    releases.run(
        [python, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--use-pep517", "-e", root], NO_OPS
    )
    site = releases.site_packages(python)
    assert any(p.name.startswith("__editable__") for p in site.iterdir()), "expected a PEP 660 editable install"
    cycle(python, root / "mmcv" / "ops" / "nms.py")


def test_editable_install_setup_py_develop(tmp_path: Path) -> None:
    root = releases.unpack(MMCV, tmp_path)
    python = setuptools_venv(tmp_path / "venv")
    releases.run([python, "setup.py", "-q", "develop", "--no-deps"], NO_OPS, cwd=root)
    site = releases.site_packages(python)
    assert (site / "mmcv.egg-link").exists() and (site / "easy-install.pth").exists()
    cycle(python, root / "mmcv" / "ops" / "nms.py")


def test_egg_directory(tmp_path: Path) -> None:
    root = releases.unpack(MMCV, tmp_path)
    python = setuptools_venv(tmp_path / "venv")
    releases.run([python, "setup.py", "-q", "bdist_egg", "--dist-dir", tmp_path / "eggs"], NO_OPS, cwd=root)
    [egg] = (tmp_path / "eggs").glob("mmcv-1.7.2-*.egg")
    site = releases.site_packages(python)
    # What easy_install (``setup.py install``) does with a zip_safe=False egg, minus the
    # dependency downloads: unzip it into site-packages and list it in easy-install.pth.
    with zipfile.ZipFile(egg) as zipped:
        zipped.extractall(site / egg.name)
    (site / "easy-install.pth").write_text(f"./{egg.name}\n")
    cycle(python, site / egg.name / "mmcv" / "ops" / "nms.py")


def test_legacy_setup_py_install_with_installed_files_txt(tmp_path: Path) -> None:
    root = releases.unpack(MMCV, tmp_path)
    python = setuptools_venv(tmp_path / "venv")
    site = releases.site_packages(python)
    record = tmp_path / "record.txt"
    releases.run(
        [python, "setup.py", "-q", "install", "--single-version-externally-managed", "--record", record],
        NO_OPS,
        cwd=root,
    )
    # What old pip then did: turn setuptools' record into installed-files.txt, relative to
    # the .egg-info directory (importlib.metadata reads it only from Python 3.12 on).
    [info] = site.glob("mmcv-1.7.2-*.egg-info")
    lines = [os.path.relpath(line, info) for line in record.read_text().split()]
    (info / "installed-files.txt").write_text("\n".join(lines) + "\n")
    assert not list(site.glob("mmcv-*.dist-info"))
    cycle(python, site / "mmcv" / "ops" / "nms.py")


def test_source_checkout_on_sys_path(tmp_path: Path) -> None:
    root = releases.unpack(MMCV, tmp_path)
    python = releases.make_venv(tmp_path / "venv")
    cycle(python, root / "mmcv" / "ops" / "nms.py", env={"PYTHONPATH": str(root)})


def test_target_directory(tmp_path: Path) -> None:
    target = tmp_path / "target"
    releases.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-index",
            "--target",
            target,
            releases.wheel(MMCV),
        ]
    )
    python = releases.make_venv(tmp_path / "venv")
    cycle(python, target / "mmcv" / "ops" / "nms.py", env={"PYTHONPATH": str(target)})


def _base_python() -> str:
    base = Path(sys.base_prefix) / "bin" / f"python{sys.version_info[0]}.{sys.version_info[1]}"
    assert base.exists(), base
    return str(base)


def test_user_site_through_python_option(tmp_path: Path) -> None:
    base = _base_python()
    env = {"PYTHONUSERBASE": str(tmp_path / "userbase"), "PYTHONNOUSERSITE": ""}
    releases.run([base, "-m", "pip", "install", "-q", "--user", "--no-deps", "--no-index", releases.wheel(MMCV)], env)
    user_site = releases.run([base, "-c", "import site; print(site.getusersitepackages())"], env).stdout.strip()
    assert user_site.startswith(str(tmp_path))
    cycle(Path(sys.executable), Path(user_site) / "mmcv" / "ops" / "nms.py", "--python", base, env=env)


def test_python_option_patches_a_python_37_venv(tmp_path: Path) -> None:
    python37 = releases.pyenv_python("3.7")
    venv = tmp_path / "venv37"
    releases.run([python37, "-m", "venv", venv])
    releases.run(
        [venv / "bin" / "python", "-m", "pip", "install", "-q", "--no-deps", "--no-index", releases.wheel(MMCV)]
    )
    nms = venv / "lib" / "python3.7" / "site-packages" / "mmcv" / "ops" / "nms.py"
    cycle(Path(sys.executable), nms, "--python", str(venv / "bin" / "python"))


def test_two_distributions_claiming_one_tree_are_reported(tmp_path: Path) -> None:
    python = releases.make_venv(tmp_path / "venv")
    releases.pip_install(python, "--no-index", releases.wheel(MMCV))
    releases.pip_install(python, "--no-index", releases.wheel(LITE))  # overwrites mmcv/
    nms = releases.site_packages(python) / "mmcv" / "ops" / "nms.py"
    status = cycle(python, nms, distribution="mmcv-lite", version="2.2.0", release=LITE)
    [note] = status["targets"][0]["notes"]
    assert "several distributions claim" in note and "mmcv 1.7.2" in note and "mmcv-lite 2.2.0" in note
    assert "gating by mmcv-lite 2.2.0" in note


def test_a_copy_shadowing_the_installed_one_is_reported_and_status_all_shows_both(tmp_path: Path) -> None:
    python = releases.make_venv(tmp_path / "venv")
    releases.pip_install(python, "--no-index", releases.wheel(MMCV))
    newer = next(r for r in releases.CHECKOUTS if r.id == "mmcv-2.0.0")
    unpacked = releases.unpack(newer, tmp_path / "sdist")
    shadow = tmp_path / "shadow"
    shutil.copytree(unpacked / "mmcv", shadow / "mmcv")  # the package alone, no metadata
    env = {"PYTHONPATH": str(shadow)}

    status = cycle(
        python, shadow / "mmcv" / "ops" / "nms.py", env=env, distribution=None, version="2.0.0", release=newer
    )
    [note] = status["targets"][0]["notes"]
    assert "mmcv 1.7.2 is installed, but its metadata" in note and str(shadow / "mmcv") in note

    done = tool("status", "--all", "--json", env=env, python=python)
    assert done.returncode == 0, done.stderr
    copies = [copy for copy in json.loads(done.stdout)["copies"] if copy["package"] == "mmcv"]
    assert [
        (c["imported"], c["target"]["package_dir"], c["target"]["distribution"], c["target"]["version"]) for c in copies
    ] == [
        (True, str(shadow / "mmcv"), None, "2.0.0"),
        (False, str(releases.site_packages(python) / "mmcv"), "mmcv", "1.7.2"),
    ]
    assert [c["patches"][0]["state"] for c in copies] == ["unpatched", "unpatched"]
    assert tool("status", "--all", "--check", env=env, python=python).returncode == 3
    text = tool("status", "--all", env=env, python=python).stdout
    assert "also has on sys.path (not imported)" in text


def test_target_directory_upgraded_in_place_gates_by_the_new_release(tmp_path: Path) -> None:
    # `pip install --target DIR --upgrade` replaces mmcv/ but leaves the old *.dist-info.
    old = next(r for r in releases.INSTALLED if r.id == "mmcv-1.3.3")
    target = tmp_path / "target"
    for release, upgrade in ((old, []), (MMCV, ["--upgrade"])):
        releases.run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "-q",
                "--no-deps",
                "--no-index",
                *upgrade,
                "--target",
                target,
                releases.wheel(release),
            ]
        )
    assert sorted(p.name for p in target.glob("mmcv-*.dist-info")) == ["mmcv-1.3.3.dist-info", "mmcv-1.7.2.dist-info"]
    python = releases.make_venv(tmp_path / "venv")
    status = cycle(python, target / "mmcv" / "ops" / "nms.py", env={"PYTHONPATH": str(target)})
    [note] = status["targets"][0]["notes"]
    assert (
        "mmcv/ops/nms.py there is the one mmcv 1.7.2 installed, so gating by mmcv 1.7.2 (mmcv 1.3.3: left-over metadata?)"
        in note
    )
