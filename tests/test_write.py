"""The only code that writes: atomic, mode-keeping, leaves nothing behind, no stale bytecode."""

from __future__ import annotations

import os
import py_compile
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from mmcv_patcher import write


def _module(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "pkg" / "nms.py"
    path.parent.mkdir(exist_ok=True)
    path.write_text(body)
    return path


def test_replace_file_writes_the_bytes_and_keeps_the_mode(tmp_path: Path) -> None:
    path = _module(tmp_path, "x = 1\n")
    os.chmod(path, 0o640)
    write.replace_file(path, b"x = 2\n")
    assert path.read_bytes() == b"x = 2\n"
    assert oct(path.stat().st_mode & 0o777) == oct(0o640)
    assert sorted(p.name for p in path.parent.iterdir()) == ["nms.py"]


def test_a_failing_replace_leaves_the_original_and_no_temp_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _module(tmp_path, "x = 1\n")

    def refuse(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(OSError):
        write.replace_file(path, b"x = 2\n")
    assert path.read_bytes() == b"x = 1\n"
    assert sorted(p.name for p in path.parent.iterdir()) == ["nms.py"]


def _run(path: Path) -> str:
    program = f"import sys; sys.path.insert(0, {str(path.parent)!r}); import nms; print(nms.x)"
    return subprocess.run([sys.executable, "-c", program], stdout=subprocess.PIPE, universal_newlines=True, check=True).stdout.strip()


@pytest.mark.parametrize("mode", list(py_compile.PycInvalidationMode), ids=lambda m: m.name)
def test_cached_bytecode_never_runs_the_old_code(tmp_path: Path, mode: py_compile.PycInvalidationMode) -> None:
    path = _module(tmp_path, "x = 'old'\n")
    pyc = Path(py_compile.compile(str(path), invalidation_mode=mode, doraise=True))
    stat_before = path.stat()
    write.replace_file(path, b"x = 'new'\n")
    # Same size and mtime as before: a timestamp .pyc could not tell the difference either.
    os.utime(path, ns=(stat_before.st_atime_ns, stat_before.st_mtime_ns))
    write.refresh_bytecode(path)
    assert pyc.exists(), "the entry of this interpreter is recompiled, not dropped"
    assert write._invalidation_mode(pyc) is mode
    assert _run(path) == "new"


def test_bytecode_of_other_interpreters_is_removed_and_none_is_created(tmp_path: Path) -> None:
    path = _module(tmp_path, "x = 'old'\n")
    cache = path.parent / "__pycache__"
    cache.mkdir()
    foreign = cache / "nms.cpython-27.opt-1.pyc"
    foreign.write_bytes(b"stale")
    unrelated = cache / "nms_rotated.cpython-311.pyc"
    unrelated.write_bytes(b"not ours")
    write.refresh_bytecode(path)
    assert sorted(p.name for p in cache.iterdir()) == ["nms_rotated.cpython-311.pyc"]


def test_optimized_bytecode_keeps_its_level(tmp_path: Path) -> None:
    path = _module(tmp_path, "x = 'old'\nassert False\n")
    pyc = Path(py_compile.compile(str(path), optimize=1, doraise=True))
    assert ".opt-1." in pyc.name
    path.write_text("x = 'new'\nassert False\n")
    write.refresh_bytecode(path)
    out = subprocess.run([sys.executable, "-O", "-c", f"import sys; sys.path.insert(0, {str(path.parent)!r}); import nms; print(nms.x)"], stdout=subprocess.PIPE, universal_newlines=True, check=True).stdout.strip()
    assert out == "new"


def test_lock_reports_waiting_and_leaves_no_file(tmp_path: Path) -> None:
    directory = tmp_path / "pkg"
    directory.mkdir()
    released = threading.Event()
    holder_ready = threading.Event()

    def hold() -> None:
        with write.locked(directory) as waited:
            assert not waited
            holder_ready.set()
            released.wait(5)

    thread = threading.Thread(target=hold)
    thread.start()
    holder_ready.wait(5)
    threading.Timer(0.2, released.set).start()
    started = time.monotonic()
    with write.locked(directory) as waited:
        assert waited and time.monotonic() - started > 0.1
    thread.join()
    assert list(directory.iterdir()) == []
