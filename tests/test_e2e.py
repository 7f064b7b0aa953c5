"""The promise on the real mmcv 2.1.0 built with its CPU ops (built once, cached; see
scripts/releases.py), mmdet 3.3.0 and onedl-mmrotate 1.2.1: every patch's proofs as its module
declares them (each op's dtype grid, run by the op's runner in ``tests/e2e_ops``), ``verify``
on every case, and the seed's crash and the real clients of the nms family; the training
steps of real models are tests/test_steps.py's.

A test that needs a patch whose module is not there is skipped, so removing a patch module
leaves the suite green.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Dict, Tuple

import pytest

from mmcv_patcher import registry, verify
from scripts import releases
from tests.fixtures import THE_ERROR, applied, ask, patches_named, registered, tool

pytestmark = [pytest.mark.e2e, pytest.mark.release]


# --- every patch's grids: its op in every dtype that matters ------------------------------------

GRIDS = [
    pytest.param(patch.id, index, id=f"{patch.id}-{grid.runner}")
    for patch in registry.all_patches()
    for index, grid in enumerate(patch.proofs.grids)
]


@pytest.mark.parametrize("patch_id, index", GRIDS)
def test_each_grid_fails_as_released_runs_once_applied_leaves_working_calls_alone_and_fails_again(
    python: Path, patch_id: str, index: int
) -> None:
    patch = registered(patch_id)
    grid = patch.proofs.grids[index]
    patches_named(grid.after)
    installed = releases.site_packages(python) / patch.package / patch.file
    original = releases.released_file(releases.IN_DETECTOR_VENV[patch.package], f"{patch.package}/{patch.file}")
    failing = [fails.case for fails in grid.fails]

    def both() -> Tuple[Dict[Tuple[Any, ...], Any], Dict[Tuple[Any, ...], Any]]:
        """What the working and the failing cases answer, in one process."""
        found = ask(python, grid.runner, [*grid.works, *failing])
        return {case: found[case] for case in grid.works}, {case: found[case] for case in failing}

    try:
        applied(python, *grid.after)
        works, released = both()
        applied(python, patch.id)
        still, fixed = both()
        assert tool("revert", "--patch", patch.id, python=python).returncode == 0
        again = ask(python, grid.runner, failing)
    finally:
        assert tool("revert", python=python).returncode == 0
    assert installed.read_bytes() == original
    assert not [case for case, found in works.items() if "error" in found], works
    for fails in grid.fails:
        before, after = released[fails.case], fixed[fails.case]
        if fails.error is not None:
            assert before == {"error": fails.error}, (fails.case, before)
        else:  # it runs as released, and gives something other than the same values in fp32 give
            assert "error" not in before and max(before["differences"]) > fails.tolerance, (fails.case, before)
        assert "error" not in after and after["dtypes"] == list(fails.dtypes), (fails.case, after)
        assert max(after["differences"]) <= fails.tolerance, (fails.case, after)
        if fails.kernel is not None:
            assert after["kernel"] == [fails.kernel], (fails.case, after)
    assert still == works, "calls that work as released: bit-identical, the same dtypes, no more copies"
    assert again == released, "reverted, the failures come back"


# --- verify: every case, on the release and patched ----------------------------------------------


#: what ``verify``'s child imports first: a stand-in for torchvision (tests/stand_ins), without
#: which mmrotate's models, and so its losses, cannot be imported beside the tests' torch
STAND_INS = {"PYTHONPATH": str(Path(__file__).parent / "stand_ins")}


def test_verify_reports_each_patchs_case_crashing_then_surviving_in_fp16_and_bf16(python: Path) -> None:
    crashed = tool("verify", "--json", python=python, env=STAND_INS)
    assert crashed.returncode == 1
    report = json.loads(crashed.stdout)["verify"]
    verdicts = {
        (id, dtype): case["verdict"] for id, by_dtype in report["cases"].items() for dtype, case in by_dtype.items()
    }
    assert set(verdicts) == {(patch.id, dtype) for patch in registry.all_patches() for dtype in ("float16", "bfloat16")}
    # the CUDA-only ops' cases are skipped on the CPU, and count neither way
    skipped = {
        (patch.id, dtype)
        for patch in registry.all_patches()
        if "cpu" not in patch.case.devices
        for dtype in ("float16", "bfloat16")
    }
    assert {key for key, verdict in verdicts.items() if verdict == "skipped"} == skipped
    cases = {key: verdict for key, verdict in verdicts.items() if key not in skipped}
    # every other case crashes on the release (batched-nms-fp32-offsets: the kernel refuses the
    # boxes first), except where mmcv's CPU kernel takes the dtype
    survives = {(patch.id, dtype) for patch in registry.all_patches() for dtype in patch.case.cpu_kernel_takes}
    assert {key: verdict for key, verdict in cases.items() if verdict != "crashed"} == dict.fromkeys(
        survives, "survived"
    )
    assert report["verdict"] == "crashed" and report["detail"].startswith(
        f"{len(survives)} of {len(cases)} cases survived"
    )
    assert Path(report["mmcv_dir"]) == releases.site_packages(python) / "mmcv"

    assert tool("apply", python=python).returncode == 0
    try:
        survived = tool("verify", python=python, env=STAND_INS)
    finally:
        assert tool("revert", python=python).returncode == 0
    assert survived.returncode == 0, survived.stdout + survived.stderr
    assert "imports mmcv and torch in a child process" in survived.stdout
    summary = f"survived: {len(cases)} of {len(cases)} cases survived"
    assert summary + ("; skipped on cpu: " if skipped else "") in survived.stdout
    for patch in registry.all_patches():
        if "cpu" not in patch.case.devices:
            skip = patch.case.skipped % {"device": "cpu", "op": patch.op, "runs_on": "cuda"}
            assert f"{patch.id} (bfloat16): skipped: {skip}" in survived.stdout


#: On a ``verify`` child's path: its CPU autocast is CUDA's rules, simulated (its sitecustomize)
CUDA_RULES = os.pathsep.join([str(Path(__file__).parent / "cuda_autocast"), str(Path(__file__).parents[1])])


#: The AMP dtypes in which a case fails on the release under CUDA's rules, where not both:
#: bf16 keeps FocalLossCost's eps
FAILS_IN = {"focal-loss-cost-fp16-log": ("float16",)}


def test_the_cases_of_crashes_only_cudas_autocast_shows_fail_on_the_release_and_survive_under_its_rules_simulated(
    python: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ``verify`` cases of mmdet's code that fail only under CUDA's autocast (its
    refusal of ``binary_cross_entropy``; fp16's rounding of a matching cost's sums), under
    CUDA's rules, simulated: each fails on the release, with CUDA's refusal or non-finite
    costs, and survives once applied (``verify --device cuda`` on a GPU is what proves it on
    CUDA's kernels)."""
    only_cuda = [
        patch._replace(case=patch.case._replace(devices=("cpu",)))
        for patch in registry.all_patches()
        if patch.package != "mmcv" and "cpu" not in patch.case.devices
    ]
    assert only_cuda, "no case of a package's own code runs on CUDA only"
    monkeypatch.setenv("PYTHONPATH", CUDA_RULES)
    released = verify.run(str(python), only_cuda)
    assert tool("apply", python=python).returncode == 0
    try:
        fixed = verify.run(str(python), only_cuda)
    finally:
        assert tool("revert", python=python).returncode == 0
    for patch in only_cuda:
        says = "non-finite costs" if patch.case.compare == "costs" else "unsafe to autocast"
        for dtype in ("float16", "bfloat16"):
            before, after = released["cases"][patch.id][dtype], fixed["cases"][patch.id][dtype]
            if dtype in FAILS_IN.get(patch.id, (dtype,)):
                assert before["verdict"] != "survived" and says in before["detail"], (patch.id, dtype, before)
            else:
                assert before["verdict"] == "survived", (patch.id, dtype, before)
            assert after["verdict"] == "survived", (patch.id, dtype, after)


