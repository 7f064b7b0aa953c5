#!/usr/bin/env python3
"""One training step of each model family of mmdetection, on the release and patched, in fp32
and under AMP: which train, and where the others crash.

    python scripts/sweep_zoo.py [--dtypes bf16 fp16] [--size 256x256] [--only FAMILY ...] [--json FILE]

Each config of scripts/zoo.csv (a family, a config of mmdet 3.3.0, at least one per family,
then rotated detectors of onedl-mmrotate 1.2.1, named ``mmrotate::PATH``, and the image size
for the few that need more than the default) takes one step of scripts/model_step.py
(random weights, one seeded image with three boxes),
each in its own process with a timeout, on the real mmcv 2.1.0 built with its CPU ops
(cached; the first run builds it) in a throwaway venv: in fp32 on the release, then in each
AMP dtype on the release, then with every patch applied. A progress line per config goes to
stderr; stdout gets the Markdown table README keeps: per config and dtype, ``trains`` or the
crash with its innermost frame inside mmcv (or, for a crash outside mmcv, its innermost
frame: this tool patches mmcv only). ``--json`` also writes every step's report.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, NamedTuple, Sequence

REPOSITORY = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPOSITORY))  # this checkout, for scripts.releases

from scripts import releases  # noqa: E402  (the same cached builds the tests use)

ZOO = REPOSITORY / "scripts" / "zoo.csv"
STEP = REPOSITORY / "scripts" / "model_step.py"


#: What a config of the list imports that mmdet does not declare: PAA's head, scikit-learn.
EXTRAS = ("scikit-learn",)


class Entry(NamedTuple):
    family: str
    config: str
    #: the image size this config needs, when the default is too small for it (an empty cell)
    size: str


def zoo(path: Path, only: Sequence[str]) -> List[Entry]:
    """The configs of ``path`` (a CSV of family, config and size), those of ``only`` when given."""
    with open(path, newline="", encoding="utf-8") as handle:
        entries = [Entry(row["family"], row["config"], row["size"]) for row in csv.DictReader(handle)]
    unknown = set(only) - {entry.family for entry in entries}
    if unknown:
        raise SystemExit(f"no such family in {path}: {', '.join(sorted(unknown))}")
    return [entry for entry in entries if not only or entry.family in only]


def step(python: Path, sites: Sequence[Path], config: str, dtype: str, size: str, timeout: float) -> Dict[str, Any]:
    """scripts/model_step.py's report of one training step, or why there is none."""
    started = time.monotonic()
    try:
        done = subprocess.run(
            [str(python), str(STEP), config, "train", dtype, "--size", size],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            universal_newlines=True,
            env=dict(os.environ, PYTHONPATH=os.pathsep.join(map(str, sites))),
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:g} s", "timed_out": True}
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": f"the step's process exited {done.returncode}: {last[:200]}", "died": True}
    report: Dict[str, Any] = json.loads(lines[-1])
    report["wall"] = time.monotonic() - started
    return report


def verdict(report: Dict[str, Any]) -> str:
    """A table cell: what one step did."""
    if "error" not in report:
        return "trains" if report.get("finite") else "trains, non-finite loss or gradient"
    if report.get("built") is False:
        return f"not built here: {report['error']}"
    if report.get("timed_out") or report.get("died"):
        return str(report["error"])
    if report.get("mmcv_frame"):
        return f"crashes in mmcv: {report['error']} ({report['mmcv_frame']})"
    return f"crashes outside mmcv: {report['error']} ({report['frame']})"


def short(report: Dict[str, Any]) -> str:
    """A word for the progress line."""
    if "error" not in report:
        return "trains"
    return "in mmcv" if report.get("mmcv_frame") else "crashes" if report.get("built", True) else "not built"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--dtypes", nargs="+", choices=("bf16", "fp16"), default=["bf16", "fp16"])
    parser.add_argument("--size", default="256x256", help="HEIGHTxWIDTH of the image (default 256x256)")
    parser.add_argument("--only", nargs="*", default=[], metavar="FAMILY", help="only these families of the list")
    parser.add_argument("--configs", type=Path, default=ZOO, help=f"the list (default {ZOO.relative_to(REPOSITORY)})")
    parser.add_argument("--timeout", type=float, default=900, help="seconds a step may take (default 900)")
    parser.add_argument("--json", type=Path, help="write every step's report here")
    args = parser.parse_args()
    entries = zoo(args.configs, args.only)
    sites = [releases.mmdet_site()]
    if any(entry.config.startswith("mmrotate::") for entry in entries):
        sites.append(releases.mmrotate_site())
    columns = ["fp32"] + [f"{dtype} {state}" for dtype in args.dtypes for state in ("release", "patched")]
    reports: Dict[str, Dict[str, Dict[str, Any]]] = {entry.config: {} for entry in entries}
    with tempfile.TemporaryDirectory() as scratch:
        python = releases.torch_venv(Path(scratch) / "venv", releases.ops_wheel())
        releases.pip_install(python, *EXTRAS, deps=True)
        for state in ("release", "patched"):
            if releases.tool(python, "apply" if state == "patched" else "revert").returncode != 0:
                raise SystemExit(
                    f"could not {'apply' if state == 'patched' else 'revert'} the patches in the sweep's venv"
                )
            for index, entry in enumerate(entries, 1):
                done = []
                for dtype in (["fp32"] if state == "release" else []) + list(args.dtypes):
                    column = "fp32" if dtype == "fp32" else f"{dtype} {state}"
                    reports[entry.config][column] = step(
                        python, sites, entry.config, dtype, entry.size or args.size, args.timeout
                    )
                    done.append(f"{column} {short(reports[entry.config][column])}")
                print(
                    f"[{state} {index}/{len(entries)}] {entry.family}: {', '.join(done)}", file=sys.stderr, flush=True
                )
    if args.json:
        args.json.write_text(json.dumps({"size": args.size, "reports": reports}, indent=1) + "\n")
    print(
        f"One training step at {args.size} (or the size given), {releases.MMDET}, mmcv 2.1.0 with CPU ops,"
        " CPU autocast for the AMP dtypes.\n"
    )
    print("| family | config | " + " | ".join(columns) + " |")
    print("| --- | --- | " + " | ".join("---" for _ in columns) + " |")
    for entry in entries:
        cells = [verdict(reports[entry.config][column]).replace("|", "\\|") for column in columns]
        sized = f" at {entry.size}" if entry.size else ""
        print(f"| {entry.family} | `{entry.config}`{sized} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
