"""The package as it would be published: ``python -m build`` makes the sdist, then the wheel
from the sdist (not from the checkout), ``twine check --strict`` passes on both, and that
wheel installs and patches the real mmcv-lite 2.2.0."""

from __future__ import annotations

import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

import mmcv_patcher
from scripts import releases
from tests.fixtures import tool

pytestmark = pytest.mark.package


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    with releases.slow_step("building the sdist and the wheel from it", "1 minute") as log:
        releases.run([sys.executable, "-m", "build", "--outdir", out, releases.REPOSITORY], log=log)
    return out


def test_twine_check_strict_passes_on_both(dist: Path) -> None:
    built = sorted(p.name for p in dist.iterdir())
    version = mmcv_patcher.__version__
    assert built == [f"mmcv_patcher-{version}-py3-none-any.whl", f"mmcv_patcher-{version}.tar.gz"]
    done = releases.run([sys.executable, "-m", "twine", "check", "--strict", *sorted(dist.iterdir())])
    assert done.stdout.count("PASSED") == 2, done.stdout


def test_the_sdist_holds_the_patches_the_readme_and_the_license(dist: Path) -> None:
    [sdist] = dist.glob("*.tar.gz")
    with tarfile.open(sdist) as tarred:
        names = {name.split("/", 1)[1] for name in tarred.getnames() if "/" in name}
    patches = {
        path.relative_to(releases.REPOSITORY).as_posix() for path in (releases.REPOSITORY / "patches").glob("*.py")
    }
    assert {"README.md", "LICENSE", "setup.cfg", "pyproject.toml", "mmcv_patcher/cli.py", *patches} <= names


def test_the_wheel_carries_the_license_text(dist: Path) -> None:
    [wheel] = dist.glob("*.whl")
    with zipfile.ZipFile(wheel) as zipped:
        [license] = [name for name in zipped.namelist() if name.split("/")[-1] == "LICENSE"]
        text = zipped.read(license).decode()
    assert ".dist-info/" in license and text == (releases.REPOSITORY / "LICENSE").read_text()
    assert text.lstrip().startswith("Apache License\n") and "Version 2.0, January 2004" in text


def test_the_wheel_built_from_the_sdist_installs_and_patches(dist: Path, tmp_path: Path) -> None:
    [wheel] = dist.glob("*.whl")
    python = releases.make_venv(tmp_path / "venv", with_tool=False, with_pip=True)
    releases.run([python, "-m", "pip", "install", "-q", wheel])
    lite = next(r for r in releases.INSTALLED if r.id == "mmcv-lite-2.2.0")
    releases.pip_install(python, "--no-index", releases.wheel(lite))
    version = tool("--version", python=python, cwd=tmp_path)
    assert version.stdout.strip() == f"mmcv-patcher {mmcv_patcher.__version__}"
    assert tool("apply", python=python).returncode == 0
    nms = releases.site_packages(python) / "mmcv" / "ops" / "nms.py"
    assert b"# mmcv-patcher: batched-nms-amp-dtype" in nms.read_bytes()
    assert tool("status", "--check", python=python).returncode == 0