def test_verify_gives_the_seeds_message_on_the_release(python: Path) -> None:
    seed = registered("batched-nms-amp-dtype")
    report = json.loads(tool("verify", "--patch", seed.id, "--json", python=python).stdout)["verify"]
    split = report["cases"][seed.id]
    assert split["float16"]["detail"] == "RuntimeError: " + THE_ERROR
    assert split["bfloat16"]["detail"] == "RuntimeError: " + THE_ERROR.replace("Half", "BFloat16")
    assert split["float16"]["gave"] == "batched_nms: 12000 fp32 boxes, fp16 scores, 3 classes (split_thr 10000)"


def test_verify_tells_a_wrong_result_from_a_crash(python: Path) -> None:
    kernel, offsets = patches_named(["nms-fp32-kernel", "batched-nms-fp32-offsets"])
    assert tool("apply", "--patch", kernel.id, python=python).returncode == 0
    try:
        narrowed = tool(
            "verify", "--patch", kernel.id, "--patch", offsets.id, "--dtype", "float16", "--json", python=python
        )
    finally:
        assert tool("revert", python=python).returncode == 0
    narrowed_cases = json.loads(narrowed.stdout)["verify"]["cases"]
    assert {
        id: {dtype: case["verdict"] for dtype, case in by_dtype.items()} for id, by_dtype in narrowed_cases.items()
    } == {
        kernel.id: {"float16": "survived"},
        offsets.id: {"float16": "wrong"},  # the fp16 class offsets overflow
    }
    assert narrowed.returncode == 1


