"""Hostile conditions, round 2: the promises around the file-safety core.

Bytecode is never of the wrong code or in the wrong place, verdicts come from the metadata
that installed the files, the exit code always matches the files on disk, every outcome is
one JSON object with ``--json``, nothing waits or reads without a bound, and no traceback
ever reaches the user. Real files, real processes; real users where permissions matter
(``tests/test_readonly.py``).
"""

from __future__ import annotations

import importlib.util
import json
import marshal
import os
import py_compile
import re
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, Tuple

import pytest

from mmcv_patcher import cli, interpreter, locate
from mmcv_patcher.source import MAX_SOURCE_BYTES
from tests.fixtures import NMS, compiled, dist_info, make_tree, refused, snapshot, tool

#: NMS with a docstring and an assert: what -O and -OO strip from bytecode.
DOCUMENTED = NMS.replace(
    "max_num=-1):\n", 'max_num=-1):\n    """Keeps the best boxes."""\n    assert boxes is not None\n'
)


def _code_of(pyc: Path) -> Any:
    return marshal.loads(pyc.read_bytes()[16:])


# --- 1. the tool's own optimization level never leaks into bytecode ----------------------------


@pytest.mark.parametrize(
    "flags, env",
    [(("-O",), {}), (("-OO",), {}), ((), {"PYTHONOPTIMIZE": "2"})],
    ids=["-O", "-OO", "PYTHONOPTIMIZE"],
)
def test_bytecode_is_compiled_at_its_own_level_whatever_the_tools_flags(
    tmp_path: Path, flags: Tuple[Any, ...], env: Dict[str, str]
) -> None:
    nms = make_tree(tmp_path, DOCUMENTED, distribution="mmcv")
    pycs = {level: compiled(str(nms), optimize=level) for level in (0, 1, 2)}
    done = tool("apply", "--path", str(tmp_path), flags=flags, env=env)
    assert done.returncode == 0, done.stderr
    for level, pyc in pycs.items():
        reference = tmp_path / f"reference-{level}.pyc"
        py_compile.compile(str(nms), cfile=str(reference), optimize=level, doraise=True)
        assert pyc.read_bytes() == reference.read_bytes(), f"opt level {level}"
    constants = [c for code in _code_of(pycs[0]).co_consts if hasattr(code, "co_consts") for c in code.co_consts]
    assert "Keeps the best boxes." in constants, "the optimize-0 bytecode keeps docstrings"


# --- 2. bytecode outside __pycache__ -----------------------------------------------------------


def _unchecked_under_prefix(nms: Path, prefix: Path) -> Path:
    """An unchecked-hash .pyc of ``nms`` where an interpreter with that prefix keeps it."""
    program = f"import py_compile; print(py_compile.compile({str(nms)!r}, invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH, doraise=True))"
    out = subprocess.run(
        [sys.executable, "-c", program],
        env=dict(os.environ, PYTHONPYCACHEPREFIX=str(prefix)),
        stdout=subprocess.PIPE,
        universal_newlines=True,
        check=True,
    )
    pyc = Path(out.stdout.strip())
    assert pyc.is_relative_to(prefix) if hasattr(pyc, "is_relative_to") else str(pyc).startswith(str(prefix))
    return pyc


def _runs_patched(nms: Path, prefix: Path, patched: bytes) -> bool:
    """Whether an interpreter with this pycache prefix runs the patched source: the bytecode
    it would load is gone (it compiles the source) or is of the patched source."""
    program = f"import importlib.util; print(importlib.util.cache_from_source({str(nms)!r}))"
    env = dict(os.environ, PYTHONPYCACHEPREFIX=str(prefix))
    pyc = Path(
        subprocess.run(
            [sys.executable, "-c", program], env=env, stdout=subprocess.PIPE, universal_newlines=True, check=True
        ).stdout.strip()
    )
    assert str(pyc).startswith(str(prefix))
    return nms.read_bytes() == patched and (
        not pyc.exists() or pyc.read_bytes()[8:16] == importlib.util.source_hash(patched)
    )


