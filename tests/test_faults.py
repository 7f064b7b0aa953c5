"""No torn writes: kill or fail the CLI at every file-system step of apply and revert.

``tests/faultinject/sitecustomize.py`` is loaded into the child process and wraps
``tempfile.mkstemp``, ``os.fchmod``, ``os.fsync``, ``os.replace`` and ``os.unlink``. A first
run logs the calls; then, for every call, a fresh tree is hit there with SIGKILL (before or
after the call) or an ENOSPC / EACCES / EROFS / EIO error. Every time, nms.py must be the
whole original or the whole patched file, its bytecode must never be of the other source,
and after a failure no temporary file may remain (after a kill, the next run removes it).
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import pytest

from mmcv_patcher import write
from tests.fixtures import NMS, make_tree, patched

pytestmark = pytest.mark.faults

INJECTOR = Path(__file__).parent / "faultinject"
ORIGINAL = NMS.encode()
PATCHED = patched().encode()
ACTIONS = ["kill-before", "kill-after", "ENOSPC", "EACCES", "EROFS", "EIO"]


def make(tmp_path: Path, command: str) -> Path:
    """A tree with an unchecked-hash .pyc (the kind Python never revalidates); for revert,
    already patched."""
    nms = make_tree(tmp_path, distribution="mmcv")
    if command == "revert":
        nms.write_bytes(PATCHED)
    _compile_unchecked(nms)
    return nms


def _compile_unchecked(nms: Path) -> None:
    import py_compile

    py_compile.compile(str(nms), invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH, doraise=True)


def cli(root: Path, command: str, fault: Optional[str] = None, log: Optional[Path] = None) -> subprocess.CompletedProcess:
    env: Dict[str, str] = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(INJECTOR), os.environ.get("PYTHONPATH")])))
    env.pop("MMCVP_FAULT", None)
    env.pop("MMCVP_FAULT_LOG", None)
    if fault:
        env["MMCVP_FAULT"] = fault
    if log:
        env["MMCVP_FAULT_LOG"] = str(log)
    return subprocess.run(
        [sys.executable, "-m", "mmcv_patcher", command, "--path", str(root)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        universal_newlines=True,
        env=env,
        cwd=str(root),
    )


def leftovers(nms: Path) -> List[str]:
    return [p.name for folder in (nms.parent, nms.parent / "__pycache__") if folder.is_dir() for p in folder.iterdir() if p.name.endswith(write.TEMP_SUFFIX)]


def assert_consistent(nms: Path) -> None:
    """Whole original or whole patched source, and no bytecode of any other source."""
    data = nms.read_bytes()
    assert data in (ORIGINAL, PATCHED), "torn or foreign content"
    for pyc in (nms.parent / "__pycache__").glob("nms.*.pyc"):
        header = pyc.read_bytes()[:16]
        assert header[8:16] == importlib.util.source_hash(data), f"{pyc.name} is bytecode of another source"


def calls(tmp_path: Path, command: str) -> List[str]:
    nms = make(tmp_path / "log", command)
    log = tmp_path / "calls.log"
    done = cli(nms.parents[2], command, log=log)
    assert done.returncode == 0, done.stderr
    return log.read_text().split()


@pytest.mark.parametrize("command", ["apply", "revert"])
def test_the_write_goes_through_the_wrapped_calls(tmp_path: Path, command: str) -> None:
    sequence = calls(tmp_path, command)
    assert sequence.count("mkstemp") == 2, sequence  # the source and its .pyc
    assert sequence.count("replace") == 2 and "unlink" in sequence and "fsync" in sequence


@pytest.mark.parametrize("action", ACTIONS)
@pytest.mark.parametrize("command", ["apply", "revert"])
def test_fault_at_every_step_leaves_a_whole_file(tmp_path: Path, command: str, action: str) -> None:
    sequence = calls(tmp_path, command)
    before, after = (ORIGINAL, PATCHED) if command == "apply" else (PATCHED, ORIGINAL)
    outcomes: List[Tuple[int, str, int]] = []
    for step in range(1, len(sequence) + 1):
        nms = make(tmp_path / f"{step}", command)
        root = nms.parents[2]
        done = cli(root, command, fault=f"{step}:{action}")
        assert_consistent(nms)
        if action.startswith("kill"):
            assert done.returncode == -signal.SIGKILL
            again = cli(root, command)  # the next run finishes the job and cleans up
            assert again.returncode == 0, again.stderr
            assert nms.read_bytes() == after
        else:
            assert done.returncode in (0, 1), done.stderr
            assert "Traceback" not in done.stderr
            if done.returncode == 1:  # a failed write is no patch's result: one line on stderr
                [line] = done.stderr.splitlines()
                assert line.startswith("mmcv-patcher: error: ") and str(root) in line
                assert nms.read_bytes() == before, "a failed run must leave the file as it was"
        assert_consistent(nms)
        assert leftovers(nms) == [], f"step {step} ({sequence[step - 1]}) left {leftovers(nms)}"
        outcomes.append((step, sequence[step - 1], done.returncode))
    if not action.startswith("kill"):
        assert any(code == 1 for _, _, code in outcomes), "some injected failure must be reported"