def test_verify_on_mmcv_lite_says_ops_are_missing_and_what_to_install_without_a_traceback(tmp_path: Path) -> None:
    lite = next(r for r in releases.INSTALLED if r.id == "mmcv-lite-2.2.0")
    python = releases.torch_venv(tmp_path / "venv", releases.wheel(lite))
    done = tool("verify", python=python)
    assert done.returncode == 1 and done.stderr == ""
    mmcv_dir = releases.site_packages(python) / "mmcv"
    *others, last = registry.ops(
        [patch for patch in registry.all_patches() if patch.package == "mmcv"]
    )  # no mmdet here
    every_op = f"{', '.join(others)} or {last}" if others else last
    reason = f"unavailable: mmcv at {mmcv_dir} has no compiled ops (mmcv-lite, or a build without MMCV_WITH_OPS=1), so there is no {every_op} to run: install mmcv of the same version in its place (mim install mmcv==VERSION takes a wheel built for your torch and CUDA; pip install mmcv==VERSION builds the ops)"
    assert done.stdout.splitlines()[-1] == reason and done.stdout.count(reason) == 1
    first = registry.all_patches()[0]
    one = tool("verify", "--patch", first.id, python=python)
    assert f"so there is no {first.op} to run: install mmcv" in one.stdout.splitlines()[-1], "the patch's own op"


def test_verify_without_torch_says_first_that_there_are_no_ops_then_no_torch(tmp_path: Path) -> None:
    lite = next(r for r in releases.INSTALLED if r.id == "mmcv-lite-2.2.0")
    python = releases.make_venv(tmp_path / "venv")
    releases.pip_install(python, "--no-index", releases.wheel(lite))
    done = tool("verify", "--json", python=python)
    assert done.returncode == 1 and "Traceback" not in done.stdout + done.stderr
    report = json.loads(done.stdout)["verify"]
    assert report["verdict"] == "unavailable"
    assert report["detail"].startswith(f"mmcv at {releases.site_packages(python) / 'mmcv'} has no compiled ops")
    assert report["detail"].endswith(
        "; torch cannot be imported (ModuleNotFoundError: No module named 'torch'): install torch too"
    )


def test_verify_with_ops_but_without_torch_says_torch_is_missing(tmp_path: Path) -> None:
    python = releases.make_venv(tmp_path / "venv")
    releases.pip_install(python, "--no-index", releases.ops_wheel())
    done = tool("verify", "--json", python=python)
    assert done.returncode == 1 and "Traceback" not in done.stdout + done.stderr
    report = json.loads(done.stdout)["verify"]
    assert (report["verdict"], report["detail"]) == (
        "unavailable",
        "torch cannot be imported (ModuleNotFoundError: No module named 'torch'): install torch",
    )


# --- the seed: batched_nms above split_thr, and the real clients of the nms family ---------------


def split_nms(python: Path, boxes: int) -> Dict[str, Any]:
    [found] = ask(python, "split_nms", [(boxes,)]).values()
    return dict(found)


def test_the_seeds_crash_is_fixed_keeping_the_fp32_boxes_and_comes_back_after_revert(python: Path) -> None:
    registered("batched-nms-amp-dtype")
    nms = releases.site_packages(python) / "mmcv" / "ops" / "nms.py"
    original = releases.released_file(releases.OPS)
    assert nms.read_bytes() == original
    assert split_nms(python, 12000) == {"error": "RuntimeError: " + THE_ERROR}

    assert tool("apply", python=python).returncode == 0
    try:
        patched = split_nms(python, 12000)
    finally:
        assert tool("revert", python=python).returncode == 0
    assert "error" not in patched
    assert patched["keep"] == patched["ref_keep"], "the patched call must keep the same boxes as the fp32 run"
    scores = [row[-1] for row in patched["dets"]]
    assert len(scores) == len(patched["ref_scores"]) > 1000
    assert all(abs(a - b) <= 1e-3 * max(1.0, abs(b)) for a, b in zip(scores, patched["ref_scores"]))

    assert nms.read_bytes() == original
    assert split_nms(python, 12000) == {"error": "RuntimeError: " + THE_ERROR}


