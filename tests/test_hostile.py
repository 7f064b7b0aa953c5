"""Hostile and odd inputs through the CLI: each gets a clear verdict and loses nothing.

Whatever the tool accepts, apply then revert gives back the exact original bytes; whatever
it refuses, it refuses with one line naming the file, and exit 1, leaving the file as it was.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import time
from pathlib import Path
from typing import Dict

import pytest

from tests.fixtures import (
    ANCHOR,
    ANCHOR_IN_NMS_TOO,
    NMS,
    PATCHED_PACKAGES,
    SEED,
    compiled,
    dist_info,
    make_tree,
    nms_with,
    refused,
    registered,
    snapshot,
    synthetic_files,
    tool,
)


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
    registered(SEED.id)
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
    registered(SEED.id)
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
    (tmp_path / "mmcv" / "version.py").write_text(
        f"__version__ = '2.1.0'\nopen({str(witness)!r}, 'w').write('pwned')\n"
    )
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
    metadata = next(tmp_path.glob("mmcv-*.dist-info")) / "METADATA"
    metadata.write_text(metadata.read_text().replace("Version: 2.1.0", "Version: two point one"))
    status = json.loads(tool("status", "--json", "--path", str(tmp_path)).stdout)
    assert status["targets"][0]["version"] == "two point one" and status["patches"][0]["state"] == "unverified"
    assert tool("apply", "--path", str(tmp_path)).returncode == 1
    assert tool("apply", "--force", "--path", str(tmp_path)).returncode == 0


@pytest.mark.parametrize("digest", ["sha256=a", "sha256=é", "sha256=AAAA", "sha256="])
def test_a_malformed_record_hash_counts_as_no_hash(tmp_path: Path, digest: str) -> None:
    nms = make_tree(tmp_path, distribution="mmcv")
    record = next(tmp_path.glob("mmcv-*.dist-info")) / "RECORD"
    record.write_text("".join(line.split(",")[0] + f",{digest},1\n" for line in record.read_text().splitlines()))
    status = tool("status", "--path", str(tmp_path))
    assert status.returncode == 0 and "unpatched" in status.stdout, status.stderr
    assert (
        tool("apply", "--path", str(tmp_path)).returncode == 0
        and tool("revert", "--path", str(tmp_path)).returncode == 0
    )
    assert nms.read_text() == NMS


def test_apply_writes_only_the_files_it_patches_and_their_bytecode(tmp_path: Path) -> None:
    nms = make_tree(tmp_path, distribution="mmcv")
    os.chmod(nms, 0o640)

    pyc = compiled(str(nms))
    before = snapshot(tmp_path)
    assert tool("apply", "--path", str(tmp_path)).returncode == 0
    after = snapshot(tmp_path)
    patched = [str(tmp_path / package / file) for package in PATCHED_PACKAGES for file in synthetic_files(package)]
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


# --- round 3: our edits after someone touched them ------------------------------------------------


def _patched_tree(root: Path) -> Path:
    nms = make_tree(root, distribution="mmcv")
    assert tool("apply", "--path", str(root)).returncode == 0
    return nms


def _states(root: Path) -> Dict[str, str]:
    return {p["id"]: p["state"] for p in json.loads(tool("status", "--json", "--path", str(root)).stdout)["patches"]}


def test_a_linters_comment_after_our_marker_makes_that_patch_drifted_and_force_keeps_it(tmp_path: Path) -> None:
    registered(SEED.id)
    nms = _patched_tree(tmp_path)
    lines = nms.read_text().splitlines(True)
    [at] = [i for i, line in enumerate(lines) if "batched-nms-amp-dtype sha256=" in line]
    lines[at] = lines[at].replace("\n", "  # noqa: E501\n")
    nms.write_text("".join(lines))
    states = _states(tmp_path)
    assert states.pop("batched-nms-amp-dtype") == "drifted" and set(states.values()) == {"patched"}
    assert tool("revert", "--path", str(tmp_path)).returncode == 1
    assert tool("revert", "--force", "--path", str(tmp_path)).returncode == 0
    assert nms.read_text() == NMS.replace(ANCHOR + "\n", ANCHOR + "  # noqa: E501\n")


def test_one_insertion_taken_out_by_hand_flags_only_its_patch(tmp_path: Path) -> None:
    registered(SEED.id)
    registered("nms-fp32-kernel")
    nms = _patched_tree(tmp_path)
    nms.write_text(nms.read_text().replace("NMSop.apply(boxes.float(), scores.float(),", "NMSop.apply(boxes, scores,"))
    states = _states(tmp_path)
    assert states.pop("nms-fp32-kernel") == "drifted" and set(states.values()) == {"patched"}
    kept = tool("revert", "--patch", "batched-nms-amp-dtype", "--path", str(tmp_path))
    assert kept.returncode == 0 and ANCHOR + "\n" in nms.read_text(), "an intact patch reverts on its own"
    assert tool("revert", "--force", "--path", str(tmp_path)).returncode == 0
    assert nms.read_text() == NMS, "the rest was as we left it: the original bytes"


def test_the_search_for_our_insertions_ends_whatever_the_file_holds(tmp_path: Path) -> None:
    registered("nms-fp32-kernel")
    """A marker whose inserted text is gone, after lines of look-alike text."""
    nms = _patched_tree(tmp_path)
    decoys = "".join(f"    x{i} = t.float() + t.float()  # t.float()\n" for i in range(40))
    text = nms.read_text().replace("NMSop.apply(boxes.float(), scores.float(),", "NMSop.apply(boxes, scores,")
    nms.write_text(text.replace("def nms(", "def decoys(t):\n" + decoys + "\n\ndef nms(", 1))
    done = tool("status", "--json", "--path", str(tmp_path), timeout=60)
    assert {p["id"]: p["state"] for p in json.loads(done.stdout)["patches"]}["nms-fp32-kernel"] == "drifted"


def test_look_alike_debug_lines_in_a_fork_never_change_a_verdict(tmp_path: Path) -> None:
    fork = NMS.replace(
        "    inds = NMSop.apply(", "    print(boxes.float(), scores.float())\n    inds = NMSop.apply("
    ).replace(
        "            scores_after_nms[mask[keep]]",
        "            print(dets[:, -1].to(scores_after_nms.dtype))\n            scores_after_nms[mask[keep]]",
    )
    nms = make_tree(tmp_path, fork)  # no metadata: a fork of its own
    alone = {
        id: json.loads(tool("status", "--json", "--patch", id, "--path", str(tmp_path)).stdout)["patches"][0]["state"]
        for id in _states(tmp_path)
    }
    assert alone == _states(tmp_path)
    assert tool("apply", "--force", "--path", str(tmp_path)).returncode == 0
    assert tool("revert", "--path", str(tmp_path)).returncode == 0 and nms.read_text() == fork


# --- round 3: files the tool reads ------------------------------------------------------------------


@pytest.mark.parametrize("owned", ["listed", "through-the-hook"])
def test_a_record_line_naming_a_fifo_never_blocks_and_gets_a_note(tmp_path: Path, owned: str) -> None:
    make_tree(tmp_path, distribution="mmcv")
    hook = tmp_path / "zz_mmcv.pth"
    os.mkfifo(hook)
    record = next(tmp_path.glob("mmcv-*.dist-info")) / "RECORD"
    lines = record.read_text().splitlines()
    if owned == "through-the-hook":  # an editable install: only the hook says where mmcv is
        lines = [line for line in lines if not line.startswith("mmcv/")]
    record.write_text("\n".join(lines + ["zz_mmcv.pth,,"]) + "\n")
    done = tool("status", "--json", "--path", str(tmp_path), timeout=60)
    notes = json.loads(done.stdout)["targets"][0]["notes"]
    assert f"ignored the editable-install hook {hook}: not a regular file" in notes


@pytest.mark.parametrize("algorithm", ["sha384", "sha512"])
def test_a_record_hash_in_another_algorithm_is_compared_in_it(tmp_path: Path, algorithm: str) -> None:
    nms = make_tree(tmp_path)
    files = {path.relative_to(tmp_path).as_posix(): path.read_bytes() for path in (tmp_path / "mmcv").rglob("*.py")}
    dist_info(tmp_path, "mmcv", "2.1.0", files, algorithm=algorithm)
    assert tool("apply", "--path", str(tmp_path)).returncode == 0
    reverted = json.loads(tool("revert", "--json", "--path", str(tmp_path)).stdout)
    assert {p["message"] for p in reverted["patches"]} == {"reverted to the original bytes"} and nms.read_text() == NMS


def test_an_invalid_version_in_metadata_says_so(tmp_path: Path) -> None:
    make_tree(tmp_path, version="not.a.version", distribution="mmcv")
    document = json.loads(tool("status", "--json", "--path", str(tmp_path)).stdout)
    info = next(tmp_path.glob("mmcv-*.dist-info"))
    assert (
        f"invalid version 'not.a.version' in {info}: no patch's known releases can include it"
        in document["targets"][0]["notes"]
    )


# --- round 3: bytecode, owners and modes ----------------------------------------------------------


def test_only_bytecode_of_the_file_is_removed(tmp_path: Path) -> None:
    nms = make_tree(tmp_path, distribution="mmcv")
    cache = nms.parent / "__pycache__"
    cache.mkdir()
    keep = [cache / "nms.backup.pyc", cache / "nms_rotated.cpython-311.pyc", cache / "nms.cpython-311.pyc.orig"]
    for path in keep + [cache / "nms.cpython-27.pyc", cache / "nms.pypy39.opt-1.pyc"]:
        path.write_bytes(b"not ours to keep" if path in keep else b"stale bytecode of nms.py")
    assert tool("apply", "--path", str(tmp_path)).returncode == 0
    assert sorted(p.name for p in cache.iterdir()) == sorted(p.name for p in keep)


def test_a_file_linked_from_a_shared_store_is_refused_with_the_way_to_patch_this_install_alone(
    tmp_path: Path, patched_nms: bytes
) -> None:
    """uv's symlink link mode and conda's softlinks: each installed file links into a cache
    every environment made from it shares. Following the advice patches this one alone."""
    nms = make_tree(tmp_path / "site", distribution="mmcv")
    stored = tmp_path / "cache" / "archive-v0" / "mmcv" / "ops" / "nms.py"
    stored.parent.mkdir(parents=True)
    stored.write_text(NMS)
    nms.unlink()
    nms.symlink_to(stored)
    line = refused(tool("apply", "--path", str(tmp_path / "site")), file=nms)
    advice = f"cp --remove-destination {stored} {nms}"
    assert "writing there would patch every environment linked to it" in line and advice in line
    assert line.endswith("(--force writes into the linked file); nothing was written")
    subprocess.run(advice.split(), check=True)
    assert tool("apply", "--path", str(tmp_path / "site")).returncode == 0
    assert nms.read_bytes() == patched_nms and not nms.is_symlink() and stored.read_text() == NMS


def test_a_directory_linked_from_a_shared_store_is_refused_with_the_way_to_reinstall_as_copies(
    tmp_path: Path,
) -> None:
    nms = make_tree(tmp_path / "site", distribution="mmcv")
    store = tmp_path / "cache" / "ops"
    store.parent.mkdir()
    nms.parent.rename(store)
    nms.parent.symlink_to(store)
    line = refused(tool("apply", "--path", str(tmp_path / "site")), file=nms)
    assert "reinstall mmcv as copies (uv: --link-mode=copy; conda: --copy)" in line and "cp " not in line
    assert (store / "nms.py").read_text() == NMS


def test_a_cache_directory_outside_the_package_is_refused_unless_forced(tmp_path: Path) -> None:
    nms = make_tree(tmp_path / "site", distribution="mmcv")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "nms.backup.pyc").write_bytes(b"someone else's")
    (elsewhere / "nms.cpython-27.pyc").write_bytes(b"stale bytecode of nms.py")
    (nms.parent / "__pycache__").symlink_to(elsewhere)
    line = refused(tool("apply", "--path", str(tmp_path / "site")), file=nms.parent / "__pycache__")
    assert f"resolves to {elsewhere}, outside the mmcv package" in line and nms.read_text() == NMS
    assert tool("apply", "--force", "--path", str(tmp_path / "site")).returncode == 0
    assert sorted(p.name for p in elsewhere.iterdir()) == ["nms.backup.pyc"]


def _immutable(path: Path) -> None:
    if (
        shutil.which("chattr") is None
        or subprocess.run(["chattr", "+i", str(path)], stderr=subprocess.DEVNULL).returncode != 0
    ):
        pytest.skip("needs chattr +i (root, on a file system that supports it)")


def test_no_bytecode_is_removed_unless_every_entry_can_be(tmp_path: Path) -> None:

    nms = make_tree(tmp_path, distribution="mmcv")
    mine = compiled(str(nms))
    other = mine.with_name("nms.cpython-27.pyc")
    other.write_bytes(b"another interpreter's bytecode")
    _immutable(mine)
    try:
        done = tool("apply", "--path", str(tmp_path))
        assert done.returncode == 1 and f"cannot remove stale bytecode {mine}" in done.stderr
        assert other.exists() and nms.read_text() == NMS, "nothing removed, the source as it was"
    finally:
        subprocess.run(["chattr", "-i", str(mine)])


def test_root_keeps_another_users_owner_and_setuid_bits(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    nms = make_tree(tmp_path, distribution="mmcv")
    os.chown(nms, 1234, 4321)
    os.chmod(nms, 0o6755)
    done = tool("apply", "--path", str(tmp_path))
    assert done.returncode == 0 and "note:" not in done.stdout
    info = nms.stat()
    assert (info.st_uid, info.st_gid, oct(stat.S_IMODE(info.st_mode))) == (1234, 4321, oct(0o6755))


def test_a_bind_mounted_file_that_cannot_be_renamed_over_keeps_its_code_and_bytecode(
    tmp_path: Path, released_nms: bytes
) -> None:
    """A container volume of one file: rename over a mount point fails with EBUSY. The file,
    its bytecode and the code Python loads from it all stay the released ones."""
    import importlib.machinery

    nms = make_tree(tmp_path / "site", distribution="mmcv")
    compiled(str(nms))
    volume = tmp_path / "volume.py"
    volume.write_bytes(released_nms)
    mounted = subprocess.run(["mount", "--bind", str(volume), str(nms)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot bind-mount here: {mounted.stderr.strip()}")
    try:
        done = tool("apply", "--path", str(tmp_path / "site"))
        loaded = importlib.machinery.SourceFileLoader("nms", str(nms)).get_code("nms")
        status = tool("status", "--check", "--path", str(tmp_path / "site"))
    finally:
        subprocess.run(["umount", str(nms)], check=True)
    assert done.returncode == 1 and done.stderr.splitlines()[-1].startswith(f"mmcv-patcher: error: cannot write {nms}:")
    assert volume.read_bytes() == released_nms and status.returncode == 3
    assert loaded == compile(released_nms, str(nms), "exec", dont_inherit=True), "Python runs the file's own code"
