"""The training steps of real models on the real mmcv 2.1.0 built with its CPU ops, mmdet
3.3.0 and onedl-mmrotate 1.2.1 (scripts/model_step.py, random weights): every patch's model
steps as its module declares them (crash on the release, train once applied, crash again
after revert; those of the kernels mmcv builds for CUDA only under CUDA's rules, simulated),
and the seed's whole scenario: Faster R-CNN at 2666x1600 in bf16, at 128x128 in fp16, and in
fp16 under CUDA's rules, simulated.

A test that needs a patch whose module is not there is skipped, so removing a patch module
leaves the suite green.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, Tuple

import pytest

from mmcv_patcher import registry
from scripts import releases, sweep_zoo
from scripts.steps import Steps
from tests.fixtures import THE_ERROR, applied, patches_named, registered, tool

pytestmark = [pytest.mark.e2e, pytest.mark.release]


@pytest.fixture(scope="module")
def mmdet_site() -> Path:
    return releases.mmdet_site()


# --- every patch's model steps: a real model that crashes on the release --------------------------

#: ``model_step(config, dtype, *options)``: the report of one training step
ModelStep = Callable[..., Dict[str, Any]]


@pytest.fixture(scope="module")
def model_step(python: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModelStep]:
    """A training step of ``config`` in ``dtype`` (``options``: scripts/model_step.py's), on
    the venv's own mmcv, mmdet and mmrotate as their files are when it is asked for: one
    ``model_step.py --serve`` for the module (:mod:`scripts.steps`), which runs each step in a
    child of its own."""
    log = tmp_path_factory.mktemp("steps") / "stderr.txt"

    with Steps(python, log) as steps:

        def step(config: str, dtype: str, *options: str) -> Dict[str, Any]:
            report = steps.step([config, "train", dtype, *options])
            assert not report.get("died"), (report, log.read_text()[-3000:])
            return report

        yield step


STEPS = [
    pytest.param(patch.id, index, id=f"{patch.id}-{step.config.rpartition('/')[2]}-{step.rules}")
    for patch in registry.all_patches()
    for index, step in enumerate(patch.proofs.steps)
]


@pytest.mark.parametrize("patch_id, index", STEPS)
def test_each_model_step_crashes_on_the_release_trains_once_applied_and_crashes_again(
    python: Path, model_step: ModelStep, patch_id: str, index: int
) -> None:
    patch = registered(patch_id)
    step = patch.proofs.steps[index]
    patches_named(step.after)
    says = step.says or {"bf16": "BFloat16", "fp16": "Half"}[step.dtype]

    def run() -> Dict[str, Any]:
        return model_step(step.config, step.dtype, "--size", step.size, "--rules", step.rules)

    try:
        applied(python, *step.after)
        before = run()
        applied(python, patch.id)
        trained = run()
        assert tool("revert", "--patch", patch.id, python=python).returncode == 0
        again = run()
    finally:
        assert tool("revert", python=python).returncode == 0
    assert (before.get("package_frame") or "").startswith(f"{step.crashes_in}:") and says in before["error"], before
    assert "error" not in trained and trained["finite"], trained
    assert again["error"] == before["error"]


# --- what the zoo's non-finite rows are --------------------------------------------------------------

#: HRNet with random weights: its backbone's batch norms are frozen (``norm_eval``), meant for
#: a pretrained backbone's statistics, so at random weights they do not normalise
HRNET = "hrnet/fcos_hrnetv2p-w18-gn-head_4xb4-1x_coco.py"


def test_a_model_whose_fp32_activations_pass_fp16s_largest_value_has_a_non_finite_fp16_step(
    model_step: ModelStep,
) -> None:
    fp32 = model_step(HRNET, "fp32", "--size", "128x128", "--peak")
    fp16 = model_step(HRNET, "fp16", "--size", "128x128", "--rules", "cuda")
    assert fp32["finite"] and fp32["peak"] > sweep_zoo.LARGEST["fp16"], fp32
    assert "error" not in fp16 and not fp16["finite"], fp16


# --- what the step's input is ----------------------------------------------------------------------

#: Strong Baselines: large scale jitter, every batch padded to 1024x1024 by its data preprocessor
STRONG_BASELINES = "strong_baselines/mask-rcnn_r50-caffe_fpn_rpn-2conv_4conv1fc_syncbn-all_lsj-100e_coco.py"


def test_a_batch_the_config_pads_to_its_crop_size_is_padded_to_the_steps_size(model_step: ModelStep) -> None:
    step = model_step(STRONG_BASELINES, "fp32", "--size", "64x96")
    assert step["input"] == "64x96" and step["finite"], step


#: Mask2Former's video instance segmenter: its loss turns the masks it is given into tensors
MASK2FORMER_VIS = "mask2former_vis/mask2former_r50_8xb2-8e_youtubevis2019.py"


def test_each_round_and_the_peaks_forward_get_a_batch_of_their_own(model_step: ModelStep) -> None:
    step = model_step(MASK2FORMER_VIS, "fp32", "--size", "64x64", "--rounds", "2", "--peak")
    assert "error" not in step and len(step["seconds"]) == 2 and step["peak"] > 0, step


# --- the step server (scripts/steps.py) ------------------------------------------------------------


def test_the_steps_the_workers_run_side_by_side_ask_for_no_more_threads_than_the_machine_has() -> None:
    """Each step's torch takes ``OMP_NUM_THREADS`` threads (tests/conftest.py): more than the
    CPUs between them and their threads wait on each other, a step several times as long."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    assert int(os.environ["OMP_NUM_THREADS"]) * workers <= max(workers, os.cpu_count() or 1)


def test_a_step_past_its_timeout_is_stopped_with_its_server_and_the_next_step_starts_another(
    python: Path, tmp_path: Path
) -> None:
    with Steps(python, tmp_path / "log") as steps:
        stopped = steps.step([FASTER_RCNN, "train", "fp32", "--size", "64x64"], timeout=0.1)
        answered = steps.step(["no-such-config.py", "train", "fp32"])
    assert stopped == {"error": "timed out after 0.1 s", "timed_out": True}
    assert answered["built"] is False and "no-such-config.py" in answered["error"], answered


def test_a_step_given_wrong_arguments_is_answered_with_why_and_the_server_answers_the_next(
    python: Path, tmp_path: Path
) -> None:
    with Steps(python, tmp_path / "log") as steps:
        wrong = steps.step([FASTER_RCNN, "train", "fp64"])
        answered = steps.step(["no-such-config.py", "train", "fp32"])
    assert wrong["died"] and wrong["error"].startswith("SystemExit: 2: "), wrong
    assert "invalid choice: 'fp64'" in wrong["error"], "with the log's last line: argparse's message"
    assert answered["built"] is False, answered


def test_every_config_of_the_zoo_list_is_one_its_package_ships_and_each_family_is_named_once(
    mmdet_site: Path,
) -> None:
    entries = sweep_zoo.zoo(sweep_zoo.ZOO, ())
    shipped = {"mmdet": mmdet_site / "mmdet", "mmrotate": releases.mmrotate_site() / "mmrotate"}
    missing = []
    for entry in entries:
        if entry.config.startswith(sweep_zoo.CHECKOUT):  # a clone's project, which no release ships
            continue
        package, _, path = entry.config.rpartition("::")
        if not (shipped[package or "mmdet"] / ".mim" / "configs" / path).is_file():
            missing.append(entry.config)
    assert missing == []
    families = [entry.family for entry in entries]
    assert len(set(families)) == len(families), "--only names a family: each once"


def test_every_config_directory_of_mmdet_and_mmrotate_is_in_the_zoo_list_or_left_out_with_why(
    mmdet_site: Path,
) -> None:
    listed = {entry.config.rpartition("/")[0] for entry in sweep_zoo.zoo(sweep_zoo.ZOO, ())}
    left_out = sweep_zoo.unlisted()
    directories = {
        prefix + path.name
        for prefix, configs in (
            ("", mmdet_site / "mmdet" / ".mim" / "configs"),
            ("mmrotate::", releases.mmrotate_site() / "mmrotate" / ".mim" / "configs"),
        )
        for path in configs.iterdir()
        if path.is_dir() and any(path.glob("*.py")) and not path.name.startswith("_")
    }
    assert listed & set(left_out) == set(), "a directory is listed or left out, not both"
    assert directories - listed - set(left_out) == set(), "a directory neither listed nor left out"
    assert set(left_out) <= directories and all(left_out.values())


# --- the seed's whole scenario: a training step of mmdet's Faster R-CNN at 2666x1600 in bf16 -----

#: the seed's model and input size (height x width)
FASTER_RCNN, SEED_SIZE = "faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py", "1600x2666"


def released_applied_reverted(
    python: Path, run: Callable[[], Dict[str, Any]], *ids: str
) -> Tuple[Dict[str, Any], Dict[str, Any], Dict[str, Any]]:
    """What ``run()`` gives on the release, with the patches ``ids`` applied (every patch
    where none is named), and after ``revert``."""
    before = run()
    assert tool("apply", *(f"--patch={id}" for id in ids), python=python).returncode == 0
    try:
        applied = run()
    finally:
        assert tool("revert", python=python).returncode == 0
    return before, applied, run()


def _installed_files(python: Path) -> Dict[str, bytes]:
    package = releases.site_packages(python) / "mmcv"
    return {str(path.relative_to(package)): path.read_bytes() for path in package.rglob("*.py")}


def test_the_seeds_training_step_in_bf16_crashes_trains_once_applied_and_revert_gives_back_the_release(
    python: Path, model_step: ModelStep
) -> None:
    """At the seed's size; that the step crashes again after ``revert`` is shown at 256x256 by
    ``nms-fp32-kernel``'s own step of this config: here revert gives back every byte."""
    patches_named(["nms-fp32-kernel", "roi-align-fp32-kernel"])  # its RPN's NMS, then its RoI head's RoIAlign
    released = _installed_files(python)
    before = model_step(FASTER_RCNN, "bf16", "--size", SEED_SIZE)
    assert before["error"] == "RuntimeError: expected scalar type Float but found BFloat16"
    assert {"loss_and_predict", "batched_nms", "nms"} <= set(before["passed"]), (
        "in the RPN's proposals, as users report it"
    )

    assert tool("apply", python=python).returncode == 0
    try:
        trained = model_step(FASTER_RCNN, "bf16", "--size", SEED_SIZE)
    finally:
        assert tool("revert", python=python).returncode == 0
    assert "error" not in trained, trained
    assert trained["finite"] and set(trained["losses"]) == {"loss_rpn_cls", "loss_rpn_bbox", "loss_cls", "loss_bbox"}, (
        trained
    )

    assert _installed_files(python) == released, "every mmcv file byte-identical to the release"


def test_the_seeds_training_step_in_fp16_crashes_trains_once_applied_and_crashes_again(
    python: Path, model_step: ModelStep
) -> None:
    """The seed's config in fp16, under torch's CPU autocast (mmengine's takes bf16 only).
    fp16 convolutions on these CPUs are about 25 times slower than fp32, so the step runs at
    128x128 instead of 2666x1600, with the RPN's ``split_thr`` lowered to 100 so that its
    ``batched_nms`` takes the per-class path the seed's 2666x1600 input takes at 10000:
    there, on the release, the fp16 boxes meet mmcv's NMS kernel, which takes fp32 only."""
    registered("nms-fp32-kernel")
    options = ("--size", "128x128", "--rpn-split-thr", "100")
    before, trained, again = released_applied_reverted(python, lambda: model_step(FASTER_RCNN, "fp16", *options))
    assert before["error"] == "RuntimeError: expected scalar type Float but found Half", before
    assert {"batched_nms", "nms"} <= set(before["passed"]) and before["package_frame"].startswith("mmcv/ops/nms.py:")
    assert "error" not in trained and trained["finite"], trained
    assert again["error"] == before["error"]


def test_the_seeds_step_under_cudas_rules_gives_the_seeds_message_trains_once_applied_and_gives_it_again(
    python: Path, model_step: ModelStep
) -> None:
    """The seed's config in fp16 under CUDA's autocast rules and mmcv's CUDA kernels' dtypes,
    simulated (scripts/cuda_rules.py), as users train it on a GPU: the RPN's boxes come out
    fp32 and its scores fp16, CUDA's NMS kernel takes them, and ``batched_nms`` puts Float
    into Half: the seed's own message, which CPU autocast never reaches (its fp16 boxes fail
    in the CPU NMS kernel first). 128x128 with the RPN's ``split_thr`` lowered to 100, so that
    its ``batched_nms`` takes the per-class path; the seed's patch alone makes it train."""
    seed = registered("batched-nms-amp-dtype")
    options = ("--size", "128x128", "--rpn-split-thr", "100", "--rules", "cuda")
    before, trained, again = released_applied_reverted(
        python, lambda: model_step(FASTER_RCNN, "fp16", *options), seed.id
    )
    assert before["error"] == "RuntimeError: " + THE_ERROR, before
    assert before["package_frame"].startswith("mmcv/ops/nms.py:") and before["passed"][-1] == "batched_nms", before
    assert "error" not in trained and trained["finite"], trained
    assert again["error"] == before["error"]
