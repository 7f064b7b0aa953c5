"""The sweep's result files and the zoo page made from them: rows merge by config, each row
names the run that made it, and every number the page says is counted from the rows."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict

import pytest

from scripts import bench_suite, document, results, sweep_zoo

RUN = {"command": "python scripts/sweep_zoo.py", "date": "2026-12-01", "size": "256x256", "machine": "cpu x2"}


def row(config: str, fp32: str = "trains", release: str = "trains", patched: str = "trains") -> Dict[str, Any]:
    return {
        "family": config.title(),
        "config": config,
        "size": "",
        "fp32": fp32,
        "release": release,
        "patched": patched,
    }


def swept(*rows: Dict[str, Any]) -> Dict[str, Any]:
    """A bf16 result file that one run made, holding ``rows``."""
    return {"dtype": "bf16", "runs": [dict(RUN, versions={"mmcv": "2.1.0"})], "rows": [dict(r, run=0) for r in rows]}


def test_a_non_finite_step_says_how_far_the_fp32_activations_reach_where_the_dtype_cannot_hold_them() -> None:
    non_finite = {"losses": {"loss": float("nan")}, "finite": False}
    fp32 = {"losses": {"loss": 1.0}, "finite": True, "peak": 1.7e9}
    assert sweep_zoo.verdict(non_finite, "fp16", fp32) == (
        "trains, non-finite loss or gradient: its fp32 activations reach 1.7e+09, past fp16's largest value, 65504"
    )
    assert sweep_zoo.verdict(non_finite, "bf16", fp32) == "trains, non-finite loss or gradient"
    assert sweep_zoo.verdict(non_finite, "fp16", dict(fp32, peak=60000.0)) == "trains, non-finite loss or gradient"
    assert sweep_zoo.verdict(dict(non_finite, finite=True), "fp16", fp32) == "trains"


def test_a_config_of_a_clone_is_its_file_in_the_clone_and_needs_one() -> None:
    clone = Path("/src/mmdetection")
    config = "checkout::projects/CO-DETR/configs/codino/co_dino_5scale_r50_lsj_8xb2_1x_coco.py"
    assert sweep_zoo.step_config(config, clone) == str(clone / config.split("::")[1])
    assert sweep_zoo.step_config("mmrotate::r3det/r3det.py", clone) == "mmrotate::r3det/r3det.py"
    with pytest.raises(SystemExit, match="--checkout names one"):
        sweep_zoo.step_config(config, None)


def test_a_rerun_row_replaces_the_old_one_in_the_lists_order_and_names_its_own_run() -> None:
    made = swept(row("a"), row("b"))
    later = results.start_run(made, dict(RUN, date="2026-12-05", versions={}))
    index = results.put(made, dict(row("a", release="crashes in mmcv: X"), run=later), ["a", "b"])
    assert [r["config"] for r in made["rows"]] == ["a", "b"]
    assert made["rows"][0]["release"] == "crashes in mmcv: X" and made["rows"][0]["run"] == index == 1
    assert [run["date"] for run in made["runs"]] == ["2026-12-01", "2026-12-05"]


def test_a_run_no_row_names_any_more_is_dropped_and_the_others_renumbered() -> None:
    made = swept(row("a"))
    later = results.start_run(made, dict(RUN, date="2026-12-05", versions={}))
    assert results.put(made, dict(row("a"), run=later), ["a"]) == 0
    assert [run["date"] for run in made["runs"]] == ["2026-12-05"]


def test_a_result_file_is_written_whole_and_read_back(tmp_path: Path) -> None:
    made = swept(row("a"))
    results.save(made, tmp_path)
    assert results.load("bf16", tmp_path) == made
    assert [path.name for path in tmp_path.iterdir()] == ["zoo-bf16.json"], "no temporary left behind"
    assert results.load("fp16", tmp_path) == {"dtype": "fp16", "runs": [], "rows": []}


def test_the_summary_counts_the_rows() -> None:
    made = swept(
        row("fixed", release="crashes in mmcv: E (mmcv/ops/nms.py:27 in forward)"),
        row("outside", patched="crashes outside mmcv: E (torch/x.py:1 in f)"),
        row("in-mmdet", patched="crashes in mmdet: E (mmdet/x.py:1 in f)"),
        row("no-kernel", fp32="crashes in mmcv: no cpu kernel"),
        row("fine"),
    )
    assert document.summary(made).splitlines() == [
        "- 5 configs; 1 do not train in fp32, so their rows say nothing about AMP.",
        "- Of the 4 that train in fp32, 1 crash inside mmcv under bf16 on the release;"
        " with every patch applied 1 of them train, and 0 of the 4 crash inside mmcv.",
        "- 2 crash outside mmcv with every patch applied: Outside (outside mmcv), In-Mmdet (in mmdet).",
    ]


def test_a_table_row_names_its_run_and_the_run_its_date_machine_and_versions() -> None:
    table = document.zoo_table(swept(row("a", release="crashes in mmcv: x | y")))
    assert "| A | `a` | trains | crashes in mmcv: x \\| y | trains | 1 |" in table.splitlines()
    assert "1. `python scripts/sweep_zoo.py`, 2026-12-01, 256x256, cpu x2: mmcv 2.1.0" in table


FOCAL = 'crashes in mmcv: NotImplementedError: "sigmoid_focal_loss_forward_cuda_kernel" ... (mmcv/ops/focal_loss.py:46 in forward)'
NO_KERNEL = "crashes in mmcv: RuntimeError: carafe_forward_impl: ... (mmcv/ops/carafe.py:142 in forward)"


def test_the_cuda_table_says_where_and_why_the_cpus_rules_end_otherwise() -> None:
    cuda = swept(
        row("retina", release=FOCAL), row("carafe"), row("same", release="crashes in mmdet: E (mmdet/x.py:3 in f)")
    )
    cpu = swept(
        row("retina"),
        row("carafe", NO_KERNEL, NO_KERNEL, NO_KERNEL),
        row("same", release="crashes in mmdet: F (mmdet/x.py:9 in f)"),
    )
    lines = document.differences(cuda, cpu).splitlines()
    assert lines[2] == (
        "- Retina, release: crashes in mmcv/ops/focal_loss.py under CUDA's rules, trains under the CPU's: "
        + document.WHY_CUDA_DIFFERS["mmcv/ops/focal_loss.py"]
        + "."
    )
    assert [line.split(":")[0] for line in lines[3:]] == ["- Carafe, fp32", "- Carafe, release", "- Carafe, patched"]
    assert all(document.WHY_CUDA_DIFFERS["mmcv/ops/carafe.py"] in line for line in lines[3:])
    assert len(lines) == 6, "the same place with another message or line is no difference"


def test_a_crash_is_told_by_its_file_a_clones_project_too() -> None:
    cell = "crashes in projects: AssertionError: x (projects/CO-DETR/codetr/co_dino_head.py:480 in get_aux_targets)"
    assert document.outcome(cell) == "crashes in projects/CO-DETR/codetr/co_dino_head.py"
    assert document.outcome("crashes in mmcv: E: x (mmcv/ops/nms.py:27 in forward)") == "crashes in mmcv/ops/nms.py"


def test_a_message_explains_a_difference_before_the_file_it_came_from() -> None:
    unsafe = "crashes in mmdet: RuntimeError: ... unsafe to autocast. (mmdet/models/losses/focal_loss.py:98 in f)"
    lines = document.differences(swept(row("tood", patched=unsafe)), swept(row("tood"))).splitlines()
    assert lines[-1].endswith(document.WHY_CUDA_DIFFERS["unsafe to autocast"] + ".")


def test_a_difference_no_file_explains_is_put_down_to_the_autocasts_lists() -> None:
    cuda, cpu = swept(row("yolof")), swept(row("yolof", release="crashes outside mmcv: E (torch/x.py:1 in f)"))
    assert document.differences(cuda, cpu).splitlines()[-1].endswith(document.OTHER_CAUSE + ".")
    assert document.differences(cpu, cpu) == ""


TABLE = results.Table("What was timed.", ["call", "median"], [["`nms`", "221.6 ms"], ["`soft_nms`", "-"]])


def test_a_benchmark_run_replaces_the_run_of_the_same_command_and_keeps_the_others(tmp_path: Path) -> None:
    results.record("bench_x", [], {"mmcv": "2.1.0"}, [TABLE], tmp_path)
    results.record("bench_x", ["--rounds", "8"], {"mmcv": "2.1.0"}, [TABLE], tmp_path)
    results.record("bench_x", [], {"mmcv": "2.2.0"}, [TABLE], tmp_path)
    runs = results.load_bench("bench_x", tmp_path)
    assert [(run["command"], run["versions"]["mmcv"]) for run in runs] == [
        ("python scripts/bench_x.py --rounds 8", "2.1.0"),
        ("python scripts/bench_x.py", "2.2.0"),
    ]
    assert runs[0]["tables"] == [TABLE._asdict()] and runs[0]["date"] and runs[0]["machine"]


def test_a_benchmark_table_right_aligns_only_its_numbers() -> None:
    assert TABLE.markdown().splitlines() == [
        "| call | median |",
        "| --- | ---: |",
        "| `nms` | 221.6 ms |",
        "| `soft_nms` | - |",
    ]


def test_the_benchmarks_page_says_which_run_made_each_table() -> None:
    run = dict(RUN, versions={"torch": "2.13.0"}, tables=[TABLE._asdict()])
    assert document.bench_runs([run]).splitlines()[:3] == [
        "Run: `python scripts/sweep_zoo.py`, 2026-12-01, cpu x2: torch 2.13.0.",
        "",
        "What was timed.",
    ]


def test_the_suites_time_is_told_by_test_file_the_longest_first(tmp_path: Path) -> None:
    junit = tmp_path / "suite.xml"
    junit.write_text(
        """<testsuites><testsuite>
        <testcase classname="tests.test_steps" name="test_a_step" time="90.0"/>
        <testcase classname="tests.test_steps" name="test_another_step" time="30.0"/>
        <testcase classname="tests.test_cli.TestHelp" name="test_help" time="60.0"/>
        </testsuite></testsuites>"""
    )
    assert bench_suite.by_file(junit) == [
        ["`tests/test_steps.py`", "2", "2.0", "67%"],
        ["`tests/test_cli.py`", "1", "1.0", "33%"],
    ]
