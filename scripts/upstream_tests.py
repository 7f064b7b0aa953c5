#!/usr/bin/env python3
"""Run a patched package's own tests (mmcv's, mmdet's) on the released files and with every patch applied.

    python scripts/upstream_tests.py CHECKOUT [TEST ...] [--python PYTHON]

CHECKOUT is a clone of the repository of a package that has patches (mmcv, mmdet or
mmrotate, told by the package directory at its root): their tests ship in no sdist or wheel
on the package index, so they are not fetched here. TEST are test files relative to
CHECKOUT (default: the ``proofs.upstream`` of every registered patch of that package, in
registry order; mmcv's ops with CUDA kernels only, the focal losses and multi-scale
deformable attention, skip or return early on a CPU build). pytest runs them from CHECKOUT,
as the project's own CI does (some read ./tests/data), twice: on the released files, then
with every patch applied.

By default the packages are mmcv 2.1.0 built with its CPU ops, mmdet 3.3.0 and
onedl-mmrotate 1.2.1, in a throwaway venv (the tests' cached builds; the first run builds
them). ``--python`` takes an interpreter with packages of its own and pytest instead, such
as a CUDA build on a GPU machine, where the CUDA cases run too; its packages are reverted
for the first run and left as they were found (patched or not) afterwards.

It prints each test's outcome in both runs and exits 1 if a test that passes on the
release does not pass once patched.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Dict, List, Sequence, Tuple
from xml.etree import ElementTree

REPOSITORY = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPOSITORY))  # this checkout, for scripts.releases

from mmcv_patcher import registry  # noqa: E402
from mmcv_patcher.model import PACKAGES  # noqa: E402
from scripts import releases  # noqa: E402  (the same cached builds the tests use)

#: the tests' stand-in for torchvision (tests/stand_ins/torchvision), for the default venv
STAND_INS = REPOSITORY / "tests" / "stand_ins"


def tests(package: str) -> Tuple[str, ...]:
    """The upstream tests of every registered patch of ``package``, each once, in registry order."""
    return tuple(
        dict.fromkeys(
            test for patch in registry.all_patches() if patch.package == package for test in patch.proofs.upstream
        )
    )


def package_of(checkout: Path) -> str:
    """The package whose repository ``checkout`` is: the one whose directory is at its root."""
    found = [package for package in PACKAGES if (checkout / package / "__init__.py").is_file()]
    if len(found) != 1:
        raise SystemExit(f"{checkout}: not a clone of the repository of one of {', '.join(PACKAGES)}")
    return found[0]


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
    The checkout's own package directory (mmcv's sources, with no compiled ops) must not
    shadow the installed one, so the working directory is kept off ``sys.path`` (``python
    -m`` would put it first)."""
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
    """Each test's outcome on the release and patched, leaving ``python``'s packages as they were."""
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
    parser.add_argument("checkout", type=Path, help="a clone of the repository of mmcv, mmdet or mmrotate")
    parser.add_argument(
        "tests",
        nargs="*",
        help="test files relative to CHECKOUT (default: the proofs.upstream of its package's patches)",
    )
    parser.add_argument(
        "--python",
        type=Path,
        help="an interpreter with the packages and pytest (default: mmcv 2.1.0 with CPU ops, mmdet 3.3.0 and"
        " onedl-mmrotate 1.2.1 in a throwaway venv)",
    )
    args = parser.parse_args()
    checkout = args.checkout.resolve()
    package = package_of(checkout)
    chosen = args.tests or list(tests(package))
    missing = [test for test in chosen if not (checkout / test).is_file()]
    if missing:
        parser.error(f"not in {checkout}: {', '.join(missing)}; give a clone of {package}'s repository at its release")
    with tempfile.TemporaryDirectory() as scratch:
        python = args.python
        if python is None:
            python = releases.detector_venv(Path(scratch) / "venv")
            # pytest, and what OpenMMLab's tests import besides it
            releases.pip_install(python, f"pytest=={importlib.metadata.version('pytest')}", "parameterized", deps=True)
            # mmdet's and mmrotate's test helpers read the configs beside the package, as in a
            # source checkout (``testing._get_config_directory``): the checkout's, here
            if (checkout / "configs").is_dir():
                (releases.site_packages(python) / "configs").symlink_to(checkout / "configs")
            # mmrotate's models import torchvision, which PyPI's does not load beside this torch
            os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(STAND_INS), os.environ.get("PYTHONPATH")]))
        results = compare(python, checkout, chosen, Path(scratch))
        versions = subprocess.run(
            [str(python), "-c", f"import torch, {package}; print(torch.__version__, {package}.__version__)"],
            stdout=subprocess.PIPE,
            universal_newlines=True,
            check=True,
        ).stdout.split()
    print(f"{package} {versions[1]}, torch {versions[0]}; tests from {checkout}\n")
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