def test_bytecode_under_the_tools_pycache_prefix_is_rebuilt(tmp_path: Path, patched_nms: bytes) -> None:
    nms = make_tree(tmp_path / "site", distribution="mmcv")
    prefix = tmp_path / "prefix"
    pyc = _unchecked_under_prefix(nms, prefix)
    done = tool("apply", "--path", str(tmp_path / "site"), env={"PYTHONPYCACHEPREFIX": str(prefix)})
    assert done.returncode == 0, done.stderr
    assert nms.read_bytes() == patched_nms
    assert pyc.read_bytes()[8:16] == importlib.util.source_hash(patched_nms), "the prefix entry is of the new source"
    assert _runs_patched(nms, prefix, patched_nms)


def test_bytecode_under_the_pycache_prefix_of_another_python_is_dropped(tmp_path: Path, patched_nms: bytes) -> None:
    site = tmp_path / "site"
    nms = make_tree(site, distribution="mmcv")
    prefix = tmp_path / "prefix"
    pyc = _unchecked_under_prefix(nms, prefix)
    other = tmp_path / "python-with-prefix"
    other.write_text(f'#!/bin/sh\nPYTHONPYCACHEPREFIX={prefix} PYTHONPATH={site} exec {sys.executable} "$@"\n')
    other.chmod(0o755)
    done = tool("apply", "--python", str(other), env={"PYTHONPYCACHEPREFIX": ""})
    assert done.returncode == 0, done.stderr
    assert nms.read_bytes() == patched_nms
    assert not pyc.exists() or pyc.read_bytes()[8:16] == importlib.util.source_hash(patched_nms)
    assert _runs_patched(nms, prefix, patched_nms)


# --- 4, 6. verdicts from the metadata that installed the files ------------------------------------


@pytest.mark.parametrize("edited", [False, True], ids=["as-installed", "nms-edited-since"])
def test_left_over_metadata_of_an_older_release_never_gates(tmp_path: Path, edited: bool) -> None:
    # What `pip install --target DIR --upgrade` leaves: the old release's dist-info beside the new.
    nms = make_tree(tmp_path, version="2.1.0", distribution="mmcv")
    older = {
        "mmcv/__init__.py": None,
        "mmcv/ops/nms.py": b"def batched_nms():\n    pass\n",
        "mmcv/version.py": b"__version__ = '1.3.3'\n",
    }
    dist_info(tmp_path, "mmcv", "1.3.3", older)  # older than the bug
    if edited:
        nms.write_text(NMS.replace("import torch\n", "import torch  # edited\n"))
    document = json.loads(tool("status", "--json", "--path", str(tmp_path)).stdout)
    assert (document["targets"][0]["distribution"], document["targets"][0]["version"]) == ("mmcv", "2.1.0")
    assert document["patches"][0]["state"] == "unpatched"
    [note] = document["targets"][0]["notes"]
    assert "gating by mmcv 2.1.0 (mmcv 1.3.3: left-over metadata?)" in note
    # the first file RECORD vouches for: nms.py, or another (the older metadata lists only nms.py)
    chosen = re.search(r"(mmcv/\S+) there is the one mmcv 2\.1\.0 installed", note)
    assert chosen is not None and (chosen.group(1) == "mmcv/ops/nms.py") is not edited


def test_a_path_through_dot_dot_keeps_its_metadata(tmp_path: Path) -> None:
    make_tree(tmp_path / "site", distribution="mmcv")
    dotted = tmp_path / "site" / "mmcv" / "ops" / ".." / "ops" / "nms.py"
    document = json.loads(tool("status", "--json", "--path", str(dotted)).stdout)
    assert (
        document["targets"][0]["package_dir"],
        document["targets"][0]["distribution"],
        document["targets"][0]["version"],
    ) == (
        str(tmp_path / "site" / "mmcv"),
        "mmcv",
        "2.1.0",
    )


# --- 7. output never changes the outcome ------------------------------------------------------


def test_stdout_that_cannot_be_written_does_not_change_the_exit_code(tmp_path: Path, patched_nms: bytes) -> None:
    nms = make_tree(tmp_path, distribution="mmcv")
    with open("/dev/full", "w") as full:
        done = tool("apply", "--path", str(tmp_path), stdout=full)
    assert (done.returncode, done.stderr) == (0, "") and nms.read_bytes() == patched_nms
    closed = subprocess.run(
        f"{sys.executable} -m mmcv_patcher revert --path {tmp_path} >&- 2>&-; echo $?",
        shell=True,
        stdout=subprocess.PIPE,
        universal_newlines=True,
    )
    assert closed.stdout.strip() == "0" and nms.read_text() == NMS