def test_below_split_thr_results_are_identical_with_and_without_the_patches(python: Path) -> None:
    before = split_nms(python, 5000)
    assert tool("apply", python=python).returncode == 0
    try:
        after = split_nms(python, 5000)
    finally:
        assert tool("revert", python=python).returncode == 0
    assert "error" not in before and before == after


def test_mmdetection_yolox_with_soft_nms_under_amp_crashes_until_applied(python: Path) -> None:
    registered("soft-nms-fp32-kernel")

    def predict() -> Dict[str, Any]:
        [found] = ask(python, "yolox_soft_nms", [()]).values()
        return dict(found)

    assert predict() == {"error": "RuntimeError: expected scalar type Float but found Half"}
    assert tool("apply", python=python).returncode == 0
    try:
        after = predict()
    finally:
        assert tool("revert", python=python).returncode == 0
    assert "error" not in after and after["boxes"] > 0, after


def test_roi_align_rotated_as_mmcv_1_5_3_has_it_gets_the_import_its_fix_needs_and_runs_on_the_kernels(
    python: Path, tmp_path: Path
) -> None:
    """mmcv 1.5.3's file binds torch only as ``nn``. Patched by ``apply`` on a tree that says
    1.5.3 and put in place of 2.1.0's file (with its import of ``deprecated_api_warning``
    from mmengine, where 2.x moved it), it fails as released and runs once patched, giving
    what 2.1.0's own file gives patched."""
    patch = registered("roi-align-rotated-fp32-kernel")
    [grid] = patch.proofs.grids
    released = releases.released_file(releases.Release("mmcv", "1.5.3", "unpatched"), f"mmcv/{patch.file}").decode()
    moved = released.replace(
        "from ..utils import deprecated_api_warning, ext_loader\n",
        "from mmengine.utils import deprecated_api_warning\nfrom ..utils import ext_loader\n",
    )
    assert moved != released and "\nimport torch\n" not in moved
    tree = tmp_path / "mmcv"
    (tree / "ops").mkdir(parents=True)
    (tree / "__init__.py").write_text("")
    (tree / "version.py").write_text("__version__ = '1.5.3'\n")
    (tree / patch.file).write_text(moved)
    assert tool("apply", "--path", str(tmp_path), "--patch", patch.id).returncode == 0
    patched = (tree / patch.file).read_text()
    assert patched.split("\n")[1].startswith("import torch.nn as nn, torch  # mmcv-patcher: ")
    cases = [*grid.works, *(fails.case for fails in grid.fails)]
    installed = releases.site_packages(python) / "mmcv" / patch.file
    original = installed.read_bytes()
    try:
        installed.write_text(moved)
        as_released = ask(python, grid.runner, cases)
        installed.write_text(patched)
        fixed = ask(python, grid.runner, cases)
    finally:
        installed.write_bytes(original)
    assert {fails.case: as_released[fails.case].get("error") for fails in grid.fails} == {
        fails.case: fails.error for fails in grid.fails
    }
    assert tool("apply", "--patch", patch.id, python=python).returncode == 0
    try:
        assert fixed == ask(python, grid.runner, cases)
    finally:
        assert tool("revert", python=python).returncode == 0
    assert installed.read_bytes() == original


def test_verify_runs_each_case_as_training_does_and_catches_a_crash_in_backward(python: Path) -> None:
    """With the fix of deform_conv's ``backward`` taken out by hand, forward works in bf16 and
    backward fails: verify, which runs the case under autocast and then backward, says so."""
    patch = registered("deform-conv-fp32-kernel")
    installed = releases.site_packages(python) / "mmcv" / patch.file
    original = installed.read_bytes()
    assert tool("apply", "--patch", patch.id, python=python).returncode == 0
    try:
        lines = installed.read_text().splitlines(True)
        index = next(i for i, line in enumerate(lines) if "grad_output.contiguous().type_as(input)" in line)
        lines[index] = lines[index].split("  # mmcv-patcher:")[0].replace(".type_as(input)", "") + "\n"
        installed.write_text("".join(lines))
        report = json.loads(tool("verify", "--patch", patch.id, "--json", python=python).stdout)["verify"]
    finally:
        installed.write_bytes(original)
    bf16 = report["cases"][patch.id]["bfloat16"]
    assert (bf16["verdict"], bf16["detail"].split(":")[0]) == ("crashed", "in backward"), bf16
    assert report["cases"][patch.id]["float16"]["verdict"] == "survived"
