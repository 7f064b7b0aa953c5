"""Hostile and odd inputs through the CLI: each gets a clear verdict and loses nothing.

Whatever the tool accepts, apply then revert gives back the exact original bytes; whatever
it refuses, it refuses with one line naming the file, and exit 1, leaving the file as it was.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from tests.fixtures import ANCHOR, ANCHOR_IN_NMS_TOO, NMS, make_tree, nms_with, refused, snapshot, synthetic_files, tool


@pytest.mark.parametrize(
    "data",
    [
        NMS.replace("\n", "\r\n").encode(),
        b"\xef\xbb\xbf" + NMS.encode(),
        NMS.replace("    ", "\t").encode(),
        ("# -*- coding: latin-1 -*-\n# caf\xe9 cr\xe8me\n" + NMS).encode("latin-1"),
    ],
    ids=["crlf", "bom", "tabs", "latin-1-cookie"],
)
def test_accepted_encodings_round_trip_on_disk(tmp_path: Path, data: bytes) -> None:
    nms = make_tree(tmp_path, distribution="mmcv")
    nms.write_bytes(data)
    assert tool("apply", "--path", str(tmp_path)).returncode == 0
    patched = nms.read_bytes()
    assert patched != data and patched.count(b".to(scores_after_nms.dtype)") == 1
    compile(patched, str(nms), "exec")
    assert tool("revert", "--path", str(tmp_path)).returncode == 0
    assert nms.read_bytes() == data


@pytest.mark.parametrize(
    "text, reason",
    [
        (NMS.replace("def nms(", "def nms(:"), "cannot parse"),
        (nms_with(f"{ANCHOR}\n            {ANCHOR}"), "2 times"),
        (ANCHOR_IN_NMS_TOO.replace(f"            {ANCHOR}\n", "            pass\n"), "is not in batched_nms()"),
        ("", "no definition of batched_nms()"),
    ],
    ids=["syntax-error", "anchor-twice", "anchor-in-another-function", "empty-file"],
)
def test_refused_sources_are_left_byte_for_byte(tmp_path: Path, text: str, reason: str) -> None:
    nms = make_tree(tmp_path, distribution="mmcv")
    nms.write_text(text)  # edited after the install, so its hash no longer matches RECORD
    before = snapshot(tmp_path)
    for command in ("apply", "revert", "status"):
        done = tool(command, "--path", str(tmp_path))
        if command == "revert" and done.returncode == 0:
            continue  # nothing of ours to revert
        assert reason in refused(done, file=nms)
    assert snapshot(tmp_path) == before


def test_a_50_mb_file_is_refused_fast(tmp_path: Path) -> None:
    nms = make_tree(tmp_path, distribution="mmcv")
    nms.write_bytes(NMS.encode() + b"# padding\n" * 5_000_000)
    started = time.monotonic()
    line = refused(tool("apply", "--path", str(tmp_path)), file=nms)
    assert "MB" in line and time.monotonic() - started < 20
    assert nms.stat().st_size == len(NMS) + 50_000_000


def test_a_directory_where_the_file_should_be(tmp_path: Path) -> None:
    nms = make_tree(tmp_path, distribution="mmcv")
    nms.unlink()
    nms.mkdir()
    assert "it is a directory, not a regular file" in refused(tool("apply", "--path", str(tmp_path)), file=nms)
    assert nms.is_dir()


def test_symlink_inside_the_package_is_written_through(tmp_path: Path, patched_nms: bytes) -> None:
    nms = make_tree(tmp_path, distribution="mmcv")
    real = nms.with_name("nms_impl.py")
    nms.rename(real)
    nms.symlink_to("nms_impl.py")
    assert tool("apply", "--path", str(tmp_path)).returncode == 0
    assert nms.is_symlink() and os.readlink(nms) == "nms_impl.py"
    assert real.read_bytes() == patched_nms
    assert tool("revert", "--path", str(tmp_path)).returncode == 0
    assert real.read_text() == NMS and nms.is_symlink()


def test_symlink_leaving_the_package_is_refused_unless_forced(tmp_path: Path, patched_nms: bytes) -> None:
    nms = make_tree(tmp_path / "site", distribution="mmcv")
    outside = tmp_path / "elsewhere" / "nms.py"
    outside.parent.mkdir()
    outside.write_text(NMS)
    nms.unlink()
    nms.symlink_to(outside)
    line = refused(tool("apply", "--path", str(tmp_path / "site")), file=nms)
    assert f"resolves to {outside}, outside the mmcv package" in line and "--force" in line
    assert outside.read_text() == NMS
    assert tool("apply", "--force", "--path", str(tmp_path / "site")).returncode == 0
    assert outside.read_bytes() == patched_nms and nms.is_symlink()


def test_version_py_that_runs_code_is_never_executed(tmp_path: Path) -> None:
    make_tree(tmp_path, version=None)
    witness = tmp_path / "ran"
    (tmp_path / "mmcv" / "version.py").write_text(f"__version__ = '2.1.0'\nopen({str(witness)!r}, 'w').write('pwned')\n")
    for command in ("status", "apply", "revert"):
        assert tool(command, "--path", str(tmp_path)).returncode == 0
    assert not witness.exists()


def test_an_mmcv_directory_that_is_not_a_package(tmp_path: Path) -> None:
    make_tree(tmp_path, distribution="mmcv")
    (tmp_path / "mmcv" / "__init__.py").unlink()
    done = tool("apply", "--path", str(tmp_path))
    assert done.returncode == 2 and "is not a package (no __init__.py)" in done.stderr


def test_metadata_with_an_invalid_version_is_unverified(tmp_path: Path) -> None:
    make_tree(tmp_path, distribution="mmcv")
    metadata = next(tmp_path.glob("*.dist-info")) / "METADATA"
    metadata.write_text(metadata.read_text().replace("Version: 2.1.0", "Version: two point one"))
    status = json.loads(tool("status", "--json", "--path", str(tmp_path)).stdout)
    assert status["target"]["version"] == "two point one" and status["patches"][0]["state"] == "unverified"
    assert tool("apply", "--path", str(tmp_path)).returncode == 1
    assert tool("apply", "--force", "--path", str(tmp_path)).returncode == 0


@pytest.mark.parametrize("digest", ["sha256=a", "sha256=é", "sha256=AAAA", "sha256="])
def test_a_malformed_record_hash_counts_as_no_hash(tmp_path: Path, digest: str) -> None:
    nms = make_tree(tmp_path, distribution="mmcv")
    record = next(tmp_path.glob("*.dist-info")) / "RECORD"
    record.write_text("".join(line.split(",")[0] + f",{digest},1\n" for line in record.read_text().splitlines()))
    status = tool("status", "--path", str(tmp_path))
    assert status.returncode == 0 and "unpatched" in status.stdout, status.stderr
    assert tool("apply", "--path", str(tmp_path)).returncode == 0 and tool("revert", "--path", str(tmp_path)).returncode == 0
    assert nms.read_text() == NMS


def test_apply_writes_only_the_files_it_patches_and_their_bytecode(tmp_path: Path) -> None:
    nms = make_tree(tmp_path, distribution="mmcv")
    os.chmod(nms, 0o640)
    import py_compile

    pyc = Path(py_compile.compile(str(nms), doraise=True))
    before = snapshot(tmp_path)
    assert tool("apply", "--path", str(tmp_path)).returncode == 0
    after = snapshot(tmp_path)
    patched = [str(tmp_path / "mmcv" / file) for file in synthetic_files()]
    assert sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k)) == sorted(patched + [str(pyc)])
    assert oct(nms.stat().st_mode & 0o777) == oct(0o640)


def test_dot_dot_in_path_writes_only_inside_the_package_it_names(tmp_path: Path) -> None:
    nms = make_tree(tmp_path / "site", distribution="mmcv")
    neighbour = tmp_path / "neighbour.py"
    neighbour.write_text("x = 1\n")
    before = snapshot(tmp_path)
    dotted = tmp_path / "site" / "mmcv" / "ops" / ".." / "ops" / "nms.py"
    assert tool("apply", "--path", str(dotted)).returncode == 0
    after = snapshot(tmp_path)
    assert [k for k in after if before.get(k) != after[k]] == [str(nms)]
    assert tool("revert", "--path", str(dotted)).returncode == 0 and snapshot(tmp_path) == before
