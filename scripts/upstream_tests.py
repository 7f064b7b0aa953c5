#!/usr/bin/env python3
"""Run mmcv's own op tests on the released files and with every patch applied.

    python scripts/upstream_tests.py CHECKOUT [TEST ...] [--python PYTHON]

CHECKOUT is a clone of mmcv's repository: its op tests ship in no sdist or wheel on the
package index, so they are not fetched here. TEST are test files relative to CHECKOUT
(default: every registered patch's ``proofs.upstream``, in registry order; the ops with CUDA
kernels only, the focal losses and multi-scale deformable attention, skip or return early on
a CPU build). pytest runs them from CHECKOUT, as mmcv's own CI does (some read ./tests/data),
twice: on the released files, then with every patch applied.

By default the mmcv is 2.1.0 built with its CPU ops, in a throwaway venv (the tests' cached
build; the first run builds it). ``--python`` takes an interpreter with an mmcv of its own
and pytest instead, such as a CUDA build on a GPU machine, where the CUDA cases run too; its
mmcv is reverted for the first run and left as it was found (patched or not) afterwards.

It prints each test's outcome in both runs and exits 1 if a test that passes on the
release does not pass once patched.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Dict, List, Sequence, Tuple
from xml.etree import ElementTree

REPOSITORY = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPOSITORY))  # this checkout, for scripts.releases

from mmcv_patcher import registry  # noqa: E402
from scripts import releases  # noqa: E402  (the same cached builds the tests use)


def tests() -> Tuple[str, ...]:
    """Every registered patch's upstream tests, each once, in registry order."""
    return tuple(dict.fromkeys(test for patch in registry.all_patches() for test in patch.proofs.upstream))


#: pytest's exit statuses for "every test passed" and "some test failed"; any other means the run itself failed
RAN = (0, 1)


def outcomes(junit: Path) -> Dict[str, str]:
    """Each test in a pytest JUnit XML report, as ``file.Class::name``, with its outcome:
    ``passed``, or ``failed``, ``error`` or ``skipped`` and the first line of its message."""
    found = {}
    for case in ElementTree.parse(junit).iter("testcase"):
        outcome = "passed"
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                message = (child.get("message") or "").strip().splitlines()
                outcome = ("failed" if child.tag == "failure" else child.tag) + (
                    f": {message[0][:90]}" if message else ""
                )
        found[f"{case.get('classname')}::{case.get('name')}"] = outcome
    return found


def run_tests(python: Path, checkout: Path, tests: Sequence[str], junit: Path) -> Dict[str, str]:
    """Runs ``tests`` with ``python``'s pytest from ``checkout``; returns :func:`outcomes`.
    The checkout's own ``mmcv/`` (sources, no compiled ops) must not shadow the installed
    one, so the working directory is kept off ``sys.path`` (``python -m`` would put it first)."""
    done = subprocess.run(
        [
            str(python),
            "-c",
            "import sys; del sys.path[0]; import pytest; sys.exit(pytest.main(sys.argv[1:]))",
            "-p",
            "no:cacheprovider",
            "-q",
            "--continue-on-collection-errors",
            f"--junitxml={junit}",
            "--rootdir",
            str(checkout),
            *tests,
        ],
        cwd=str(checkout),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        universal_newlines=True,
    )
    if done.returncode not in RAN:
        raise SystemExit(f"pytest exited with {done.returncode} in {checkout}:\n{done.stdout[-3000:]}")
    return outcomes(junit)


def patcher(command: str, python: Path) -> str:
    """Runs ``mmcv-patcher COMMAND --python PYTHON --json``; returns its stdout, or exits
    with its error."""
    done = releases.tool(Path(sys.executable), command, "--python", str(python), "--json")
    if done.returncode != 0:
        raise SystemExit(f"mmcv-patcher {command} failed for {python}:\n{done.stdout}{done.stderr}")
    return done.stdout


def compare(python: Path, checkout: Path, tests: Sequence[str], scratch: Path) -> Dict[str, Dict[str, str]]:
    """Each test's outcome on the release and patched, leaving ``python``'s mmcv as it was."""
    was_patched = any(p["state"] == "patched" for p in json.loads(patcher("status", python))["patches"])
    patcher("revert", python)
    try:
        release = run_tests(python, checkout, tests, scratch / "release.xml")
        patcher("apply", python)
        patched = run_tests(python, checkout, tests, scratch / "patched.xml")
    finally:
        patcher("apply" if was_patched else "revert", python)
    return {"release": release, "patched": patched}


def regressions(results: Dict[str, Dict[str, str]]) -> List[str]:
    """The tests that pass on the release and do not pass once patched."""
    return [
        test
        for test, outcome in results["release"].items()
        if outcome == "passed" and results["patched"].get(test, "missing") != "passed"
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("checkout", type=Path, help="a clone of mmcv's repository")
    parser.add_argument(
        "tests",
        nargs="*",
        default=list(tests()),
        help=f"test files relative to CHECKOUT (default: {' '.join(tests())})",
    )
    parser.add_argument(
        "--python",
        type=Path,
        help="an interpreter with mmcv and pytest (default: mmcv 2.1.0 with CPU ops in a throwaway venv)",
    )
    args = parser.parse_args()
    checkout = args.checkout.resolve()
    missing = [test for test in args.tests if not (checkout / test).is_file()]
    if missing:
        parser.error(f"not in {checkout}: {', '.join(missing)}; give a clone of mmcv's repository")
    with tempfile.TemporaryDirectory() as scratch:
        python = args.python
        if python is None:
            python = releases.torch_venv(Path(scratch) / "venv", releases.ops_wheel())
            releases.pip_install(python, f"pytest=={importlib.metadata.version('pytest')}", deps=True)
        results = compare(python, checkout, args.tests, Path(scratch))
        versions = subprocess.run(
            [str(python), "-c", "import torch, mmcv; print(torch.__version__, mmcv.__version__)"],
            stdout=subprocess.PIPE,
            universal_newlines=True,
            check=True,
        ).stdout.split()
    print(f"mmcv {versions[1]}, torch {versions[0]}; tests from {checkout}\n")
    print("| test | release | every patch |")
    print("| --- | --- | --- |")
    for test in sorted(set(results["release"]) | set(results["patched"])):
        print(f"| {test} | {results['release'].get(test, 'missing')} | {results['patched'].get(test, 'missing')} |")
    lost = regressions(results)
    passed = sum(outcome == "passed" for outcome in results["release"].values())
    print(
        f"\non the release {passed} passed; once patched, "
        + (f"{len(lost)} of them do not: {', '.join(lost)}" if lost else "all of them pass")
    )
    return 1 if lost else 0


if __name__ == "__main__":
    sys.exit(main())
