"""The command line, run as a subprocess exactly as users and Dockerfiles run it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, Optional

import pytest

from tests import releases
from tests.fixtures import ANCHOR, ANCHOR_LINE, NMS, make_tree, nms_with


def cli(*args: str, cwd: Optional[Path] = None) -> subprocess.CompletedProcess:
    return releases.tool(Path(sys.executable), *args, cwd=cwd)


def as_json(*args: str) -> Dict[str, Any]:
    done = cli(*args, "--json")
    return json.loads(done.stdout)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    make_tree(tmp_path, version="2.1.0", distribution="mmcv")
    return tmp_path


def nms_of(tree: Path) -> Path:
    return tree / "mmcv" / "ops" / "nms.py"


def test_status_json_schema(tree: Path) -> None:
    document = as_json("status", "--path", str(tree))
    assert document == {
        "schema_version": 1,
        "command": "status",
        "target": {"path": str(tree / "mmcv"), "distribution": "mmcv", "version": "2.1.0", "notes": []},
        "patches": [
            {
                "id": "batched-nms-amp-dtype",
                "state": "unpatched",
                "file": str(nms_of(tree)),
                "line": ANCHOR_LINE,
                "message": "mmcv 2.1.0 has the bug",
                "changed": False,
                "ok": True,
            }
        ],
        "waited": False,
        "diff": "",
        "error": None,
    }


def test_status_human_line_names_state_file_and_line(tree: Path) -> None:
    done = cli("status", "--path", str(tree))
    assert done.returncode == 0
    assert f"batched-nms-amp-dtype: unpatched at {nms_of(tree)}:{ANCHOR_LINE}" in done.stdout


def test_check_exits_3_until_patched(tree: Path) -> None:
    assert cli("status", "--check", "--path", str(tree)).returncode == 3
    assert cli("apply", "--path", str(tree)).returncode == 0
    assert cli("status", "--check", "--path", str(tree)).returncode == 0


def test_dry_run_prints_a_diff_and_writes_nothing(tree: Path) -> None:
    done = cli("apply", "--dry-run", "--path", str(tree))
    assert done.returncode == 0
    assert f"-            {ANCHOR}\n+            {ANCHOR}.to(scores_after_nms.dtype)  # mmcv-patcher" in done.stdout
    assert "--dry-run: would become patched" in done.stdout
    assert nms_of(tree).read_text() == NMS


def test_apply_twice_then_revert(tree: Path) -> None:
    first = as_json("apply", "--path", str(tree))
    assert first["patches"][0]["changed"] and first["patches"][0]["state"] == "patched"
    patched = nms_of(tree).read_bytes()
    second = as_json("apply", "--path", str(tree))
    assert not second["patches"][0]["changed"] and second["patches"][0]["state"] == "patched"
    assert nms_of(tree).read_bytes() == patched
    reverted = as_json("revert", "--path", str(tree))
    assert reverted["patches"][0]["state"] == "unpatched"
    assert nms_of(tree).read_text() == NMS


def test_drifted_file_fails_with_one_line_naming_file_and_line_and_is_untouched(tmp_path: Path) -> None:
    make_tree(tmp_path, nms_with(f"{ANCHOR}\n            {ANCHOR}"), distribution="mmcv")
    before = nms_of(tmp_path).read_bytes()
    for command in ("apply", "status"):
        done = cli(command, "--path", str(tmp_path))
        assert done.returncode == 1
        [line] = done.stderr.splitlines()
        assert line.startswith(f"mmcv-patcher: error: {nms_of(tmp_path)}:{ANCHOR_LINE}: batched-nms-amp-dtype is drifted")
    assert nms_of(tmp_path).read_bytes() == before


def test_unverified_release_needs_force(tmp_path: Path) -> None:
    make_tree(tmp_path, version="2.3.0", distribution="mmcv")
    refused = cli("apply", "--path", str(tmp_path))
    assert refused.returncode == 1 and "--force" in refused.stderr
    assert nms_of(tmp_path).read_text() == NMS
    assert cli("status", "--check", "--path", str(tmp_path)).returncode == 3
    assert cli("apply", "--force", "--path", str(tmp_path)).returncode == 0
    assert as_json("status", "--path", str(tmp_path))["patches"][0]["state"] == "patched"


def test_revert_of_a_file_edited_since_needs_force(tree: Path) -> None:
    cli("apply", "--path", str(tree))
    nms = nms_of(tree)
    nms.write_text(nms.read_text().replace("import torch\n", "import torch  # hand edit\n"))
    edited = nms.read_bytes()
    refused = cli("revert", "--path", str(tree))
    assert refused.returncode == 1 and "revert --force" in refused.stderr
    assert nms.read_bytes() == edited
    assert cli("revert", "--force", "--path", str(tree)).returncode == 0
    assert nms.read_text() == NMS.replace("import torch\n", "import torch  # hand edit\n")


def test_fixed_upstream_is_left_alone_by_apply_and_revert(tmp_path: Path) -> None:
    make_tree(tmp_path, nms_with(ANCHOR + ".to(scores_after_nms.dtype)"), version="2.3.6", distribution="onedl-mmcv")
    before = nms_of(tmp_path).read_bytes()
    for command in ("apply", "revert", "status"):
        document = as_json(command, "--force", "--path", str(tmp_path)) if command != "status" else as_json(command, "--path", str(tmp_path))
        assert document["patches"][0]["state"] == "fixed-upstream"
    assert nms_of(tmp_path).read_bytes() == before


def test_no_mmcv_found(tmp_path: Path) -> None:
    status = cli("status", cwd=tmp_path)
    assert status.returncode == 0 and "no mmcv is importable" in status.stdout
    apply = cli("apply", cwd=tmp_path)
    assert apply.returncode == 1 and "install mmcv first" in apply.stderr


@pytest.mark.parametrize(
    "args",
    [["apply", "--patch", "no-such-patch"], ["status", "--path", "/no/such/path"], ["frobnicate"], []],
)
def test_usage_errors_exit_2(args: list) -> None:
    done = cli(*args)
    assert done.returncode == 2 and "error" in done.stderr


def test_patch_option_selects_by_id(tree: Path) -> None:
    assert cli("apply", "--patch", "batched-nms-amp-dtype", "--path", str(tree)).returncode == 0
    assert cli("status", "--check", "--path", str(tree)).returncode == 0


def test_version_and_help() -> None:
    assert cli("--version").stdout.startswith("mmcv-patcher ")
    help_text = cli("--help").stdout
    assert all(word in help_text for word in ("apply", "status", "revert"))


#: What ``status`` leaves out for a release's own file and for a patched one: importing any
#: of these costs a large part of an interpreter start (README, "Fast status").
HEAVY = {"argparse", "csv", "json", "libcst", "packaging.version", "pathlib", "re", "shutil", "tokenize", "typing"}
_MODULES_AT_EXIT = """
import runpy, sys
before = set(sys.modules)
sys.argv[0] = "mmcv_patcher"
try:
    runpy.run_module("mmcv_patcher", run_name="__main__", alter_sys=True)
finally:
    print("imported:", *sorted(set(sys.modules) - before), file=sys.stderr)
"""


def _imported_by(*args: str) -> set:
    """Modules the command imports. Run without site (-S), whose .pth hooks (an editable
    install's finder, say) may import some of HEAVY first, with this checkout on the path."""
    environment = dict(os.environ, PYTHONPATH=str(releases.REPOSITORY))
    done = subprocess.run([sys.executable, "-S", "-c", _MODULES_AT_EXIT, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, env=environment)
    assert done.returncode in (0, 3), done.stderr
    return set(done.stderr.splitlines()[-1].split()[1:])


def test_status_of_a_release_or_a_patched_file_imports_nothing_heavy(tree: Path) -> None:
    released = _imported_by("status", "--path", str(tree))
    assert "mmcv_patcher.locate" in released and "hashlib" in released  # it did look
    assert released & HEAVY == set()
    assert cli("apply", "--path", str(tree)).returncode == 0
    assert _imported_by("status", "--check", "--path", str(tree)) & HEAVY == set()
    # and an unusual command line still works, through argparse
    assert "argparse" in _imported_by("status", "--chec", "--path", str(tree))
