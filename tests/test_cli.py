"""The command line, run as a subprocess exactly as users and Dockerfiles run it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Set

import pytest

from mmcv_patcher import registry
from scripts import releases
from tests import fixtures
from tests.fixtures import (
    ANCHOR,
    ANCHOR_LINE,
    NMS,
    PATCHED_PACKAGES,
    SEED,
    lines_of,
    make_tree,
    nms_with,
    registered,
    tool,
)


def as_json(*args: str) -> Dict[str, Any]:
    done = tool(*args, "--json")
    document: Dict[str, Any] = json.loads(done.stdout)
    return document


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    make_tree(tmp_path, version="2.1.0", distribution="mmcv")
    return tmp_path


def nms_of(tree: Path) -> Path:
    return tree / "mmcv" / "ops" / "nms.py"


OTHERS = [patch.id for patch in registry.all_patches() if patch.id != "batched-nms-amp-dtype"]


def test_status_json_schema(tree: Path) -> None:
    registered(SEED.id)
    document = as_json("status", "--patch", "batched-nms-amp-dtype", "--path", str(tree))
    assert document == {
        "schema_version": 3,
        "command": "status",
        "targets": [
            {
                "package": "mmcv",
                "package_dir": str(tree / "mmcv"),
                "distribution": "mmcv",
                "version": "2.1.0",
                "notes": [],
            }
        ],
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
        "notes": [],
        "error": None,
        "failure": None,
    }
    every = {p["id"]: p for p in as_json("status", "--path", str(tree))["patches"]}
    assert list(every) == [patch.id for patch in registry.all_patches()], (
        "one object per patch, in the order they apply"
    )
    assert {(p["state"], p["file"]) for p in every.values()} == {
        ("unpatched", str(tree / patch.package / patch.file)) for patch in registry.all_patches()
    }
    in_nms = {
        patch.id: min(line for edit in patch.edits for line in lines_of(NMS, edit.anchor))
        for patch in fixtures.patches_of("ops/nms.py")
    }
    assert {id: every[id]["line"] for id in in_nms} == in_nms


def test_status_human_line_names_state_file_and_line(tree: Path) -> None:
    registered(SEED.id)
    done = tool("status", "--path", str(tree))
    assert done.returncode == 0
    assert f"batched-nms-amp-dtype: unpatched at {nms_of(tree)}:{ANCHOR_LINE}" in done.stdout


def test_check_exits_3_until_patched(tree: Path) -> None:
    assert tool("status", "--check", "--path", str(tree)).returncode == 3
    assert tool("apply", "--path", str(tree)).returncode == 0
    assert tool("status", "--check", "--path", str(tree)).returncode == 0


def test_dry_run_prints_a_diff_and_writes_nothing(tree: Path) -> None:
    registered(SEED.id)
    done = tool("apply", "--dry-run", "--path", str(tree))
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
    registered(SEED.id)
    make_tree(tmp_path, nms_with(f"{ANCHOR}\n            {ANCHOR}"), distribution="mmcv")
    before = nms_of(tmp_path).read_bytes()
    for command in ("apply", "status"):
        done = tool(command, "--path", str(tmp_path))
        assert done.returncode == 1 and done.stderr == ""
        [line] = [line for line in done.stdout.splitlines() if ": drifted at " in line]
        assert line.startswith(f"batched-nms-amp-dtype: drifted at {nms_of(tmp_path)}:{ANCHOR_LINE} (")
    assert nms_of(tmp_path).read_bytes() == before
    failure = as_json("apply", "--path", str(tmp_path))["failure"]
    assert (failure["kind"], failure["path"]) == ("drifted", str(nms_of(tmp_path)))
    assert failure["detail"].startswith("batched-nms-amp-dtype: ")


def test_unverified_release_needs_force(tmp_path: Path) -> None:
    make_tree(tmp_path, version="2.3.0", distribution="mmcv")
    refused = tool("apply", "--path", str(tmp_path))
    assert refused.returncode == 1 and "--force" in refused.stdout
    assert as_json("apply", "--path", str(tmp_path))["failure"]["kind"] == "unverified"
    assert nms_of(tmp_path).read_text() == NMS
    assert tool("status", "--check", "--path", str(tmp_path)).returncode == 3
    assert tool("apply", "--force", "--path", str(tmp_path)).returncode == 0
    assert as_json("status", "--path", str(tmp_path))["patches"][0]["state"] == "patched"


def test_revert_of_a_file_edited_elsewhere_takes_out_only_our_edits(tree: Path) -> None:
    tool("apply", "--path", str(tree))
    nms = nms_of(tree)
    nms.write_text(nms.read_text().replace("import torch\n", "import torch  # hand edit\n"))
    reverted = tool("revert", "--path", str(tree))
    assert reverted.returncode == 0 and "not the original" in reverted.stdout
    assert nms.read_text() == NMS.replace("import torch\n", "import torch  # hand edit\n")


def test_revert_of_a_statement_edited_since_needs_force(tree: Path) -> None:
    registered(SEED.id)
    tool("apply", "--path", str(tree))
    nms = nms_of(tree)
    nms.write_text(nms.read_text().replace(".to(scores_after_nms.dtype)", ".to(scores_after_nms.dtype) * 1"))
    edited = nms.read_bytes()
    refused = tool("revert", "--path", str(tree))
    assert refused.returncode == 1 and "revert --force" in refused.stdout
    assert nms.read_bytes() == edited
    assert tool("revert", "--force", "--path", str(tree)).returncode == 0
    assert nms.read_text() == NMS.replace("dets[:, -1]\n    if", "dets[:, -1] * 1\n    if")


def test_fixed_upstream_is_left_alone_by_apply_and_revert(tmp_path: Path) -> None:
    registered(SEED.id)
    make_tree(tmp_path, nms_with(ANCHOR + ".to(scores_after_nms.dtype)"), version="2.3.6", distribution="onedl-mmcv")
    before = nms_of(tmp_path).read_bytes()
    for command in ("apply", "revert", "status"):
        document = (
            as_json(command, "--force", "--path", str(tmp_path))
            if command != "status"
            else as_json(command, "--path", str(tmp_path))
        )
        assert document["patches"][0]["state"] == "fixed-upstream"
    assert nms_of(tmp_path).read_bytes() == before


def test_no_mmcv_found(tmp_path: Path) -> None:
    status = tool("status", cwd=tmp_path)
    assert status.returncode == 0 and "no mmcv is importable" in status.stdout
    apply = tool("apply", cwd=tmp_path)
    assert apply.returncode == 1 and "install mmcv first" in apply.stderr


@pytest.mark.parametrize(
    "args",
    [["apply", "--patch", "no-such-patch"], ["status", "--path", "/no/such/path"], ["frobnicate"], []],
)
def test_usage_errors_exit_2(args: List[Any]) -> None:
    done = tool(*args)
    assert done.returncode == 2 and "error" in done.stderr


def test_patch_option_selects_by_id(tree: Path) -> None:
    registered(SEED.id)
    assert tool("apply", "--patch", "batched-nms-amp-dtype", "--path", str(tree)).returncode == 0
    assert nms_of(tree).read_text().count("# mmcv-patcher: ") == 1, "only the selected patch"
    assert tool("status", "--check", "--patch", "batched-nms-amp-dtype", "--path", str(tree)).returncode == 0
    assert tool("status", "--check", "--path", str(tree)).returncode == 3, "the others are not applied"
    states = {p["id"]: p["state"] for p in as_json("status", "--path", str(tree))["patches"]}
    assert states == {"batched-nms-amp-dtype": "patched", **{p: "unpatched" for p in OTHERS}}
    assert tool("apply", "--path", str(tree)).returncode == 0
    assert tool("revert", "--patch", OTHERS[0], "--path", str(tree)).returncode == 0
    states = {p["id"]: p["state"] for p in as_json("status", "--path", str(tree))["patches"]}
    assert states == {**{p: "patched" for p in ["batched-nms-amp-dtype", *OTHERS]}, OTHERS[0]: "unpatched"}
    assert tool("revert", "--path", str(tree)).returncode == 0
    assert nms_of(tree).read_text() == NMS


def _keys(document: Any) -> Any:
    """The shape of a JSON document: its objects' keys, all the way down (a list by its first item)."""
    if isinstance(document, dict):
        return {key: _keys(value) for key, value in document.items()}
    if isinstance(document, list):
        return [_keys(document[0])] if document else []
    return None


