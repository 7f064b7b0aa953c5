"""Concurrent runs on one install end consistent: flock on the package directory."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import List

import pytest

from mmcv_patcher import write
from tests.fixtures import make_tree
from tests.test_faults import INJECTOR, ORIGINAL, PATCHED, leftovers

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


def _held(directory: Path) -> "tuple[threading.Event, threading.Thread]":
    """A thread holding the run lock on ``directory`` until the returned event is set."""
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with write.locked(str(directory), 5, lambda pid: None):
            held.set()
            release.wait(60)

    holder = threading.Thread(target=hold)
    holder.start()
    held.wait(10)
    return release, holder


def test_a_run_that_must_wait_says_so_at_once_and_then_finishes(tmp_path: Path) -> None:
    make_tree(tmp_path, distribution="mmcv")
    release, holder = _held(tmp_path / "mmcv")
    waiting = subprocess.Popen(
        [sys.executable, "-m", "mmcv_patcher", "apply", "--path", str(tmp_path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True
    )
    assert waiting.stderr is not None
    first = waiting.stderr.readline()  # printed while the lock is still held
    release.set()
    out, _ = waiting.communicate(timeout=60)
    holder.join()
    # the holder is this test process, not a run of the tool: it is not named as one
    assert first == f"mmcv-patcher: another process holds the lock on {tmp_path / 'mmcv'}; waiting for it, at most 60 s (--lock-timeout)\n"
    assert waiting.returncode == 0
    assert "note: waited for another mmcv-patcher run on this package to finish" in out


def test_a_run_gives_up_after_lock_timeout_and_writes_nothing(tmp_path: Path) -> None:
    nms = make_tree(tmp_path, distribution="mmcv")
    release, holder = _held(tmp_path / "mmcv")
    try:
        done = subprocess.run(
            [sys.executable, "-m", "mmcv_patcher", "apply", "--lock-timeout", "0.5", "--path", str(tmp_path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            universal_newlines=True,
            timeout=60,
        )
    finally:
        release.set()
        holder.join()
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.splitlines()[-1] == (
        f"mmcv-patcher: error: {tmp_path / 'mmcv'}: its lock was held by another process for over 0.5 s; nothing was written (--lock-timeout waits longer)"
    )
    assert nms.read_bytes() == ORIGINAL


def test_a_run_that_gave_up_waiting_still_says_it_waited(tmp_path: Path) -> None:
    make_tree(tmp_path, distribution="mmcv")
    release, holder = _held(tmp_path / "mmcv")
    try:
        done = subprocess.run(
            [sys.executable, "-m", "mmcv_patcher", "apply", "--json", "--lock-timeout", "0.2", "--path", str(tmp_path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            universal_newlines=True,
            timeout=60,
        )
    finally:
        release.set()
        holder.join()
    assert done.returncode == 1 and done.stderr == ""
    assert json.loads(done.stdout)["waited"] is True


def test_the_holder_is_named_when_it_is_a_run_of_the_tool(tmp_path: Path) -> None:
    """A real apply, stopped (SIGSTOP) inside its lock at its first write step."""
    make_tree(tmp_path, distribution="mmcv")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(INJECTOR), os.environ.get("PYTHONPATH", "")]), MMCVP_FAULT="1:stop-before")
    holder = subprocess.Popen([sys.executable, "-m", "mmcv_patcher", "apply", "--path", str(tmp_path)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_stopped(holder.pid)
        waiting = subprocess.Popen(
            [sys.executable, "-m", "mmcv_patcher", "apply", "--path", str(tmp_path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True
        )
        assert waiting.stderr is not None
        first = waiting.stderr.readline()
    finally:
        os.kill(holder.pid, signal.SIGCONT)
        holder.wait(60)
    waiting.communicate(timeout=60)
    assert first.startswith(f"mmcv-patcher: another mmcv-patcher run (process {holder.pid}) is changing {tmp_path / 'mmcv'};")


def _wait_stopped(pid: int) -> None:
    """Waits until process ``pid`` has stopped itself (state T in /proc)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with open(f"/proc/{pid}/stat") as handle:
            if handle.read().rsplit(")", 1)[1].split()[0] == "T":
                return
        time.sleep(0.05)
    raise AssertionError(f"process {pid} never stopped")
