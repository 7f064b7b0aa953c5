"""Where the tool is started does not change which mmcv it works on.

Python puts the directory a program was started from first on ``sys.path`` (the working
directory for ``-m`` and ``-c``). A training script started elsewhere, and the installed
``mmcv-patcher`` command, do not see an mmcv tree there (a clone, a Dockerfile's WORKDIR),
so the tool works on the mmcv they import and names the other copy. A working directory
that was removed changes nothing for absolute paths.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Dict

from tests.fixtures import make_tree, tool


def installed_and_local(tmp_path: Path) -> "tuple[Path, Path, Dict[str, str]]":
    """An installed mmcv (``site``, on PYTHONPATH) and a source tree in ``src``, the
    directory the tool is started from; both unpatched 2.1.0. Returns their nms.py and the env."""
    installed = make_tree(tmp_path / "site", distribution="mmcv")
    local = make_tree(tmp_path / "src")
    return installed, local, {"PYTHONPATH": str(tmp_path / "site")}


def from_removed_directory(tmp_path: Path, *args: str, env: Dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``python -m mmcv_patcher ARGS`` run in a working directory removed before it starts."""
    gone = tmp_path / "gone"
    gone.mkdir()
    command = " ".join(shlex.quote(arg) for arg in [sys.executable, "-m", "mmcv_patcher", *args])
    return subprocess.run(
        ["sh", "-c", f"cd {shlex.quote(str(gone))} && rmdir {shlex.quote(str(gone))} && exec {command}"],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=120,
    )


def test_apply_in_a_directory_holding_mmcv_patches_the_installed_one(tmp_path: Path) -> None:
    installed, local, env = installed_and_local(tmp_path)
    before = local.read_bytes()
    done = tool("apply", cwd=tmp_path / "src", env=env)
    assert done.returncode == 0, done.stderr
    assert b"mmcv-patcher" in installed.read_bytes() and local.read_bytes() == before
    assert (
        f"note: {tmp_path / 'src' / 'mmcv'} is another mmcv, which only programs started in {tmp_path / 'src'} import"
        in done.stdout
    )


def test_python_asked_from_a_directory_holding_mmcv_answers_for_its_programs(tmp_path: Path) -> None:
    installed, local, env = installed_and_local(tmp_path)
    done = tool("status", "--json", "--python", sys.executable, cwd=tmp_path / "src", env=env)
    document = json.loads(done.stdout)
    assert document["targets"][0]["package_dir"] == str(installed.parents[1])
    assert any(str(local.parents[1]) in note for note in document["targets"][0]["notes"])


def test_status_check_fails_while_the_installed_mmcv_is_unpatched(tmp_path: Path) -> None:
    _, local, env = installed_and_local(tmp_path)
    assert tool("apply", "--path", str(tmp_path / "src"), env=env).returncode == 0
    assert b"mmcv-patcher" in local.read_bytes()
    assert tool("status", "--check", cwd=tmp_path / "src", env=env).returncode == 3


def test_verify_imports_the_mmcv_programs_import(tmp_path: Path) -> None:
    """The probe reports the mmcv it found; neither fake tree has compiled ops, so it names it."""
    installed, _, env = installed_and_local(tmp_path)
    done = tool("verify", "--json", cwd=tmp_path / "src", env=env)
    assert json.loads(done.stdout)["verify"]["detail"].startswith(f"mmcv at {installed.parents[1]} has no compiled ops")


def test_status_all_lists_the_local_copy_as_not_imported(tmp_path: Path) -> None:
    installed, local, env = installed_and_local(tmp_path)
    document = json.loads(tool("status", "--all", "--json", cwd=tmp_path / "src", env=env).stdout)
    copies = [
        (copy["target"]["package_dir"], copy["imported"]) for copy in document["copies"] if copy["package"] == "mmcv"
    ]
    assert copies == [(str(installed.parents[1]), True), (str(local.parents[1]), False)]


def test_no_installed_mmcv_names_the_local_one(tmp_path: Path) -> None:
    make_tree(tmp_path / "src")
    done = tool("apply", cwd=tmp_path / "src")
    assert done.returncode == 1
    assert f"except {tmp_path / 'src' / 'mmcv'}, which only programs started in {tmp_path / 'src'} import" in (
        done.stderr
    )


def test_a_removed_working_directory_changes_nothing_for_absolute_paths(tmp_path: Path) -> None:
    installed, _, env = installed_and_local(tmp_path)
    site = str(tmp_path / "site")
    for args, changed in [
        (("status", "--check", "--path", site), False),
        (("apply", "--path", site), True),
        (("revert", "--python", sys.executable), True),
        (("status", "--check"), False),
    ]:
        before = installed.read_bytes()
        done = from_removed_directory(tmp_path, *args, env=env)
        assert done.returncode in (0, 3) and "error" not in done.stderr, (args, done.stderr)
        assert (installed.read_bytes() != before) == changed, args


def test_a_relative_path_from_a_removed_working_directory_is_a_usage_error(tmp_path: Path) -> None:
    done = from_removed_directory(tmp_path, "apply", "--path", "site", env={})
    assert done.returncode == 2
    assert done.stderr.splitlines()[-1] == (
        "mmcv-patcher: error: --path site: relative to the working directory, which was removed; give an absolute path"
    )


def test_python_is_not_blamed_for_an_unrelated_failure(tmp_path: Path) -> None:
    broken = tmp_path / "brokenpython"
    broken.write_text("#!/bin/sh\necho 'PermissionError: [Errno 13] Permission denied: /data' >&2\nexit 1\n")
    broken.chmod(0o755)
    done = tool("status", "--python", str(broken))
    assert done.returncode == 2
    assert done.stderr == (
        f"mmcv-patcher: error: --python {broken}: it exited 1 (PermissionError: [Errno 13] Permission denied: /data)\n"
    )


def test_a_python_that_is_no_interpreter_is_named_by_the_first_line_it_says(tmp_path: Path) -> None:
    shim = tmp_path / "python2"
    shim.write_text(
        "#!/bin/sh\n"
        "echo 'pyenv: python2: command not found' >&2\n"
        "echo >&2\n"
        "echo 'Note: See pyenv help global for tips on allowing both' >&2\n"
        "echo '      Python versions to be found at the same time.' >&2\n"
        "exit 127\n"
    )
    shim.chmod(0o755)
    done = tool("status", "--python", str(shim))
    assert done.returncode == 2
    assert done.stderr == f"mmcv-patcher: error: --python {shim}: it exited 127 (pyenv: python2: command not found)\n"


def test_a_python_that_fails_silently_is_exit_2_in_one_line_without_a_usage_line() -> None:
    done = tool("status", "--python", "/bin/false")
    assert (done.returncode, done.stderr) == (2, "mmcv-patcher: error: --python /bin/false: it exited 1 (no output)\n")


def test_python_too_old_for_the_script_is_told_so(tmp_path: Path) -> None:
    old = tmp_path / "python2"
    old.write_text("#!/bin/sh\necho 'SyntaxError: invalid syntax' >&2\nexit 1\n")
    old.chmod(0o755)
    done = tool("status", "--python", str(old))
    assert done.returncode == 2 and done.stderr.rstrip("\n").endswith(
        "(SyntaxError: invalid syntax); it must be CPython 3.6 or newer"
    )
