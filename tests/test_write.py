"""The only code that writes: atomic, mode-keeping, leaves nothing behind, no stale bytecode."""

from __future__ import annotations

import os
import py_compile
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, List, Optional

import pytest

from mmcv_patcher import write
from tests.fixtures import compiled


def _module(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "pkg" / "nms.py"
    path.parent.mkdir(exist_ok=True)
    path.write_text(body)
    return path


def test_replace_file_writes_the_bytes_and_keeps_the_mode(tmp_path: Path) -> None:
    path = _module(tmp_path, "x = 1\n")
    os.chmod(path, 0o640)
    write.replace_file(str(path), b"x = 2\n")
    assert path.read_bytes() == b"x = 2\n"
    assert oct(path.stat().st_mode & 0o777) == oct(0o640)
    assert sorted(p.name for p in path.parent.iterdir()) == ["nms.py"]


def test_a_failing_replace_leaves_the_original_and_no_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _module(tmp_path, "x = 1\n")

    def refuse(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(OSError):
        write.replace_file(str(path), b"x = 2\n")
    assert path.read_bytes() == b"x = 1\n"
    assert sorted(p.name for p in path.parent.iterdir()) == ["nms.py"]


def _run(path: Path, *flags: str) -> str:
    """``nms.x`` as a fresh interpreter (with ``flags``) imports it from beside ``path``."""
    program = f"import sys; sys.path.insert(0, {str(path.parent)!r}); import nms; print(nms.x)"
    return subprocess.run(
        [sys.executable, *flags, "-c", program], stdout=subprocess.PIPE, universal_newlines=True, check=True
    ).stdout.strip()


@pytest.mark.parametrize("mode", list(py_compile.PycInvalidationMode), ids=lambda m: m.name)
def test_cached_bytecode_never_runs_the_old_code(tmp_path: Path, mode: py_compile.PycInvalidationMode) -> None:
    path = _module(tmp_path, "x = 'old'\n")
    pyc = compiled(str(path), invalidation_mode=mode)
    stat_before = path.stat()
    write.replace_file(str(path), b"x = 'new'\n")
    # Same size and mtime as before: a timestamp .pyc could not tell the difference either.
    os.utime(path, ns=(stat_before.st_atime_ns, stat_before.st_mtime_ns))
    write.rebuild_bytecode(str(path), write.drop_bytecode(str(path)))
    assert pyc.exists(), "the entry of this interpreter is recompiled, not dropped"
    expected_flags = {"TIMESTAMP": 0, "UNCHECKED_HASH": 0b01, "CHECKED_HASH": 0b11}[mode.name]
    assert write._flags(str(pyc)) == expected_flags
    assert not list(pyc.parent.glob("*" + write.TEMP_SUFFIX))
    assert _run(path) == "new"


def test_bytecode_of_other_interpreters_is_removed_and_none_is_created(tmp_path: Path) -> None:
    path = _module(tmp_path, "x = 'old'\n")
    cache = path.parent / "__pycache__"
    cache.mkdir()
    foreign = cache / "nms.cpython-27.opt-1.pyc"
    foreign.write_bytes(b"stale")
    unrelated = cache / "nms_rotated.cpython-311.pyc"
    unrelated.write_bytes(b"not ours")
    write.rebuild_bytecode(str(path), write.drop_bytecode(str(path)))
    assert sorted(p.name for p in cache.iterdir()) == ["nms_rotated.cpython-311.pyc"]


def test_optimized_bytecode_keeps_its_level(tmp_path: Path) -> None:
    path = _module(tmp_path, "x = 'old'\nassert False\n")
    pyc = compiled(str(path), optimize=1)
    assert ".opt-1." in pyc.name
    dropped = write.drop_bytecode(str(path))
    assert not pyc.exists(), "entries go before the source changes"
    path.write_text("x = 'new'\nassert False\n")
    write.rebuild_bytecode(str(path), dropped)
    assert _run(path, "-O") == "new"


def test_lock_tells_at_once_waits_and_leaves_no_file(tmp_path: Path) -> None:
    directory = tmp_path / "pkg"
    directory.mkdir()
    released = threading.Event()
    holder_ready = threading.Event()
    told: List[Any] = []

    def hold() -> None:
        with write.locked(str(directory), 5, told.append) as how:
            assert how is None, "flock: no note"
            holder_ready.set()
            released.wait(5)

    thread = threading.Thread(target=hold)
    thread.start()
    holder_ready.wait(5)

    def on_wait(pid: Optional[int]) -> None:
        told.append(pid)
        released.set()

    with write.locked(str(directory), 30, on_wait):
        assert released.is_set(), "it waited"
    thread.join()
    assert told == [None], "told at once; the holder (this test, not a run of the tool) is not named"
    assert list(directory.iterdir()) == []


def test_lock_gives_up_after_the_timeout(tmp_path: Path) -> None:
    directory = tmp_path / "pkg"
    directory.mkdir()
    with write.locked(str(directory), 5, lambda pid: None):
        holder = subprocess.run(
            [
                sys.executable,
                "-c",
                "import sys; from mmcv_patcher import write\nwith write.locked(sys.argv[1], 0.3, print): pass",
                str(directory),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            universal_newlines=True,
        )
    assert holder.stdout.strip() == "None"
    assert "LockTimeout" in holder.stderr and "held by another process for over 0.3 s" in holder.stderr


def test_our_pyc_is_byte_identical_to_what_python_writes(tmp_path: Path) -> None:
    path = _module(tmp_path, "x = 'new'\n")
    for mode in py_compile.PycInvalidationMode:
        for level in (0, 1, 2):
            reference = compiled(str(path), invalidation_mode=mode, optimize=level)
            flags = {"TIMESTAMP": 0, "UNCHECKED_HASH": 0b01, "CHECKED_HASH": 0b11}[mode.name]
            assert write._pyc_bytes(str(path), level, flags) == reference.read_bytes(), (mode, level)
            # The caller's compiled code is reused only where it is the same compilation.
            for name in (str(path), "elsewhere.py"):
                code = compile(path.read_bytes(), name, "exec", dont_inherit=True)
                assert write._pyc_bytes(str(path), level, flags, code) == reference.read_bytes(), (mode, level, name)


def test_replace_file_writes_the_callers_compiled_code_as_the_pyc(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _module(tmp_path, "x = 'old'\n")
    pyc = compiled(str(path))
    new = b"x = 'new'\n"
    code = compile(new, str(path), "exec", dont_inherit=True)
    compiles: List[Any] = []

    def counted(*args: Any, **kwargs: Any) -> Any:
        compiles.append(args)
        return compile(*args, **kwargs)

    monkeypatch.setattr(write, "compile", counted, raising=False)
    write.replace_file(str(path), new, code=code)
    assert compiles == [], "the caller's code object is reused, not compiled again"
    monkeypatch.undo()
    written = pyc.read_bytes()
    assert written == compiled(str(path)).read_bytes()
    assert _run(path) == "new"


def test_stale_temps_are_removed_and_nothing_else(tmp_path: Path) -> None:
    path = _module(tmp_path, "x = 1\n")
    (path.parent / "__pycache__").mkdir()
    stale = [
        path.parent / (".nms.py.abc" + write.TEMP_SUFFIX),
        path.parent / "__pycache__" / (".nms.cpython-311.pyc.x" + write.TEMP_SUFFIX),
    ]
    for leftover in stale:
        leftover.write_bytes(b"half")
    keep = path.parent / ".hidden-but-not-ours"
    keep.write_text("keep")
    assert sorted(write.remove_stale_temps(str(path.parent))) == sorted(map(str, stale))
    assert keep.exists() and path.exists() and not any(p.exists() for p in stale)


def test_read_only_file_is_refused_before_anything_is_created(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root may write anything; tests/test_readonly.py runs this as the unprivileged user nobody")
    path = _module(tmp_path, "x = 1\n")
    os.chmod(path.parent, 0o555)
    try:
        with pytest.raises(write.ReadOnly):
            write.replace_file(str(path), b"x = 2\n")
    finally:
        os.chmod(path.parent, 0o755)
    assert path.read_bytes() == b"x = 1\n"
