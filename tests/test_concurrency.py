"""Concurrent runs on one install end consistent: flock on the package directory."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Dict, List

import pytest

from mmcv_patcher import write
from tests.fixtures import leftovers, make_tree, start, tool, with_fault

pytestmark = pytest.mark.concurrency


def run(root: Path, command: str) -> subprocess.Popen[str]:
    return start(command, "--path", str(root), "--json", cwd=root)


def finish(processes: List[subprocess.Popen[str]]) -> List[Dict[str, Any]]:
    documents = []
    for process in processes:
        out, err = process.communicate(timeout=120)
        assert process.returncode == 0, err
        documents.append(json.loads(out))
    return documents


def test_eight_concurrent_applies_patch_exactly_once(tmp_path: Path, patched_nms: bytes) -> None:
    nms = make_tree(tmp_path, distribution="mmcv")
    documents = finish([run(tmp_path, "apply") for _ in range(8)])
    assert sum(d["patches"][0]["changed"] for d in documents) == 1
    assert all(d["patches"][0]["state"] == "patched" for d in documents)
    assert nms.read_bytes() == patched_nms
    assert leftovers(nms) == [] and not (tmp_path / "mmcv" / ".lock").exists()


def test_concurrent_applies_and_reverts_end_whole(tmp_path: Path, released_nms: bytes, patched_nms: bytes) -> None:
    nms = make_tree(tmp_path, distribution="mmcv")
    documents = finish([run(tmp_path, command) for command in ["apply", "revert"] * 4])
    assert nms.read_bytes() in (released_nms, patched_nms)
    # Serialised: the changes alternate, so #applies that changed and #reverts that changed
    # differ by at most one, and the final bytes say which came last.
    applied = sum(d["patches"][0]["changed"] for d in documents if d["command"] == "apply")
    reverted = sum(d["patches"][0]["changed"] for d in documents if d["command"] == "revert")
    assert applied - reverted == (1 if nms.read_bytes() == patched_nms else 0)
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
    waiting = start("apply", "--path", str(tmp_path))
    assert waiting.stderr is not None
    first = waiting.stderr.readline()  # printed while the lock is still held
    release.set()
    out, _ = waiting.communicate(timeout=60)
    holder.join()
    # the holder is this test process, not a run of the tool: it is not named as one
    assert (
        first
        == f"mmcv-patcher: another process holds the lock on {tmp_path / 'mmcv'}; waiting for it, at most 60 s (--lock-timeout)\n"
    )
    assert waiting.returncode == 0
    assert "note: waited for another process to release this package's lock" in out


def test_a_run_gives_up_after_lock_timeout_and_writes_nothing(tmp_path: Path, released_nms: bytes) -> None:
    nms = make_tree(tmp_path, distribution="mmcv")
    release, holder = _held(tmp_path / "mmcv")
    try:
        done = tool("apply", "--lock-timeout", "0.5", "--path", str(tmp_path))
    finally:
        release.set()
        holder.join()
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.splitlines()[-1] == (
        f"mmcv-patcher: error: {tmp_path / 'mmcv'}: its lock was held by another process for over 0.5 s; nothing was written (--lock-timeout waits longer)"
    )
    assert "waited" not in done.stdout, (
        "it gave up: the error says so, and no note says it waited for anything to finish"
    )
    assert nms.read_bytes() == released_nms


def test_a_run_that_may_not_wait_says_the_lock_was_held_without_a_time(tmp_path: Path) -> None:
    make_tree(tmp_path, distribution="mmcv")
    release, holder = _held(tmp_path / "mmcv")
    try:
        done = tool("apply", "--lock-timeout", "0", "--path", str(tmp_path))
    finally:
        release.set()
        holder.join()
    assert done.returncode == 1
    assert done.stderr.splitlines()[-1] == (
        f"mmcv-patcher: error: {tmp_path / 'mmcv'}: its lock was held by another process; nothing was written (--lock-timeout waits longer)"
    )


def test_a_run_that_gave_up_waiting_still_says_it_waited(tmp_path: Path) -> None:
    make_tree(tmp_path, distribution="mmcv")
    release, holder = _held(tmp_path / "mmcv")
    try:
        done = tool("apply", "--json", "--lock-timeout", "0.2", "--path", str(tmp_path))
    finally:
        release.set()
        holder.join()
    assert done.returncode == 1 and done.stderr == ""
    document = json.loads(done.stdout)
    assert document["waited"] is True
    assert document["failure"] == {
        "kind": "locked",
        "path": str(tmp_path / "mmcv"),
        "detail": "its lock was held by another process for over 0.2 s",
    }


@pytest.mark.parametrize("json_output", [False, True], ids=["text", "json"])
def test_ctrl_c_while_waiting_for_the_lock_says_so_in_one_line(
    tmp_path: Path, released_nms: bytes, json_output: bool
) -> None:
    nms = make_tree(tmp_path, distribution="mmcv")
    release, holder = _held(tmp_path / "mmcv")
    try:
        waiting = start("apply", "--path", str(tmp_path), *(["--json"] if json_output else []))
        assert waiting.stderr is not None
        said = "" if json_output else waiting.stderr.readline()  # text says at once that it waits
        _wait_opened(waiting.pid, tmp_path / "mmcv")  # JSON says nothing: it has opened what it locks
        waiting.send_signal(signal.SIGINT)
        out, err = waiting.communicate(timeout=60)
    finally:
        release.set()
        holder.join()
    assert waiting.returncode == 130 and nms.read_bytes() == released_nms
    if json_output:
        assert err == "" and json.loads(out)["failure"]["kind"] == "interrupted"
    else:
        assert said.startswith("mmcv-patcher: another process holds the lock")
        assert err == (
            "mmcv-patcher: error: interrupted (Ctrl-C); every file is whole, as it was or as this run finished it:"
            " `status` says which\n"
        )


def test_the_holder_is_named_when_it_is_a_run_of_the_tool(tmp_path: Path) -> None:
    """A real apply, stopped (SIGSTOP) inside its lock at its first write step."""
    make_tree(tmp_path, distribution="mmcv")
    holder = start("apply", "--path", str(tmp_path), env=with_fault("1:stop-before"), stdout=subprocess.DEVNULL)
    try:
        _wait_stopped(holder.pid)
        waiting = start("apply", "--path", str(tmp_path))
        assert waiting.stderr is not None
        first = waiting.stderr.readline()
    finally:
        os.kill(holder.pid, signal.SIGCONT)
        holder.wait(60)
    waiting.communicate(timeout=60)
    assert first.startswith(
        f"mmcv-patcher: another mmcv-patcher run (process {holder.pid}) is changing {tmp_path / 'mmcv'};"
    )


def _wait_stopped(pid: int) -> None:
    """Waits until process ``pid`` has stopped itself (state T in /proc)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with open(f"/proc/{pid}/stat") as handle:
            if handle.read().rsplit(")", 1)[1].split()[0] == "T":
                return
        time.sleep(0.05)
    raise AssertionError(f"process {pid} never stopped")


def _wait_opened(pid: int, directory: Path) -> None:
    """Waits until process ``pid`` holds ``directory`` open (to lock it)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with contextlib.suppress(FileNotFoundError):
            if any(os.readlink(fd) == str(directory) for fd in Path(f"/proc/{pid}/fd").iterdir()):
                return
        time.sleep(0.05)
    raise AssertionError(f"process {pid} never opened {directory}")