def test_a_path_the_locale_cannot_show_is_escaped_not_fatal(tmp_path: Path, patched_nms: bytes) -> None:
    root = tmp_path / "café-训练"
    nms = make_tree(root, distribution="mmcv")
    done = tool("apply", "--path", str(root), env={"PYTHONIOENCODING": "ascii", "LC_ALL": "C"})
    assert done.returncode == 0, done.stderr
    assert "caf\\xe9-\\u8bad\\u7ec3" in done.stdout and nms.read_bytes() == patched_nms


# --- 8, 9. one JSON object, one line, never a traceback --------------------------------------------


def test_an_unexpected_error_is_one_line_and_one_json_object(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    make_tree(tmp_path, distribution="mmcv")

    def broken(*args: object) -> None:
        raise RuntimeError("something no one foresaw")

    monkeypatch.setattr(locate, "locate", broken)
    assert cli.main(["status", "--json", "--path", str(tmp_path)]) == 1
    out, err = capsys.readouterr()
    message = "internal error: RuntimeError: something no one foresaw; please report it with --json output"
    assert json.loads(out)["error"] == message
    assert err == "", "with --json, stdout alone says it"
    assert cli.main(["status", "--path", str(tmp_path)]) == 1
    assert capsys.readouterr() == ("", f"mmcv-patcher: error: {message}\n")


@pytest.mark.parametrize(
    "answer",
    ['{"sys_path": 5}', "[1, 2]", "not json", '{"executable": "x", "sys_path": ["a"], "mmcv_dir": 7}'],
)
def test_a_python_that_answers_nonsense_gets_one_line(tmp_path: Path, answer: str) -> None:
    fake = tmp_path / "fakepython"
    fake.write_text(f"#!/bin/sh\necho '{answer}'\n")
    fake.chmod(0o755)
    for args in (["status", "--python", str(fake)], ["apply", "--json", "--python", str(fake)]):
        done = tool(*args)
        assert done.returncode == 2 and "Traceback" not in done.stderr
        if "--json" in args:  # said once, on stdout
            assert done.stderr == ""
            line = json.loads(done.stdout)["error"]
        else:
            [line] = done.stderr.splitlines()
            line = line[len("mmcv-patcher: error: ") :]
        assert line.startswith(f"--python {fake}: ") and line.endswith("it must be CPython 3.6 or newer")


def test_mmcv_imported_from_a_zip_is_refused_in_one_line(tmp_path: Path) -> None:
    import zipfile

    make_tree(tmp_path / "tree", distribution="mmcv")
    archive = tmp_path / "mmcv.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        for path in (tmp_path / "tree" / "mmcv").rglob("*.py"):
            zipped.write(path, path.relative_to(tmp_path / "tree").as_posix())
    done = tool("apply", env={"PYTHONPATH": str(archive)}, cwd=tmp_path)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    [line] = done.stderr.splitlines()
    assert f"mmcv is imported from {archive}/mmcv, inside an archive, which cannot be patched in place" in line


def test_a_python_found_on_path_by_name(tmp_path: Path) -> None:
    make_tree(tmp_path / "site", distribution="mmcv")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "trainpython").symlink_to(sys.executable)
    env = {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "PYTHONPATH": str(tmp_path / "site")}
    document = json.loads(tool("status", "--json", "--python", "trainpython", env=env).stdout)
    assert document["targets"][0]["package_dir"] == str(tmp_path / "site" / "mmcv")
    missing = tool("status", "--python", "no-such-python-anywhere")
    assert missing.returncode == 2 and missing.stderr.startswith(
        "mmcv-patcher: error: --python no-such-python-anywhere: not found on PATH"
    )


def test_a_python_that_hangs_is_cut_with_a_short_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hanging = tmp_path / "hangingpython"
    hanging.write_text("#!/bin/sh\nsleep 30\n")
    hanging.chmod(0o755)
    monkeypatch.setattr(interpreter, "ASK_TIMEOUT", 1)
    started = time.monotonic()
    with pytest.raises(interpreter.InterpreterError) as raised:
        interpreter.ask(str(hanging))
    assert time.monotonic() - started < 10
    assert str(raised.value) == f"--python {hanging}: it did not answer within 1 s"