def test_the_documented_json_example_has_exactly_the_keys_the_tool_prints(tree: Path) -> None:
    page = (releases.REPOSITORY / "docs" / "json.md").read_text()
    example = json.loads(page.split("```json\n", 1)[1].split("```", 1)[0])
    printed = as_json("status", "--path", str(tree))
    assert _keys(example) == _keys(printed)


def test_version_and_help() -> None:
    assert tool("--version").stdout.startswith("mmcv-patcher ")
    help_text = tool("--help").stdout
    assert all(word in help_text for word in ("apply", "status", "revert"))


@pytest.mark.parametrize("command", ["apply", "status", "revert", "verify"])
def test_help_lists_every_patch_id_whole_on_a_line_of_its_own(command: str) -> None:
    shown = tool(command, "--help", env={"COLUMNS": "40"}).stdout.splitlines()
    assert all(f"  {patch.id}" in shown for patch in registry.all_patches()), "copyable, never broken at a hyphen"


def test_no_mmcv_names_the_interpreter_once(tmp_path: Path) -> None:
    bare = releases.make_venv(tmp_path / "bare", with_tool=False)
    done = tool("apply", "--python", str(bare))
    assert done.returncode == 1
    assert done.stderr.count(str(bare)) == 1 and f"{bare}: no mmcv is importable" in done.stderr


