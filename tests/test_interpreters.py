"""The tool installed for real on the oldest and newest supported Pythons (pyenv).

mmdetection's Docker images run Python 3.7, where pip resolves libcst 1.0.1; 3.13 is the
newest. Each venv gets this repository installed
with pip (not editable) beside the real mmcv 1.7.2, then patches and reverts it.
"""

from __future__ import annotations

import glob
import json
import os
import subprocess
from pathlib import Path

import pytest

from tests import releases

pytestmark = [pytest.mark.interpreters, pytest.mark.release]

MMCV = next(r for r in releases.INSTALLED if r.id == "mmcv-1.7.2")


def _python(version: str) -> str:
    root = os.environ.get("PYENV_ROOT") or str(Path.home() / ".pyenv")
    found = sorted(glob.glob(f"{root}/versions/{version}.*/bin/python{version}"))
    if not found:
        if os.environ.get("CI"):
            pytest.fail(f"Python {version} is not installed under {root}; CI must prove it")
        pytest.skip(f"Python {version} is not installed under {root}")
    return found[-1]


@pytest.mark.parametrize("version", ["3.7", "3.13"])
def test_apply_and_revert_on_another_python(version: str, tmp_path: Path) -> None:
    python = _python(version)
    wheel = releases.wheel(MMCV)
    venv = tmp_path / "venv"
    releases.run([python, "-m", "venv", venv])
    venv_python = venv / "bin" / "python"
    releases.run([venv_python, "-m", "pip", "install", "-q", str(releases.REPOSITORY)])
    releases.run([venv_python, "-m", "pip", "install", "-q", "--no-deps", "--no-index", wheel])

    nms = releases.site_packages(venv_python) / "mmcv" / "ops" / "nms.py"
    original = releases.released_file(MMCV)
    assert nms.read_bytes() == original

    def tool(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(venv_python), "-m", "mmcv_patcher", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, cwd=tmp_path)

    status = json.loads(tool("status", "--json").stdout)
    assert status["target"]["distribution"] == "mmcv" and status["target"]["version"] == "1.7.2"
    assert status["patches"][0]["state"] == "unpatched"
    assert tool("status", "--check").returncode == 3
    assert tool("apply").returncode == 0
    assert b".to(scores_after_nms.dtype)  # mmcv-patcher: batched-nms-amp-dtype" in nms.read_bytes()
    assert tool("status", "--check").returncode == 0
    # Run inside a checkout of this repository, whose mmcv_patcher/ then shadows the installed one.
    inside = subprocess.run([str(venv_python), "-m", "mmcv_patcher", "status", "--check"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, cwd=str(releases.REPOSITORY))
    assert inside.returncode == 0, inside.stderr
    # the console script works too
    script = subprocess.run([str(venv / "bin" / "mmcv-patcher"), "revert"], stdout=subprocess.PIPE, universal_newlines=True, cwd=tmp_path)
    assert script.returncode == 0, script.stdout
    assert nms.read_bytes() == original