# --- 10, 11. nothing read without a bound; what apply writes, revert can read --------------------------


@pytest.mark.parametrize("kind", ["fifo", "dev-zero", "socket"])
def test_a_non_regular_source_gets_a_verdict_at_once(tmp_path: Path, kind: str) -> None:
    nms = make_tree(tmp_path, distribution="mmcv")
    nms.unlink()
    if kind == "fifo":
        os.mkfifo(nms)
    elif kind == "dev-zero":
        nms.symlink_to("/dev/zero")
    else:
        server = socket.socket(socket.AF_UNIX)
        server.bind(str(nms))
    started = time.monotonic()
    for command in ("status", "apply"):
        line = refused(tool(command, "--path", str(tmp_path), timeout=30), file=nms)
        assert "not a regular file" in line
    assert time.monotonic() - started < 20
    assert stat.S_ISLNK(nms.lstat().st_mode) if kind == "dev-zero" else not stat.S_ISREG(nms.stat().st_mode)


@pytest.mark.parametrize("kind", ["fifo", "dev-zero"])
def test_a_version_py_that_is_not_a_sane_file_gives_no_version_at_once(tmp_path: Path, kind: str) -> None:
    make_tree(tmp_path)  # no metadata: the version comes from version.py
    version_py = tmp_path / "mmcv" / "version.py"
    version_py.unlink()
    if kind == "fifo":
        os.mkfifo(version_py)
    else:
        version_py.symlink_to("/dev/zero")
    done = tool("status", "--json", "--path", str(tmp_path), timeout=30)
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    assert document["targets"][0]["version"] is None and document["patches"][0]["state"] == "unverified"


@pytest.mark.parametrize("kind", ["fifo", "huge"])
def test_metadata_that_is_not_a_sane_file_is_skipped_with_a_note(tmp_path: Path, kind: str) -> None:
    make_tree(tmp_path, distribution="mmcv")
    metadata = next(tmp_path.glob("mmcv-*.dist-info")) / "METADATA"
    metadata.unlink()
    if kind == "fifo":
        os.mkfifo(metadata)
    else:
        with open(metadata, "wb") as handle:
            handle.truncate(2**30)  # 1 GB, sparse
    started = time.monotonic()
    done = tool("status", "--json", "--path", str(tmp_path), timeout=60)
    assert time.monotonic() - started < 20 and done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    assert document["targets"][0]["version"] == "2.1.0", "from version.py, the metadata being skipped"
    assert any(note.startswith(f"ignored the metadata {metadata}") for note in document["targets"][0]["notes"])


def test_apply_never_writes_what_revert_could_not_read(tmp_path: Path) -> None:
    nms = make_tree(tmp_path, distribution="mmcv")
    padding = MAX_SOURCE_BYTES - len(NMS.encode()) - 10
    nms.write_text(NMS + "#" * (padding - 1) + "\n")
    assert nms.stat().st_size == MAX_SOURCE_BYTES - 10
    before = nms.read_bytes()
    line = refused(tool("apply", "--path", str(tmp_path)), file=nms)
    assert "the patched file would be over 2 MB; nothing was written" in line
    assert nms.read_bytes() == before


# --- 13. a refused write keeps every bytecode entry ------------------------------------------------


def test_a_refused_write_leaves_every_bytecode_entry(tmp_path: Path) -> None:
    nms = make_tree(tmp_path, distribution="mmcv")
    ours = compiled(str(nms))
    (ours.parent / "nms.cpython-27.pyc").mkdir()  # an entry that cannot be removed
    foreign = ours.parent / "nms.cpython-39.pyc"
    foreign.write_bytes(b"another interpreter's")
    before = snapshot(tmp_path)
    done = tool("apply", "--path", str(tmp_path))
    assert done.returncode == 1
    assert (
        done.stderr
        == f"mmcv-patcher: error: cannot remove stale bytecode {ours.parent / 'nms.cpython-27.pyc'}: not a regular file; the source was left as it was\n"
    )
    assert snapshot(tmp_path) == before