def test_a_file_of_other_patches_is_named_as_not_one_the_chosen_patches_work_on(tree: Path) -> None:
    registered(SEED.id)
    roi_align = tree / "mmcv" / "ops" / "roi_align.py"
    done = tool("status", "--patch", "batched-nms-amp-dtype", "--path", str(roi_align))
    assert done.returncode == 2
    assert done.stderr.splitlines()[-1] == (
        f"mmcv-patcher: error: --path {roi_align}: not a file the chosen patches work on (ops/nms.py inside the mmcv package)"
    )


_MODULES_AT_EXIT = """
import runpy, sys
sys.argv[0] = "mmcv_patcher"
try:
    runpy.run_module("mmcv_patcher", run_name="__main__", alter_sys=True)
finally:
    print("imported:", *sorted(sys.modules), file=sys.stderr)
"""


def _imported_by(*args: str) -> Set[Any]:
    """Modules loaded when the command ends, run from this checkout."""
    environment = dict(os.environ, PYTHONPATH=str(releases.REPOSITORY))
    done = subprocess.run(
        [sys.executable, "-c", _MODULES_AT_EXIT, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        universal_newlines=True,
        env=environment,
    )
    assert done.returncode in (0, 3), done.stderr
    return set(done.stderr.splitlines()[-1].split()[1:])


def _libcst(modules: Set[Any]) -> Set[Any]:
    return {name for name in modules if name.split(".")[0] == "libcst"}


def test_status_never_imports_libcst_and_only_a_write_of_a_fix_does(tree: Path) -> None:
    released = _imported_by("status", "--path", str(tree))
    assert "mmcv_patcher.find" in released and not _libcst(released), "it looked, with Python's own parser"
    nms_of(tree).write_text(NMS.replace("import torch\n", "import torch  # edited\n"))
    assert not _libcst(_imported_by("status", "--path", str(tree))), "nor for a file that is not the release's"
    assert _libcst(_imported_by("apply", "--dry-run", "--path", str(tree))), "apply makes the fix with LibCST"
    assert tool("apply", "--path", str(tree)).returncode == 0
    assert not _libcst(_imported_by("status", "--check", "--path", str(tree)))
    assert not _libcst(_imported_by("revert", "--dry-run", "--path", str(tree))), "a revert takes out text it finds"


def test_revert_of_an_unpatched_install_never_builds_a_fix(tree: Path) -> None:
    assert not _libcst(_imported_by("revert", "--path", str(tree))), "nothing of ours to take out: no fix to make"


def test_revert_of_a_file_whose_fix_libcst_cannot_make_is_nothing_to_do(tree: Path) -> None:
    deform = tree / "mmcv" / "ops" / "deform_conv.py"
    spaced = deform.read_text().replace("grad_output.contiguous()", "grad_output.contiguous( )")
    assert spaced != deform.read_text()
    deform.write_text(spaced)
    assert "deform-conv-fp32-kernel: drifted" in tool("apply", "--dry-run", "--path", str(tree)).stdout
    reverted = tool("revert", "--patch", "deform-conv-fp32-kernel", "--path", str(tree))
    assert reverted.returncode == 0 and "deform-conv-fp32-kernel: unpatched" in reverted.stdout
    assert deform.read_text() == spaced


# --- the command line itself ----------------------------------------------------------------


def test_a_usage_error_in_a_command_shows_that_commands_usage(tree: Path) -> None:
    done = tool("status", "--force", "--path", str(tree))
    assert done.returncode == 2
    assert done.stderr.startswith("usage: mmcv-patcher status ")
    assert done.stderr.splitlines()[-1] == "mmcv-patcher: error: unrecognized arguments: --force"
    unknown = tool("apply", "--patch", "no-such-patch")
    assert unknown.returncode == 2 and unknown.stderr.startswith("usage: mmcv-patcher apply ")
    choices = ", ".join(repr(patch.id) for patch in registry.all_patches())
    assert f"invalid choice: 'no-such-patch' (choose from {choices})" in unknown.stderr


def test_options_of_every_command_are_taken_before_it_too(tree: Path) -> None:
    before = tool("--json", "--path", str(tree), "status")
    assert before.returncode == 0 and json.loads(before.stdout)["patches"][0]["state"] == "unpatched"
    mixed = tool("--path", str(tree), "apply", "--json")
    assert mixed.returncode == 0 and json.loads(mixed.stdout)["patches"][0]["state"] == "patched"


@pytest.mark.parametrize(
    "args, command",
    [
        (["apply", "--patch", "nope"], "apply"),
        (["status", "--bogus"], "status"),
        (["status", "--python", "a", "--python", "b"], "status"),
        (["frobnicate"], None),
        (["status", "--path", "/no/such/path"], "status"),
        (["status", "--python", "/no/such/python"], "status"),
    ],
)
def test_with_json_every_failure_is_one_json_object(args: List[Any], command: Optional[str]) -> None:
    done = tool(*args, "--json") if args[0] != "frobnicate" else tool("--json", *args)
    assert done.returncode == 2, done.stderr
    document = json.loads(done.stdout)
    assert document["command"] == command and document["error"] and document["targets"] == []
    assert done.stderr == ""


def test_the_entry_point_freezes_its_objects_before_exit_and_main_in_process_does_not(tree: Path) -> None:
    # The interpreter's last garbage collection would walk every object the run made
    # (LibCST's modules and trees); the entry point freezes them first. main() called
    # in-process must leave the caller's collector alone.
    registered(SEED.id)
    import gc

    from mmcv_patcher import cli as entry

    program = (
        "import atexit, gc, runpy, sys\n"
        "atexit.register(lambda: sys.stderr.write(f'frozen={gc.get_freeze_count() > 0}\\n'))\n"
        f"sys.argv = ['mmcv-patcher', 'apply', '--path', {str(tree)!r}]\n"
        "runpy.run_module('mmcv_patcher', run_name='__main__', alter_sys=True)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", program],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        universal_newlines=True,
        cwd=str(releases.REPOSITORY),
    )
    assert done.returncode == 0 and "frozen=True" in done.stderr, done.stderr
    assert "# mmcv-patcher: batched-nms-amp-dtype sha256=" in nms_of(tree).read_text()
    assert entry.main(["status", "--check", "--path", str(tree)]) == 0 and gc.get_freeze_count() == 0


