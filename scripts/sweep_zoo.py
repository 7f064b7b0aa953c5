#!/usr/bin/env python3
"""One training step of each model family of mmdetection, on the release and patched, in fp32
and under AMP: which train, and where the others crash.

    python scripts/sweep_zoo.py [--dtypes bf16 fp16] [--size 256x256] [--only FAMILY ...] [--rules cpu|cuda] [--checkout DIR] [--json FILE]

Each config of scripts/zoo.csv (a family, a config of mmdet 3.3.0, at least one per family,
then rotated detectors of onedl-mmrotate 1.2.1, named ``mmrotate::PATH``, and Co-DETR, a
project of mmdetection's repository that no release ships, named ``checkout::PATH`` and
swept with ``--checkout``; the image size and the number of images
for the few that need more than the default) takes one step of scripts/model_step.py
(random weights, seeded images with three boxes),
each in a process of its own with a timeout (forked by one ``model_step.py --serve``:
:mod:`scripts.steps`), on the real mmcv 2.1.0 built with its CPU ops
(cached; the first run builds it) in a throwaway venv: in fp32 on the release, then in each
AMP dtype on the release, then with every patch applied (under the CPU's autocast rules, or
with ``--rules cuda`` under CUDA's, simulated). A progress line per config goes to
stderr. Each config's row (per column ``trains`` or the crash with its innermost frame inside
mmcv, or, for a crash outside mmcv, its innermost frame) goes into the dtype's result file
(:mod:`scripts.results`) as soon as the config is done, with the run's date, machine and
versions; ``python scripts/document.py`` then makes docs/zoo.md's tables from them.
``--json`` also writes every step's report.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import shlex
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, List, NamedTuple, Optional, Sequence

REPOSITORY = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPOSITORY))  # this checkout, for scripts.releases

from scripts import machine, releases, results  # noqa: E402  (the same cached builds the tests use)
from scripts.steps import Steps  # noqa: E402

ZOO = REPOSITORY / "scripts" / "zoo.csv"
#: the config directories of mmdet 3.3.0 and onedl-mmrotate 1.2.1 that the list leaves out, and why
UNLISTED = REPOSITORY / "scripts" / "zoo-unlisted.csv"


#: What configs of the list import that mmdet and mmrotate do not declare: PAA's and LAD's
#: heads, scikit-learn; BoxInst's pipeline, scikit-image; ReDet's backbone, e2cnn; the
#: trackers, lap and motmetrics. (mmrotate's ConvNeXt imports mmcls, whose last release
#: asserts an mmcv older than 2.1.0.)
EXTRAS = ("scikit-learn", "scikit-image", "e2cnn", "lap", "motmetrics")


#: How the list names a config of a clone of mmdetection (its ``projects/``, which ship in no
#: release): ``checkout::PATH``, PATH in the clone that ``--checkout`` names
CHECKOUT = "checkout::"


def step_config(config: str, checkout: Optional[Path]) -> str:
    """The config ``scripts/model_step.py`` is given for ``config`` of the list: a clone's
    as its file in ``checkout``, any other as it is."""
    if not config.startswith(CHECKOUT):
        return config
    if checkout is None:
        raise SystemExit(f"{config} is a config of a clone of mmdetection: --checkout names one")
    return str(checkout / config[len(CHECKOUT) :])


class Entry(NamedTuple):
    family: str
    config: str
    #: the image size this config needs, when the default is too small for it (an empty cell)
    size: str
    #: how many images a step takes, when one is too few (an empty cell: one): a BatchNorm over
    #: a 1x1 map, as ResNeSt's split attention and SSDLite's last layers have, needs two
    batch: str = ""


def zoo(path: Path, only: Sequence[str]) -> List[Entry]:
    """The configs of ``path`` (a CSV of family, config and size), those of ``only`` when given."""
    with open(path, newline="", encoding="utf-8") as handle:
        entries = [Entry(row["family"], row["config"], row["size"], row["batch"]) for row in csv.DictReader(handle)]
    unknown = set(only) - {entry.family for entry in entries}
    if unknown:
        raise SystemExit(f"no such family in {path}: {', '.join(sorted(unknown))}")
    return [entry for entry in entries if not only or entry.family in only]


def unlisted(path: Path = UNLISTED) -> Dict[str, str]:
    """The config directories the list leaves out (``mmrotate::DIR`` for mmrotate's), each
    with why: it holds no model, only dataset variants of listed models, or a model that
    needs what cannot be had here."""
    with open(path, newline="", encoding="utf-8") as handle:
        return {row["directory"]: row["why"] for row in csv.DictReader(handle)}


def step(
    steps: Steps, config: str, dtype: str, size: str, timeout: float, batch: str = "", rules: str = "cpu"
) -> Dict[str, Any]:
    """scripts/model_step.py's report of one training step, or why there is none."""
    started = time.monotonic()
    options = ["--size", size, *(["--batch", batch] if batch else []), "--rules", rules]
    options += ["--peak"] if dtype == "fp32" else []
    report = steps.step([config, "train", dtype, *options], timeout)
    report["wall"] = time.monotonic() - started
    return report


#: The largest finite value of each AMP dtype
LARGEST = {"fp16": 65504.0, "bf16": 3.3895313892515355e38}


def verdict(report: Dict[str, Any], dtype: str = "fp32", fp32: Optional[Dict[str, Any]] = None) -> str:
    """A table cell: what one step in ``dtype`` did; a non-finite one says so, and where the
    config's ``fp32`` step had activations past the dtype's largest value, how far they reach."""
    if "error" not in report:
        if report.get("finite"):
            return "trains"
        reach = (fp32 or {}).get("peak")
        if reach is not None and reach > LARGEST.get(dtype, float("inf")):
            return (
                f"trains, non-finite loss or gradient: its fp32 activations reach {reach:.1e},"
                f" past {dtype}'s largest value, {LARGEST[dtype]:g}"
            )
        return "trains, non-finite loss or gradient"
    if report.get("built") is False:
        return f"not built here: {report['error']}"
    if report.get("timed_out") or report.get("died"):
        return str(report["error"])
    if report.get("package_frame"):  # in mmcv, or in mmdet's or mmrotate's own code
        return f"crashes in {report['package_frame'].split('/')[0]}: {report['error']} ({report['package_frame']})"
    return f"crashes outside mmcv: {report['error']} ({report['frame']})"


def short(report: Dict[str, Any]) -> str:
    """A word for the progress line."""
    if "error" not in report:
        return "trains"
    if report.get("package_frame"):
        return f"in {report['package_frame'].split('/')[0]}"
    return "crashes" if report.get("built", True) else "not built"


#: What the run's header says of the packages the steps ran on, by distribution name.
VERSIONED = ("torch", "mmcv", "mmengine", "mmdet", "onedl-mmrotate")
VERSIONS = f"""
import json, platform
from importlib.metadata import version, PackageNotFoundError
def of(name):
    try:
        return version(name)
    except PackageNotFoundError:
        return None
found = {{name: of(name) for name in {VERSIONED!r}}}
found["python"] = platform.python_version()
print(json.dumps(found))
"""


def versions(python: Path) -> Dict[str, Any]:
    """The versions of :data:`VERSIONED` (and Python) that ``python`` imports."""
    done = subprocess.run([str(python), "-c", VERSIONS], stdout=subprocess.PIPE, universal_newlines=True, check=True)
    found: Dict[str, Any] = json.loads(done.stdout)
    return {name: each for name, each in found.items() if each is not None}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--dtypes", nargs="+", choices=("bf16", "fp16"), default=["bf16", "fp16"])
    parser.add_argument("--size", default="256x256", help="HEIGHTxWIDTH of the image (default 256x256)")
    parser.add_argument("--only", nargs="*", default=[], metavar="FAMILY", help="only these families of the list")
    parser.add_argument("--configs", type=Path, default=ZOO, help=f"the list (default {ZOO.relative_to(REPOSITORY)})")
    parser.add_argument("--timeout", type=float, default=900, help="seconds a step may take (default 900)")
    parser.add_argument(
        "--results",
        type=Path,
        default=results.RESULTS,
        help=f"where the result files are (default {results.RESULTS.relative_to(REPOSITORY)})",
    )
    parser.add_argument(
        "--rules",
        choices=("cpu", "cuda"),
        default="cpu",
        help="whose autocast rules the AMP steps run under: the CPU's (default), or CUDA's, simulated"
        " (scripts/cuda_rules.py; the results go to zoo-DTYPE-cuda.json)",
    )
    parser.add_argument(
        "--checkout",
        type=Path,
        help="a clone of mmdetection, for the list's configs in its projects (checkout::PATH); without it those"
        " are left out, unless --only names them",
    )
    parser.add_argument("--json", type=Path, help="write every step's report here")
    args = parser.parse_args()
    entries = zoo(args.configs, args.only)
    if args.checkout is None and not args.only:
        entries = [entry for entry in entries if not entry.config.startswith(CHECKOUT)]
    for entry in entries:
        step_config(entry.config, args.checkout)  # before minutes of setting up: a clone's config needs one
    order = [entry.config for entry in zoo(args.configs, ())]
    reports: Dict[str, Dict[str, Dict[str, Any]]] = {entry.config: {} for entry in entries}
    with contextlib.ExitStack() as stack:
        scratch = stack.enter_context(tempfile.TemporaryDirectory())
        python = releases.detector_venv(Path(scratch) / "venv")
        releases.pip_install(python, *EXTRAS, deps=True)
        if args.checkout is not None:  # after site-packages: the venv's mmdet, not a clone's, is imported
            (releases.site_packages(python) / "zz_mmdetection_clone.pth").write_text(f"{args.checkout.resolve()}\n")
        header = {
            "command": shlex.join(["python", "scripts/sweep_zoo.py", *sys.argv[1:]]),
            "date": datetime.now(timezone.utc).date().isoformat(),
            "size": args.size,
            "machine": machine.cpu(),
            "versions": versions(python),
        }
        documents = {dtype: results.load(results.name(dtype, args.rules), args.results) for dtype in args.dtypes}
        runs = {dtype: results.start_run(document, dict(header)) for dtype, document in documents.items()}
        steps = stack.enter_context(Steps(python, Path(scratch) / "steps.log"))
        for index, entry in enumerate(entries, 1):
            report = reports[entry.config]
            for state in ("release", "patched"):
                command = "apply" if state == "patched" else "revert"
                if releases.tool(python, command).returncode != 0:
                    raise SystemExit(f"could not {command} the patches in the sweep's venv")
                for dtype in (["fp32"] if state == "release" else []) + list(args.dtypes):
                    column = "fp32" if dtype == "fp32" else f"{dtype} {state}"
                    size = entry.size or args.size
                    config = step_config(entry.config, args.checkout)
                    report[column] = step(steps, config, dtype, size, args.timeout, entry.batch, args.rules)
            for dtype, document in documents.items():
                row: Dict[str, Any] = {"family": entry.family, "config": entry.config, "size": entry.size}
                row["batch"] = entry.batch
                row["run"] = runs[dtype]
                row["fp32"] = verdict(report["fp32"])
                for state in ("release", "patched"):
                    row[state] = verdict(report[f"{dtype} {state}"], dtype, report["fp32"])
                runs[dtype] = results.put(document, row, order)
                results.save(document, args.results)
            done = ", ".join(f"{column} {short(each)}" for column, each in report.items())
            print(f"[{index}/{len(entries)}] {entry.family}: {done}", file=sys.stderr, flush=True)
    if args.json:
        args.json.write_text(json.dumps({"size": args.size, "reports": reports}, indent=1) + "\n")
    print(
        f"wrote {', '.join(str(results.path(results.name(dtype, args.rules), args.results)) for dtype in args.dtypes)};"
        " run python scripts/document.py"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
