"""Filesystems without ``flock`` (Lustre without ``-o flock``, NFSv3 without a lock daemon):
runs are kept apart by a lock file instead, and say so.

No such filesystem can be mounted here, so ``fcntl.flock`` is made to fail with the exact
errno each gives (``MMCVP_FLOCK_ERRNO``, :mod:`tests.faultinject`); the lock file and the
runs are real.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import platform
import subprocess
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional

import pytest

from mmcv_patcher import write
from tests.fixtures import INJECTOR, leftovers, make_tree, start, tool

pytestmark = pytest.mark.concurrency


def without_flock(errno_name: str = "ENOLCK") -> Dict[str, str]:
    """The environment of a run on a filesystem whose ``flock`` fails with ``errno_name``."""
    return {
        "PYTHONPATH": os.pathsep.join(filter(None, [str(INJECTOR), os.environ.get("PYTHONPATH")])),
        "MMCVP_FLOCK_ERRNO": errno_name,
    }


def lock_file(root: Path) -> Path:
    return root / "mmcv" / write.LOCK_FILE


@pytest.mark.parametrize("errno_name", ["ENOSYS", "ENOLCK", "EOPNOTSUPP"])
def test_apply_and_revert_work_and_say_how_they_locked(
    tmp_path: Path, errno_name: str, released_nms: bytes, patched_nms: bytes
) -> None:
    nms = make_tree(tmp_path, distribution="mmcv")
    for command, after in (("apply", patched_nms), ("revert", released_nms)):
        done = tool(command, "--path", str(tmp_path), env=without_flock(errno_name))
        assert done.returncode == 0, done.stderr
        assert nms.read_bytes() == after
        assert (
            f"note: {tmp_path / 'mmcv'}: its filesystem cannot flock ({errno.errorcode[getattr(errno, errno_name)]}),"
            " so other runs were kept out"
            f" with the lock file {write.LOCK_FILE} there, removed when done"
        ) in done.stdout
        assert not lock_file(tmp_path).exists() and leftovers(nms) == []


def test_concurrent_applies_without_flock_patch_exactly_once(tmp_path: Path, patched_nms: bytes) -> None:
    nms = make_tree(tmp_path, distribution="mmcv")
    runs = [start("apply", "--path", str(tmp_path), "--json", env=without_flock()) for _ in range(8)]
    documents: List[Dict[str, object]] = []
    for run in runs:
        out, err = run.communicate(timeout=120)
        assert run.returncode == 0, err
        documents.append(json.loads(out))
    changed = [patch["changed"] for document in documents for patch in document["patches"]]  # type: ignore[attr-defined]
    assert changed.count(True) == len(documents[0]["patches"])  # type: ignore[arg-type]
    assert nms.read_bytes() == patched_nms and not lock_file(tmp_path).exists()


def test_a_lock_file_a_killed_run_left_is_named_never_taken_over(tmp_path: Path, released_nms: bytes) -> None:
    nms = make_tree(tmp_path, distribution="mmcv")
    dead = subprocess.Popen(["true"])
    dead.wait()
    lock_file(tmp_path).write_text(f"{dead.pid} {os.uname().nodename}\n")
    done = tool("apply", "--lock-timeout", "0.3", "--path", str(tmp_path), env=without_flock())
    assert done.returncode == 1 and nms.read_bytes() == released_nms and lock_file(tmp_path).exists()
    assert done.stderr.splitlines()[-1] == (
        f"mmcv-patcher: error: {tmp_path / 'mmcv'}: its lock file {write.LOCK_FILE} was held for over 0.3 s;"
        f" its process {dead.pid} is gone, so a killed run left it: remove it if no run is going;"
        " nothing was written (--lock-timeout waits longer)"
    )


def _fifo(path: Path) -> None:
    os.mkfifo(path)


def _fifo_behind_a_symlink(path: Path) -> None:
    os.mkfifo(path.with_name("elsewhere"))
    path.symlink_to(path.with_name("elsewhere"))


def _socket(path: Path) -> None:
    import socket

    with socket.socket(socket.AF_UNIX) as bound:
        bound.bind(str(path))


def _reused_pid(path: Path) -> None:
    path.write_text(f"{os.getpid()} {os.uname().nodename}\n")  # this test's process: alive, not a run of ours


#: what stands at the lock file's path -> how it is made, and what the timeout's message says of it
STANDING = {
    "a-fifo": (
        _fifo,
        "; it is not a file but a FIFO, which no run of mmcv-patcher makes: remove it if no run is going",
    ),
    "a-symlink-to-a-fifo": (
        _fifo_behind_a_symlink,
        "; it is not a file but a FIFO, which no run of mmcv-patcher makes: remove it if no run is going",
    ),
    "a-socket": (
        _socket,
        "; it is not a file but a socket, which no run of mmcv-patcher makes: remove it if no run is going",
    ),
    "a-directory": (
        lambda path: path.mkdir(),
        "; it is not a file but a directory, which no run of mmcv-patcher makes: remove it if no run is going",
    ),
    "empty": (
        lambda path: path.write_text(""),
        "; it is empty (a run killed as it made it, or not made by mmcv-patcher): remove it if no run is going",
    ),
    "another-hosts": (
        lambda path: path.write_text("4242 build-node-7\n"),
        "; it was made by process 4242 on another host, build-node-7: remove it if no run is going there",
    ),
    "a-reused-pid": (_reused_pid, None),
}


@pytest.mark.parametrize("make, said", STANDING.values(), ids=STANDING.keys())
def test_whatever_stands_at_the_lock_files_path_is_named_and_never_waited_on(
    tmp_path: Path, released_nms: bytes, make: Callable[[Path], None], said: Optional[str]
) -> None:
    nms = make_tree(tmp_path, distribution="mmcv")
    make(lock_file(tmp_path))
    done = tool("apply", "--lock-timeout", "0.3", "--path", str(tmp_path), env=without_flock(), timeout=30)
    assert done.returncode == 1 and nms.read_bytes() == released_nms
    expected = said or (
        f"; its process {os.getpid()} is not a run of mmcv-patcher (the id was reused), so a killed run left it:"
        " remove it if no run is going"
    )
    assert done.stderr.splitlines()[-1] == (
        f"mmcv-patcher: error: {tmp_path / 'mmcv'}: its lock file {write.LOCK_FILE} was held for over 0.3 s"
        f"{expected}; nothing was written (--lock-timeout waits longer)"
    )
    assert "waited" not in done.stdout


def test_ctrl_c_removes_the_lock_file(tmp_path: Path, released_nms: bytes) -> None:
    nms = make_tree(tmp_path, distribution="mmcv")
    env = dict(without_flock(), MMCVP_FAULT="1:interrupt-before")
    done = tool("apply", "--path", str(tmp_path), env=env)
    assert done.returncode == 130 and nms.read_bytes() == released_nms
    assert not lock_file(tmp_path).exists()


@pytest.mark.parametrize("step", [1, 4, 8], ids=["first-step", "a-middle-step", "a-later-step"])
def test_sigterm_stops_a_run_as_ctrl_c_does_and_removes_the_lock_file(
    tmp_path: Path, released_nms: bytes, step: int
) -> None:
    nms = make_tree(tmp_path, distribution="mmcv")
    done = tool("apply", "--path", str(tmp_path), env=dict(without_flock(), MMCVP_FAULT=f"{step}:terminate-before"))
    assert done.returncode == 143 and nms.read_bytes() == released_nms and not lock_file(tmp_path).exists()
    assert done.stderr.splitlines()[-1].startswith("mmcv-patcher: error: terminated (SIGTERM); every file is whole")
    assert tool("apply", "--lock-timeout", "0", "--path", str(tmp_path), env=without_flock()).returncode == 0


@contextlib.contextmanager
def read_only_mount(directory: Path) -> Iterator[None]:
    """``directory`` bind-mounted read-only onto itself (root only), as an NFS export mounted ro."""
    mounted = subprocess.run(["mount", "--bind", str(directory), str(directory)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot bind-mount here: {mounted.stderr.decode(errors='replace').strip()}")
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(directory)], check=True)
        yield
    finally:
        subprocess.run(["umount", str(directory)], check=True)


def test_no_lock_file_can_be_made_is_said_as_such(tmp_path: Path, released_nms: bytes) -> None:
    nms = make_tree(tmp_path / "site", distribution="mmcv")
    with read_only_mount(tmp_path / "site"):
        done = tool("apply", "--json", "--path", str(tmp_path / "site"), env=without_flock())
    assert done.returncode == 1 and nms.read_bytes() == released_nms
    assert json.loads(done.stdout)["failure"] == {
        "kind": "cannot-lock",
        "path": str(tmp_path / "site" / "mmcv"),
        "detail": f"its filesystem cannot flock, and the lock file {write.LOCK_FILE} cannot be created there:"
        " Read-only file system",
    }


def test_a_failing_flock_is_not_called_a_read_only_directory(tmp_path: Path, released_nms: bytes) -> None:
    nms = make_tree(tmp_path, distribution="mmcv")
    done = tool("apply", "--path", str(tmp_path), env=without_flock("EIO"))
    assert done.returncode == 1 and nms.read_bytes() == released_nms
    assert done.stderr.splitlines()[-1] == (
        f"mmcv-patcher: error: {tmp_path / 'mmcv'}: flock failed: Input/output error;"
        " nothing was written, since other runs could not be kept out"
    )


@pytest.mark.parametrize("json_output", [False, True], ids=["text", "json"])
def test_ctrl_c_while_the_tool_starts_is_one_line_and_exit_130(tmp_path: Path, json_output: bool) -> None:
    make_tree(tmp_path, distribution="mmcv")
    env = {"PYTHONPATH": str(INJECTOR), "MMCVP_SIGNAL_ON_IMPORT": "mmcv_patcher.report:SIGINT"}
    done = tool("status", *(["--json"] if json_output else []), "--path", str(tmp_path), env=env)
    assert done.returncode == 130 and "Traceback" not in done.stderr
    if json_output:
        assert done.stderr == "" and json.loads(done.stdout)["failure"]["kind"] == "interrupted"
    else:
        assert done.stderr.startswith("mmcv-patcher: error: interrupted (Ctrl-C)") and done.stderr.count("\n") == 1


def test_a_platform_without_fcntl_keeps_runs_apart_with_the_lock_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Windows has no fcntl: the lock file keeps runs apart there, as on a filesystem without flock."""
    monkeypatch.setattr(write, "fcntl", None)
    waited: List[Optional[int]] = []
    with write.locked(str(tmp_path), 1, waited.append) as how:
        assert how is not None and "this platform has no flock" in how
        assert (tmp_path / write.LOCK_FILE).read_text() == f"{os.getpid()} {platform.node()}\n"
        with pytest.raises(write.LockTimeout) as timed_out:
            with write.locked(str(tmp_path), 0.1, waited.append):
                pass
    assert f"its lock file {write.LOCK_FILE} was held for over 0.1 s" in str(timed_out.value)
    assert not (tmp_path / write.LOCK_FILE).exists() and waited == [None]
