#!/usr/bin/env python3
"""Wall time of the CLI on a real installed release, against two floors.

    python scripts/bench_cli.py [--runs 30]

Makes a throwaway venv holding the real mmcv 1.7.2 and this tool (pip-installed, not
editable), then times, interleaved so drift hits all alike:

    bare      python -c pass                                  (interpreter start)
    libcst    python -c "import libcst; libcst.parse_module(src)"   (the parse floor)
    status / apply --dry-run / apply / revert   (python -m mmcv_patcher ...)

status is timed on the release's own file (hash matches RECORD) and on the patched file,
neither of which needs LibCST; apply with the one patch it once had, and with all of them.
Targets: status within 0.5x of the LibCST floor; apply within 1.25x of it.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Sequence

REPOSITORY = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPOSITORY))  # this checkout, for scripts.releases

from mmcv_patcher import registry  # noqa: E402
from scripts import releases, results  # noqa: E402  (the same cached builds the tests use)

MMCV = next(r for r in releases.INSTALLED if r.id == "mmcv-1.7.2")


def _time(command: Sequence[str], cwd: Path) -> float:
    start = time.perf_counter()
    subprocess.run(list(command), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=str(cwd), check=False)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        python = releases.make_venv(work / "venv", with_tool=False)
        releases.run([sys.executable, "-m", "pip", "--python", python, "install", "-q", str(REPOSITORY)])
        releases.pip_install(python, "--no-index", releases.wheel(MMCV))
        nms = releases.site_packages(python) / "mmcv" / "ops" / "nms.py"
        py, tool = str(python), [str(python), "-m", "mmcv_patcher"]
        floors = {
            "bare": [py, "-c", "pass"],
            "libcst": [py, "-c", f"import libcst; libcst.parse_module(open({str(nms)!r}).read())"],
        }
        names = [
            "bare",
            "libcst",
            "status (release file)",
            "apply --dry-run",
            "apply --patch batched-nms-amp-dtype",
            "apply",
            "status (patched file)",
            "revert",
        ]
        samples: Dict[str, List[float]] = {name: [] for name in names}
        for run in range(args.runs + 2):
            timed = {name: _time(command, work) for name, command in floors.items()}
            timed["status (release file)"] = _time(tool + ["status"], work)
            timed["apply --dry-run"] = _time(tool + ["apply", "--dry-run"], work)
            timed["apply --patch batched-nms-amp-dtype"] = _time(
                tool + ["apply", "--patch", "batched-nms-amp-dtype"], work
            )
            _time(tool + ["revert"], work)
            timed["apply"] = _time(tool + ["apply"], work)
            timed["status (patched file)"] = _time(tool + ["status"], work)
            timed["revert"] = _time(tool + ["revert"], work)
            if run >= 2:  # the first runs warm the page cache and write bytecode
                for name, value in timed.items():
                    samples[name].append(value)
        assert nms.read_bytes() == releases.released_file(MMCV), "the benchmark must leave the release as it was"
    medians = {name: statistics.median(values) for name, values in samples.items()}
    bare, floor = medians["bare"], medians["libcst"]
    targets = {
        "status (release file)": 0.5,
        "status (patched file)": 0.5,
        "apply --patch batched-nms-amp-dtype": 1.25,
        "apply": 1.25,
    }
    rows = []
    for name, value in medians.items():
        target = ""
        if name in targets:
            limit = targets[name]
            target = f"{'met' if value / floor <= limit else 'missed'}: <= {limit}x LibCST"
        rows.append([name, f"{value * 1e3:.0f} ms", f"{value / bare:.2f}", f"{value / floor:.2f}", target])
    about = (
        f"The median of {args.runs} interleaved runs, with every registered patch, on mmcv {MMCV.version} in a venv."
    )
    columns = ["command", "median", "x bare start", "x LibCST floor", "target"]
    versions = {"python": sys.version.split()[0], "mmcv": MMCV.version, "patches": str(len(registry.all_patches()))}
    results.record("bench_cli", sys.argv[1:], versions, [results.Table(about, columns, rows)])
    return 0


if __name__ == "__main__":
    sys.exit(main())
