"""Concurrent runs on one install end consistent: flock on the package directory."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path
from typing import List

import pytest

from mmcv_patcher import write
from tests.fixtures import make_tree, wait_until_someone_blocks_on_flock
from tests.test_faults import ORIGINAL, PATCHED, leftovers

pytestmark = pytest.mark.concurrency


def start(root: Path, command: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "mmcv_patcher", command, "--path", str(root), "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        universal_newlines=True,
        cwd=str(root),
    )


def finish(processes: List[subprocess.Popen]) -> List[dict]:
    documents = []
    for process in processes:
        out, err = process.communicate(timeout=120)
        assert process.returncode == 0, err
        documents.append(json.loads(out))
    return documents


def test_eight_concurrent_applies_patch_exactly_once(tmp_path: Path) -> None:
    nms = make_tree(tmp_path, distribution="mmcv")
    documents = finish([start(tmp_path, "apply") for _ in range(8)])
    assert sum(d["patches"][0]["changed"] for d in documents) == 1
    assert all(d["patches"][0]["state"] == "patched" for d in documents)
    assert nms.read_bytes() == PATCHED
    assert leftovers(nms) == [] and not (tmp_path / "mmcv" / ".lock").exists()


def test_concurrent_applies_and_reverts_end_whole(tmp_path: Path) -> None:
    nms = make_tree(tmp_path, distribution="mmcv")
    documents = finish([start(tmp_path, command) for command in ["apply", "revert"] * 4])
    assert nms.read_bytes() in (ORIGINAL, PATCHED)
    # Serialised: the changes alternate, so #applies that changed and #reverts that changed
    # differ by at most one, and the final bytes say which came last.
    applied = sum(d["patches"][0]["changed"] for d in documents if d["command"] == "apply")
    reverted = sum(d["patches"][0]["changed"] for d in documents if d["command"] == "revert")
    assert applied - reverted == (1 if nms.read_bytes() == PATCHED else 0)
    assert leftovers(nms) == []


def test_a_run_that_waited_says_so(tmp_path: Path) -> None:
    make_tree(tmp_path, distribution="mmcv")
    held = threading.Event()
    release = threading.Event()

    def hold() -> None:
        with write.locked(str(tmp_path / "mmcv")):
            held.set()
            release.wait(30)

    holder = threading.Thread(target=hold)
    holder.start()
    held.wait(10)
    waiting = subprocess.Popen(
        [sys.executable, "-m", "mmcv_patcher", "apply", "--path", str(tmp_path)], stdout=subprocess.PIPE, universal_newlines=True
    )
    wait_until_someone_blocks_on_flock()
    release.set()
    out, _ = waiting.communicate(timeout=60)
    holder.join()
    assert waiting.returncode == 0
    assert "note: waited for another mmcv-patcher run on this package to finish" in out