def test_verify_that_cannot_run_keeps_its_json_shape_and_says_why_once(tree: Path) -> None:
    """The synthetic tree has no compiled ops, so no case can run."""
    done = tool("verify", "--json", "--path", str(tree))
    document = json.loads(done.stdout)
    ids = [patch.id for patch in registry.all_patches()]
    assert done.returncode == 1 and done.stderr == ""
    assert [p["id"] for p in document["patches"]] == ids and {p["state"] for p in document["patches"]} == {"unpatched"}
    cases = document["verify"]["cases"]
    assert list(cases) == ids and all(list(by_dtype) == ["float16", "bfloat16"] for by_dtype in cases.values())
    assert {case["verdict"] for by_dtype in cases.values() for case in by_dtype.values()} == {"unavailable"}
    assert document["error"] == f"verify: unavailable: {document['verify']['detail']}"
    text = tool("verify", "--path", str(tree))
    assert text.returncode == 1 and text.stderr == "" and text.stdout.count("has no compiled ops") == 1


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(["apply", "--lock-timeout", "-1"], id="negative-seconds"),
        pytest.param(["apply", "--lock-timeout", "nan"], id="nan-seconds"),
        pytest.param(["revert", "--lock-timeout", "inf"], id="infinite-seconds"),
        pytest.param(["verify", "--boxes", "-5"], id="negative-boxes"),
        pytest.param(["verify", "--boxes", "0"], id="no-boxes"),
    ],
)
def test_numbers_that_make_no_sense_are_usage_errors(args: List[Any]) -> None:
    done = tool(*args)
    assert done.returncode == 2 and done.stderr.startswith(f"usage: mmcv-patcher {args[0]} ")
    assert done.stderr.splitlines()[-1].startswith(f"mmcv-patcher: error: argument {args[1]}: ")


