"""Read-only installs, as a real unprivileged user: one clear line, exit 1, file untouched.

Root may write anything, so these run the CLI as ``nobody`` (via runuser) from a venv made
in a world-readable directory out of the system Python (pyenv's lives under /root, which
other users cannot enter). They skip, with the reason, where that is impossible.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Iterator, Optional

import pytest

from scripts import releases
from tests.fixtures import NMS, make_tree

SYSTEM_PYTHON = "/usr/bin/python3"
MESSAGE = "read-only; re-run as the owner or use --python/--path on a writable copy"


@pytest.fixture(scope="module")
def shared() -> Iterator[Path]:
    """A world-readable directory with a venv (the tool installed) usable by ``nobody``."""
    if os.geteuid() != 0:
        pytest.skip("needs root to run a command as another user")
    if not (shutil.which("runuser") and Path(SYSTEM_PYTHON).exists()):
        pytest.skip(f"needs runuser and {SYSTEM_PYTHON}")
    directory = Path(tempfile.mkdtemp(prefix="mmcvp-shared-"))
    try:
        os.chmod(directory, 0o755)
        releases.run([SYSTEM_PYTHON, "-m", "venv", "--without-pip", directory / "venv"])
        releases.run(
            [
                sys.executable,
                "-m",
                "pip",
                "--python",
                directory / "venv" / "bin" / "python",
                "install",
                "-q",
                str(releases.REPOSITORY),
            ]
        )
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def as_nobody(shared: Path, *args: str, group: Optional[str] = None) -> subprocess.CompletedProcess[str]:
    """The CLI run as ``nobody``, with ``group`` as a supplementary group if given."""
    groups = ["-G", group] if group else []
    return subprocess.run(
        [
            "runuser",
            "-u",
            "nobody",
            *groups,
            "--",
            str(shared / "venv" / "bin" / "python"),
            "-m",
            "mmcv_patcher",
            *args,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        universal_newlines=True,
        cwd="/",
    )


def _tree(shared: Path, name: str, *, compiled: bool = False) -> Path:
    root = shared / name
    nms = make_tree(root, distribution="mmcv")
    if compiled:
        import py_compile

        py_compile.compile(str(nms), doraise=True)
    for path in [root, *root.rglob("*")]:
        os.chmod(path, 0o755 if path.is_dir() else 0o644)
    return nms


def test_root_owned_install_is_refused_for_another_user(shared: Path) -> None:
    nms = _tree(shared, "root-owned")
    root = nms.parents[2]
    assert as_nobody(shared, "status", "--check", "--path", str(root)).returncode == 3  # reading is fine
    listing = sorted(p.name for p in nms.parent.iterdir())
    done = as_nobody(shared, "apply", "--path", str(root))
    assert done.returncode == 1
    [line] = done.stderr.splitlines()
    assert line == f"mmcv-patcher: error: cannot write {nms}: {MESSAGE}"
    assert nms.read_text() == NMS and sorted(p.name for p in nms.parent.iterdir()) == listing, "no file left behind"
    failure = json.loads(as_nobody(shared, "apply", "--json", "--path", str(root)).stdout)["failure"]
    assert failure == {"kind": "read-only", "path": str(nms), "detail": "read-only"}, "a kind a script can tell apart"


def test_read_only_file_in_a_writable_directory_is_replaced_as_pip_would(shared: Path) -> None:
    """Replacing a file takes its directory, not the file: pip's reinstall does the same."""
    nms = _tree(shared, "read-only-file")
    root = nms.parents[2]
    for path in [root, *root.rglob("*")]:
        os.chown(path, 65534, 65534)
    os.chmod(nms, 0o444)
    done = as_nobody(shared, "apply", "--path", str(root))
    assert done.returncode == 0, done.stderr
    assert b"mmcv-patcher" in nms.read_bytes() and stat.S_IMODE(nms.stat().st_mode) == 0o444, "its mode is kept"


