"""The tool installed for real on the oldest and newest supported Pythons (pyenv).

mmdetection's Docker images run Python 3.7, where pip resolves libcst 1.0.1; 3.13 is the
newest. Each venv gets this repository installed
with pip (not editable) beside the real mmcv 1.7.2, then patches and reverts it.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from scripts import releases
from tests.fixtures import tool

pytestmark = [pytest.mark.interpreters, pytest.mark.release]

MMCV = next(r for r in releases.INSTALLED if r.id == "mmcv-1.7.2")


@pytest.mark.parametrize("version", ["3.7", "3.13"])
def test_apply_and_revert_on_another_python(version: str, tmp_path: Path) -> None:
    python = releases.pyenv_python(version)
    wheel = releases.wheel(MMCV)
    venv = tmp_path / "venv"
    releases.run([python, "-m", "venv", venv])
    venv_python = venv / "bin" / "python"
    releases.run([venv_python, "-m", "pip", "install", "-q", str(releases.REPOSITORY)])
    releases.run([venv_python, "-m", "pip", "install", "-q", "--no-deps", "--no-index", wheel])

    nms = releases.site_packages(venv_python) / "mmcv" / "ops" / "nms.py"
    original = releases.released_file(MMCV)
    assert nms.read_bytes() == original

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return tool(*args, python=venv_python, cwd=tmp_path)

    status = json.loads(cli("status", "--json").stdout)
    assert status["targets"][0]["distribution"] == "mmcv" and status["targets"][0]["version"] == "1.7.2"
    assert status["patches"][0]["state"] == "unpatched"
    assert cli("status", "--check").returncode == 3
    assert cli("apply").returncode == 0
    assert b".to(scores_after_nms.dtype)  # mmcv-patcher: batched-nms-amp-dtype" in nms.read_bytes()
    assert cli("status", "--check").returncode == 0
    # Run inside a checkout of this repository, whose mmcv_patcher/ then shadows the installed one.
    inside = tool("status", "--check", python=venv_python, cwd=releases.REPOSITORY)
    assert inside.returncode == 0, inside.stderr
    # the console script works too
    script = subprocess.run(
        [str(venv / "bin" / "mmcv-patcher"), "revert"], stdout=subprocess.PIPE, universal_newlines=True, cwd=tmp_path
    )
    assert script.returncode == 0, script.stdout
    assert nms.read_bytes() == original