@pytest.mark.parametrize("where", ["missing", "empty"])
def test_a_path_with_no_mmcv_prints_its_commands_usage(tmp_path: Path, where: str) -> None:
    path = tmp_path / "missing" if where == "missing" else tmp_path
    done = tool("apply", "--path", str(path))
    assert done.returncode == 2 and done.stdout == ""
    [usage, *_, error] = done.stderr.splitlines()
    assert usage.startswith("usage: mmcv-patcher apply ") and error.startswith(f"mmcv-patcher: error: --path {path}")


def test_dry_run_shows_exactly_the_lines_gnu_diff_shows(tmp_path: Path) -> None:
    """A file of over 200 lines with many blank ones, where difflib's junk heuristic would
    show an unchanged blank line removed and added again."""
    padded = NMS.replace("\n\n\ndef soft_nms", "\n\n" + "x = 1\n\n" * 120 + "\ndef soft_nms")
    make_tree(tmp_path, padded, distribution="mmcv")
    done = tool("apply", "--dry-run", "--json", "--path", str(tmp_path))
    diff = json.loads(done.stdout)["diff"]
    expected = ""
    for package, file in dict.fromkeys((p.package, p.file) for p in registry.all_patches()):  # as they are written
        source = tmp_path / package / file
        after = tmp_path / "after.py"
        after.write_text(fixtures.patched(source.read_text(), file))
        gnu = subprocess.run(
            ["diff", "-u", "--label", str(source), "--label", str(source), str(source), str(after)],
            stdout=subprocess.PIPE,
            universal_newlines=True,
        )
        assert gnu.returncode == 1
        expected += gnu.stdout
    assert diff == expected


def test_status_all_lists_every_interpreter_asked_about_once(tmp_path: Path) -> None:
    without = releases.make_venv(tmp_path / "bare", with_tool=False)
    with_mmcv = releases.make_venv(tmp_path / "env", with_tool=False)
    make_tree(releases.site_packages(with_mmcv), distribution="mmcv")
    done = tool(
        "status", "--all", "--json", "--python", str(without), "--python", str(with_mmcv), "--python", str(without)
    )
    document = json.loads(done.stdout)
    assert set(document) == {
        "schema_version",
        "command",
        "targets",
        "patches",
        "waited",
        "diff",
        "notes",
        "error",
        "failure",
        "copies",
    }
    [bare, found] = [copy for copy in document["copies"] if copy["package"] == "mmcv"]
    assert (bare["python"], bare["target"], bare["patches"]) == (str(without), None, []) and "no mmcv" in bare[
        "problem"
    ]
    assert found["python"] == str(with_mmcv) and found["imported"] and found["target"]["version"] == "2.1.0"
    text = tool("status", "--all", "--python", str(without), "--python", str(with_mmcv)).stdout.splitlines()
    assert (
        text[:2] == [f"{without}: no {package} is importable; nothing to patch" for package in PATCHED_PACKAGES][:2]
    ), "the interpreter named once"
    assert f"{with_mmcv} imports:" in text


def test_the_advice_to_reinstall_names_where_the_file_is(tmp_path: Path) -> None:
    registered(SEED.id)
    nms = make_tree(tmp_path / "site", distribution="mmcv")
    nms.write_text(nms.read_text().replace(ANCHOR, "pass"))
    by_path = as_json("status", "--path", str(tmp_path / "site"))["patches"][0]["message"]
    assert f"`pip install --upgrade --target {tmp_path / 'site'} --force-reinstall --no-deps mmcv==2.1.0`" in by_path
    python = releases.make_venv(tmp_path / "env", with_tool=False)
    nms = make_tree(releases.site_packages(python), distribution="mmcv")
    nms.write_text(nms.read_text().replace(ANCHOR, "pass"))
    by_python = as_json("status", "--python", str(python))["patches"][0]["message"]
    assert f"`{python} -m pip install --force-reinstall --no-deps mmcv==2.1.0`" in by_python


def test_verify_runs_the_dtypes_asked_for(tree: Path) -> None:
    cases = json.loads(tool("verify", "--json", "--dtype", "bfloat16", "--path", str(tree)).stdout)["verify"]["cases"]
    assert {dtype for by_dtype in cases.values() for dtype in by_dtype} == {"bfloat16"}
