#!/usr/bin/env python3
"""How long CI's test command takes, from a fresh clone, with the cache warm or empty.

    python scripts/bench_suite.py [--cold] [--load]

Clones this checkout's HEAD into a temporary directory and runs ``bash .ci/run`` there (the
README's test command: it makes its own venv), timing the whole of it. With the cache warm
(the default ``$MMCV_PATCHER_CACHE``, as filled by earlier runs), or with ``--cold`` an empty
cache of its own, so every release is downloaded and mmcv 2.1.0's CPU ops are built. With
``--load``, a busy loop runs on one core beside it the whole time, as on a loaded CI machine.
Targets (issue on docs and proofs): warm under 15 minutes, cold under 40, quiet, on 2 cores.
pytest also writes a JUnit report of the run (``PYTEST_ADDOPTS``), from which a second table
says where the time goes: each test file's tests and the minutes a worker spent in them.
Writes docs/results/bench_suite.json, which CONTRIBUTING.md and docs/benchmarks.md show.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional
from xml.etree import ElementTree

REPOSITORY = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPOSITORY))  # this checkout, for scripts.results

from scripts import results  # noqa: E402

#: The targets of the warm and the cold run, in minutes.
TARGETS = {"warm": 15, "cold": 40}


def _spin() -> None:
    """One core kept busy, until terminated."""
    while True:
        pass


def _summary(output: str) -> str:
    """pytest's last summary line (``684 passed, 1 skipped in ...``), without its time."""
    found = re.findall(r"^=*\s*(\d+ (?:passed|failed).*?) in [\d.]+s", output, re.MULTILINE)
    return found[-1] if found else "no pytest summary"


def by_file(junit: Path) -> List[List[str]]:
    """Each test file of a JUnit report, the longest first: its tests, the minutes a worker
    spent in them, and their share of all the workers' minutes."""
    seconds: Dict[str, float] = {}
    tests: Dict[str, int] = {}
    for case in ElementTree.parse(junit).iter("testcase"):
        file = "/".join(case.get("classname", "").split(".")[:2]) + ".py"
        seconds[file] = seconds.get(file, 0.0) + float(case.get("time") or 0)
        tests[file] = tests.get(file, 0) + 1
    total = sum(seconds.values()) or 1.0
    return [
        [f"`{file}`", str(tests[file]), f"{spent / 60:.1f}", f"{spent / total:.0%}"]
        for file, spent in sorted(seconds.items(), key=lambda item: -item[1])
    ]


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cold", action="store_true", help="an empty cache: download and build everything")
    parser.add_argument("--load", action="store_true", help="one core kept busy beside the run")
    args = parser.parse_args(argv)
    cache = "cold" if args.cold else "warm"
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=REPOSITORY, stdout=subprocess.PIPE, universal_newlines=True
    ).stdout.strip()
    with tempfile.TemporaryDirectory(prefix="mmcv-patcher-suite-") as scratch:
        clone = Path(scratch) / "clone"
        subprocess.run(["git", "clone", "-q", str(REPOSITORY), str(clone)], check=True)
        junit = Path(scratch) / "suite.xml"
        env = dict(os.environ, PYTEST_ADDOPTS=f"--junitxml={junit}")
        if args.cold:
            env["MMCV_PATCHER_CACHE"] = str(Path(scratch) / "cache")
        spinner = multiprocessing.Process(target=_spin, daemon=True) if args.load else None
        if spinner is not None:
            spinner.start()
        started = time.monotonic()
        try:
            done = subprocess.run(
                ["bash", ".ci/run"],
                cwd=clone,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                universal_newlines=True,
            )
        finally:
            if spinner is not None:
                spinner.terminate()
        minutes = (time.monotonic() - started) / 60
        files = by_file(junit) if junit.is_file() else []
    summary = _summary(done.stdout)
    sys.stdout.write(done.stdout[-2000:])
    table = results.Table(
        f"`bash .ci/run` from a fresh clone of {commit}, the cache {cache}"
        + (", one core kept busy beside it" if args.load else ", the machine otherwise quiet")
        + f" (target: under {TARGETS[cache]} minutes).",
        ["cache", "minutes", "exit", "pytest"],
        [[cache, f"{minutes:.1f}", str(done.returncode), summary]],
    )
    where = results.Table(
        "Where the time goes: each test file, the minutes a worker spent in its tests (the workers"
        " run side by side, one per CPU), and their share.",
        ["file", "tests", "worker minutes", "share"],
        files,
    )
    results.record(
        "bench_suite", sys.argv[1:] if argv is None else argv, {"commit": commit}, [table, *([where] if files else [])]
    )
    return done.returncode


if __name__ == "__main__":
    sys.exit(main())