def test_a_file_hardlinked_from_another_users_cache_is_broken_out_and_the_cache_kept(shared: Path) -> None:
    """uv's and conda's default link mode: the installed file is the cache's inode, owned by
    the cache's user (root here); the environment's directory is the runner's own."""
    nms = _tree(shared, "hardlinked")
    root = nms.parents[2]
    cache = shared / "hardlink-cache" / "nms.py"
    cache.parent.mkdir()
    os.link(nms, cache)  # root's file, 0644, linked into nobody's environment
    for path in [root, *root.rglob("*")]:
        if path.is_dir():
            os.chown(path, 65534, 65534)
    done = as_nobody(shared, "apply", "--path", str(root))
    assert done.returncode == 0, done.stderr
    assert cache.read_text() == NMS and cache.stat().st_nlink == 1, "the cache's file is as it was, and alone"
    assert b"mmcv-patcher" in nms.read_bytes() and nms.stat().st_uid == 65534
    assert f"note: {nms}: could not keep its owner 0 (now 65534)" in done.stdout
    assert as_nobody(shared, "revert", "--path", str(root)).returncode == 0 and nms.read_text() == NMS


def test_a_file_of_another_user_in_a_sticky_directory_is_refused(shared: Path) -> None:
    nms = _tree(shared, "sticky")
    root = nms.parents[2]
    os.chmod(nms.parent, 0o1777)  # anyone may create there, only owners may replace
    done = as_nobody(shared, "apply", "--path", str(root))
    assert done.returncode == 1
    assert done.stderr.strip() == f"mmcv-patcher: error: cannot write {nms}: {MESSAGE}"
    assert nms.read_text() == NMS


def test_read_only_directory_is_refused(shared: Path) -> None:
    nms = _tree(shared, "read-only-dir")
    root = nms.parents[2]
    for path in [root, *root.rglob("*")]:
        os.chown(path, 65534, 65534)
    os.chmod(nms.parent, 0o555)
    done = as_nobody(shared, "apply", "--path", str(root))
    assert done.returncode == 1
    assert done.stderr.strip() == f"mmcv-patcher: error: cannot write {nms.parent}: {MESSAGE}"
    assert nms.read_text() == NMS


def test_compiled_root_owned_install_is_refused_before_its_bytecode_is_touched(shared: Path) -> None:
    nms = _tree(shared, "root-owned-compiled", compiled=True)
    [pyc] = (nms.parent / "__pycache__").glob("nms.*.pyc")
    before = pyc.read_bytes()
    done = as_nobody(shared, "apply", "--path", str(nms.parents[2]))
    assert done.returncode == 1
    assert done.stderr.strip() == f"mmcv-patcher: error: cannot write {nms}: {MESSAGE}"
    assert nms.read_text() == NMS and pyc.read_bytes() == before


def test_a_package_directory_others_may_only_enter_is_refused_in_one_line(shared: Path) -> None:
    nms = _tree(shared, "enter-only")
    package = nms.parents[1]
    os.chmod(package, 0o711)  # root's; nobody may pass through it but not list or lock it
    root = nms.parents[2]
    assert as_nobody(shared, "status", "--check", "--path", str(root)).returncode == 3  # reading is fine
    done = as_nobody(shared, "apply", "--path", str(root))
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.strip() == f"mmcv-patcher: error: cannot write {nms}: {MESSAGE}", "the file, never written"
    assert nms.read_text() == NMS


def test_a_group_member_keeps_the_group_and_mode_and_is_told_what_was_not_kept(shared: Path) -> None:
    """A group-writable install (owner 1234, group users) patched by a member of the group."""
    nms = _tree(shared, "group-writable")
    root = nms.parents[2]
    for path in [root, *root.rglob("*")]:
        os.chown(path, 1234, 100)
        os.chmod(path, 0o2775 if path.is_dir() else 0o664)
    done = as_nobody(shared, "apply", "--path", str(root), group="users")
    assert done.returncode == 0, done.stdout + done.stderr
    info = nms.stat()
    assert (info.st_uid, info.st_gid, oct(stat.S_IMODE(info.st_mode))) == (65534, 100, oct(0o664))
    assert (
        f"note: {nms}: could not keep its owner 1234 (now 65534); only root may give a file away"
        in done.stdout.splitlines()
    )
