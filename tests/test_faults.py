"""No torn writes: kill, interrupt or fail the CLI at every file-system step of apply and revert.

``tests/faultinject/sitecustomize.py`` is loaded into the child process and wraps
``tempfile.mkstemp``, ``os.fchmod``, ``os.fsync``, ``os.replace`` and ``os.unlink``. A first
run logs the calls; then, for every call, a fresh tree is hit there with SIGKILL or SIGINT
(Ctrl-C; before or after the call) or an ENOSPC / EACCES / EROFS / EIO / EBUSY (a rename over
a bind-mounted file) / EPERM (an append-only directory) error. Every time, each file the
runs patch (:data:`FILES`) must be the whole original or the whole patched file, the code Python's own
loader gives for it (from its bytecode) must be that file's, a failed or interrupted run must
leave every file as it was, and no temporary file may remain (after a kill, the next run
removes it).
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import signal
import subprocess
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import pytest

from mmcv_patcher import registry, write
from mmcv_patcher.model import Patch
from tests.fixtures import leftovers, make_tree, patched, synthetic_files, tool, with_fault

pytestmark = pytest.mark.faults

ACTIONS = [
    "kill-before",
    "kill-after",
    "interrupt-before",
    "interrupt-after",
    "ENOSPC",
    "EACCES",
    "EROFS",
    "EIO",
    "EBUSY",
    "EPERM",
]


def _files() -> Tuple[str, ...]:
    """The files the runs patch (``--patch`` with their patches; the tree holds every file), in
    the order of the transaction: one of each kind of write, picked from the registry: the file
    with the most patches (``ops/nms.py``), the first with an edit in another definition (an
    autograd function's ``backward``) and the first with patches of two classes
    (``ops/focal_loss.py``). Every other file's write takes the same steps, so a fault at each
    step of all of them would repeat these, in several times the time."""
    by_file: Dict[str, List[Patch]] = {}
    for patch in registry.all_patches():
        if patch.package == "mmcv":  # the tree's mmcv/; another package's files take the same steps
            by_file.setdefault(patch.file, []).append(patch)
    most = max(by_file, key=lambda file: len(by_file[file]))
    elsewhere = [file for file, patches in by_file.items() if any(e.function for p in patches for e in p.edits)]
    classes = [
        file
        for file, patches in by_file.items()
        if len({p.function.split(".")[0] for p in patches if "." in p.function}) > 1
    ]
    chosen = {most, *elsewhere[:1], *classes[:1]}
    return tuple(file for file in by_file if file in chosen)


FILES = _files()
PATCHES = [f"--patch={patch.id}" for patch in registry.all_patches() if patch.file in FILES]
#: each of those files, as installed and as apply writes it
RELEASED = {file: synthetic_files()[file].encode() for file in FILES}
PATCHED = {file: patched(None, file).encode() for file in FILES}


def make(tmp_path: Path, command: str) -> Path:
    """A tree (returns its mmcv/) with an unchecked-hash .pyc of each file (the kind Python
    never revalidates); for revert, already patched."""
    package = make_tree(tmp_path, distribution="mmcv").parents[1]
    for file in RELEASED:
        if command == "revert":
            (package / file).write_bytes(PATCHED[file])
        _compile_unchecked(package / file)
    return package


def _compile_unchecked(source: Path) -> None:
    import py_compile

    py_compile.compile(str(source), invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH, doraise=True)


def cli(
    package: Path, command: str, fault: Optional[str] = None, log: Optional[Path] = None
) -> subprocess.CompletedProcess[str]:
    return tool(command, *PATCHES, "--path", str(package.parent), env=with_fault(fault, log), cwd=package.parent)


def contents(package: Path) -> Dict[str, bytes]:
    return {file: (package / file).read_bytes() for file in RELEASED}


def assert_consistent(package: Path) -> None:
    """Each file the whole released or the whole patched source, no bytecode of any other, and
    the code Python loads for it (from that bytecode) the file's own."""
    for file, data in contents(package).items():
        assert data in (RELEASED[file], PATCHED[file]), f"{file}: torn or foreign content"
        source = package / file
        loader = importlib.machinery.SourceFileLoader(source.stem, str(source))
        assert loader.get_code(source.stem) == compile(data, str(source), "exec", dont_inherit=True), (
            f"{file}: Python would run other code than the file holds"
        )
        for pyc in (source.parent / "__pycache__").glob(f"{source.stem}.*.pyc"):
            assert pyc.read_bytes()[8:16] == importlib.util.source_hash(data), (
                f"{pyc.name} is bytecode of another source"
            )


def calls(tmp_path: Path, command: str) -> List[str]:
    package = make(tmp_path / "log", command)
    log = tmp_path / "calls.log"
    done = cli(package, command, log=log)
    assert done.returncode == 0, done.stderr
    return log.read_text().split()


@pytest.mark.parametrize("command", ["apply", "revert"])
def test_the_write_goes_through_the_wrapped_calls(tmp_path: Path, command: str) -> None:
    sequence = calls(tmp_path, command)
    assert sequence.count("mkstemp") == 2 * len(RELEASED), sequence  # each source and its .pyc
    assert sequence.count("replace") == 2 * len(RELEASED) and "unlink" in sequence and "fsync" in sequence


@pytest.mark.parametrize("action", ACTIONS)
@pytest.mark.parametrize("command", ["apply", "revert"])
def test_fault_at_every_step_leaves_whole_files(tmp_path: Path, command: str, action: str) -> None:
    sequence = calls(tmp_path, command)
    before, after = (RELEASED, PATCHED) if command == "apply" else (PATCHED, RELEASED)
    outcomes: List[Tuple[int, str, int]] = []
    for step in range(1, len(sequence) + 1):
        package = make(tmp_path / f"{step}", command)
        done = cli(package, command, fault=f"{step}:{action}")
        assert_consistent(package)
        if action.startswith("kill"):
            assert done.returncode == -signal.SIGKILL
            again = cli(package, command)  # the next run finishes the job and cleans up
            assert again.returncode == 0, again.stderr
            assert contents(package) == after
        elif action.startswith("interrupt"):
            assert done.returncode == 130 and done.stderr.startswith("mmcv-patcher: error: interrupted (Ctrl-C)"), (
                done.stderr
            )
            assert len(done.stderr.splitlines()) == 1 and contents(package) == before, (
                "Ctrl-C leaves every file as it was"
            )
        else:
            assert done.returncode in (0, 1), done.stderr
            assert "Traceback" not in done.stderr
            if done.returncode == 1:  # a failed write is no patch's result: one line on stderr
                [line] = done.stderr.splitlines()
                assert line.startswith("mmcv-patcher: error: ") and str(package) in line
                assert write.TEMP_SUFFIX not in line, "a temporary file that no longer exists is never named"
                assert contents(package) == before, "a failed run must leave every file as it was"
        assert_consistent(package)
        left = [name for file in RELEASED for name in leftovers(package / file)]
        assert left == [], f"step {step} ({sequence[step - 1]}) left {left}"
        outcomes.append((step, sequence[step - 1], done.returncode))
    if not action.startswith(("kill", "interrupt")):
        assert any(code == 1 for _, _, code in outcomes), "some injected failure must be reported"
