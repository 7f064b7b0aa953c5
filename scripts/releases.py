"""Real mmcv releases for the tests and the benchmarks: downloaded with pip, built once, cached, installed for real.

Everything slow is kept under ``$MMCV_PATCHER_CACHE`` (default ``~/.cache/mmcv-patcher``):

    dists/     sdists and wheels exactly as the package index serves them
    wheels/    wheels built from those sdists (lite builds; the CPU-ops build of 2.1.0)
    buildenv/  the virtualenv that prepares and builds old setup.py sdists
    logs/      the output of each download and build, named in the lines that announce them
    locks/     one lock file per artefact, so that test processes running side by side
               (pytest-xdist) make each artefact once

so a second run needs no network. No mmcv code is kept in this repository.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import time
import venv
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import pytest
from packaging.version import Version

#: This checkout: what the tests pip-install, and the source tree a plain ``-m`` run finds.
REPOSITORY = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("MMCV_PATCHER_CACHE") or Path.home() / ".cache" / "mmcv-patcher")
DISTS = CACHE / "dists"
WHEELS = CACHE / "wheels"
BUILDENV = CACHE / "buildenv"
LOGS = CACHE / "logs"
TORCH = "torch==2.13.0"  # the CPU wheel on this machine's disk; plain "torch" is a CUDA build


@dataclass(frozen=True)
class Release:
    """One real release and what the tool must find in it."""

    distribution: str
    version: str
    #: the state ``status`` reports for batched-nms-amp-dtype before anything is done (the
    #: other patches' states follow from their ranges: tests/test_matrix.py)
    state: str
    #: builds with pip's normal isolation; old setup.py sdists need the build env instead
    isolated: bool = False

    @property
    def spec(self) -> str:
        return f"{self.distribution}=={self.version}"

    @property
    def id(self) -> str:
        return f"{self.distribution}-{self.version}"

    @property
    def naming_env(self) -> Dict[str, str]:
        """The environment under which the sdist's setup.py calls itself this distribution.

        mmcv's setup.py picks its name from ``MMCV_WITH_OPS``: 1.x is ``mmcv`` without ops and
        ``mmcv-full`` with them; 2.x is ``mmcv`` with ops and ``mmcv-lite`` without. pip
        runs setup.py even to download an sdist and rejects a file that names another
        project, so every download and build sets it from the release alone (never from what
        an earlier step happened to cache). ``FORCE_CUDA=0``: nothing here needs a GPU.
        """
        major = Version(self.version).major
        with_ops = self.distribution == "mmcv-full" or (self.distribution == "mmcv" and major >= 2)
        return {"MMCV_WITH_OPS": "1" if with_ops else "0", "FORCE_CUDA": "0"}


#: Installed for real into throwaway virtualenvs (pure-Python builds, no compiling).
INSTALLED = (
    Release("mmcv", "1.3.3", "not-affected"),
    Release("mmcv", "1.3.4", "unpatched"),
    Release("mmcv", "1.4.2", "unpatched"),
    Release("mmcv", "1.5.3", "unpatched"),
    Release("mmcv", "1.7.2", "unpatched"),
    Release("mmcv-lite", "2.2.0", "unpatched"),
    Release("onedl-mmcv", "2.3.5", "unpatched", isolated=True),
    Release("onedl-mmcv", "2.3.6", "fixed-upstream", isolated=True),
)
#: Only install by compiling: tested as unpacked sdists via --path.
CHECKOUTS = (
    Release("mmcv-full", "1.7.2", "unpatched"),
    Release("mmcv", "2.0.0", "unpatched"),
    Release("mmcv", "2.1.0", "unpatched"),
    Release("mmcv", "2.2.0", "unpatched"),
)
#: Built once with its CPU ops for the end-to-end tests and benchmarks (see :func:`ops_wheel`).
OPS = Release("mmcv", "2.1.0", "unpatched")
#: mmdet and mmrotate releases installed beside mmcv-lite, for the runs that find every package.
DETECTORS = (Release("mmdet", "3.3.0", ""), Release("onedl-mmrotate", "1.2.1", "", isolated=True))
#: The release of each patched package that :func:`detector_venv` installs.
IN_DETECTOR_VENV = {"mmcv": OPS, "mmdet": DETECTORS[0], "mmrotate": DETECTORS[1]}


def _every(distribution: str, versions: str, *, isolated: bool = False) -> Tuple[Release, ...]:
    """The releases of ``distribution`` named in ``versions`` (space-separated), for the matrix."""
    return tuple(Release(distribution, version, "", isolated=isolated) for version in versions.split())


#: Every release on the package index of each distribution a patch names, for the release
#: matrix (tests/test_matrix.py): mmcv 1.x/2.x and onedl-mmcv (their sdists; 2.0.1 has none;
#: mmcv-full 1.x and mmcv-lite 2.x are built from the same tagged source as mmcv of the same
#: version), mmdet 2.x and 3.x (its wheels; 0.6.x ships only an sdist that compiles CUDA
#: extensions, and predates every patched file) and onedl-mmdetection, mmrotate (its wheels;
#: 1.x only as the pre-releases 1.0.0rc0 and rc1) and onedl-mmrotate.
MATRIX = (
    _every(
        "mmcv",
        "1.0.0 1.0.1 1.0.2 1.0.3 1.0.4 1.0.5 1.1.0 1.1.1 1.1.2 1.1.3 1.1.4 1.1.5 1.1.6 1.2.0 1.2.1 1.2.2 1.2.3 1.2.4 1.2.5"
        " 1.2.6 1.2.7 1.3.0 1.3.1 1.3.3 1.3.4 1.3.5 1.3.6 1.3.7 1.3.8 1.3.9 1.3.10 1.3.11 1.3.12 1.3.13 1.3.14 1.3.15"
        " 1.3.16 1.3.17 1.3.18 1.4.0 1.4.1 1.4.2 1.4.3 1.4.4 1.4.5 1.4.6 1.4.7 1.4.8 1.5.0 1.5.1 1.5.2 1.5.3 1.6.0 1.6.1"
        " 1.6.2 1.7.0 1.7.1 1.7.2 2.0.0 2.1.0 2.2.0",
    )
    + _every(
        "onedl-mmcv",
        "2.3.0 2.3.0.post1 2.3.0.post2 2.3.0.post3 2.3.1 2.3.2 2.3.2.post2 2.3.3 2.3.4 2.3.5 2.3.6",
        isolated=True,
    )
    + _every(
        "mmdet",
        "2.3.0 2.4.0 2.5.0 2.6.0 2.7.0 2.8.0 2.9.0 2.10.0 2.11.0 2.12.0 2.13.0 2.14.0 2.15.0 2.15.1 2.16.0 2.17.0"
        " 2.18.0 2.18.1 2.19.0 2.19.1 2.20.0 2.21.0 2.22.0 2.23.0 2.24.0 2.24.1 2.25.0 2.25.1 2.25.2 2.25.3 2.26.0"
        " 2.27.0 2.28.0 2.28.1 2.28.2 3.0.0 3.1.0 3.2.0 3.3.0",
    )
    + _every("onedl-mmdetection", "3.4.0 3.4.1 3.4.2.post1 3.4.3 3.4.4 3.4.5 3.4.6 3.4.7 3.5.0 3.5.1", isolated=True)
    + _every("mmrotate", "0.1.0 0.1.1 0.2.0 0.3.0 0.3.1 0.3.2 0.3.3 0.3.4 1.0.0rc0 1.0.0rc1")
    + _every("onedl-mmrotate", "1.1.0rc0 1.1.0rc1 1.1.0rc2 1.1.0 1.1.0.post1 1.1.1 1.2.0 1.2.1", isolated=True)
)
#: Distributions taken as the package index's wheels (pure Python; mmcv-lite has no sdist).
_WHEEL_ONLY = {"mmcv-lite", "mmdet", "mmrotate"}


def _normal(name: str) -> str:
    return name.replace("-", "_").lower()


def _find(directory: Path, release: Release, suffixes: Sequence[str]) -> Optional[Path]:
    """The cached file of exactly this release (``mmcv-1.3.3`` never matches ``1.3.30``)."""
    if not directory.is_dir():
        return None
    prefix = f"{_normal(release.distribution)}_{release.version}"
    for path in sorted(directory.iterdir()):
        name = path.name.replace("-", "_").lower()
        if (
            name.startswith(prefix)
            and name[len(prefix) :].startswith((".tar", ".zip", "_"))
            and name.endswith(tuple(suffixes))
        ):
            return path
    return None


def run(
    command: Sequence[object],
    env: Optional[Dict[str, str]] = None,
    cwd: Optional[Path] = None,
    log: Optional[Path] = None,
) -> subprocess.CompletedProcess[str]:
    """Runs a command, raising with the end of its output when it fails.

    With ``log``, the output goes straight into that file as the command writes it (so
    ``tail -f`` follows a long build), and while the command runs, a line every
    :data:`HEARTBEAT` seconds says how long it has taken and the last thing it printed.
    """
    merged = dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1", **(env or {}))
    argv = [str(part) for part in command]
    if log is None:
        done = subprocess.run(
            argv, env=merged, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True
        )
        output = done.stdout
    else:
        with open(log, "a") as handle:
            handle.write(f"$ {' '.join(argv)}\n")
            handle.flush()
            started = time.monotonic()
            process = subprocess.Popen(argv, env=merged, cwd=cwd, stdout=handle, stderr=subprocess.STDOUT)
            while True:
                try:
                    process.wait(timeout=HEARTBEAT)
                    break
                except subprocess.TimeoutExpired:
                    minutes = (time.monotonic() - started) / 60
                    announce(
                        f"mmcv-patcher tests: {log.stem}: still running after {minutes:.0f} min; last: {_last_step(log)}"
                    )
        output = log.read_text(errors="replace")
        done = subprocess.CompletedProcess(argv, process.returncode, output)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {done.returncode}:\n{output[-4000:]}")
    return done


#: Seconds between the lines that show a long command is alive.
HEARTBEAT = 60.0


def _last_step(log: Path) -> str:
    """What the command did last, from the end of ``log``: the compiler's latest step
    (``[33/77] sparse_maxpool.cpp``) when it runs one, or else the last non-blank line,
    shortened to fit a terminal line."""
    with open(log, "rb") as handle:
        handle.seek(max(0, handle.seek(0, os.SEEK_END) - 2**16))
        tail = handle.read().decode("utf-8", "replace")
    steps = _COMPILE_STEP.findall(tail)
    if steps:
        count, source = steps[-1]
        return f"compiling [{count}] {os.path.basename(source)}"
    lines = [line.strip() for line in tail.splitlines() if line.strip()]
    last = lines[-1] if lines else "(nothing yet)"
    return last if len(last) <= 120 else last[:57] + " ... " + last[-58:]


#: A step of ninja's compile, as pip -v shows a setuptools build: ``[33/77] c++ ... -c -c FILE.cpp -o ...``.
_COMPILE_STEP = re.compile(r"^\s*\[(\d+/\d+)\] \S+ .*? (\S+\.(?:cpp|cc|cxx|cu|c)) ", re.MULTILINE)


def announce(line: str) -> None:
    """Says a line about a long step. tests/conftest.py replaces this with pytest's terminal,
    so the lines show in pytest's normal output, not in a test's captured output."""
    print(line, file=sys.stderr, flush=True)


@contextlib.contextmanager
def slow_step(what: str, expected: str) -> Iterator[Path]:
    """Says when a long step starts (what, how long it takes on 2 cores, where its log
    is) and when it ends, so a cold first run does not look hung. Yields the log's path."""
    LOGS.mkdir(parents=True, exist_ok=True)
    log = LOGS / (re.sub(r"[^\w.=-]+", "-", what).strip("-") + ".log")
    log.write_text("")
    announce(f"mmcv-patcher tests: {what}: starting, about {expected} on 2 cores (log: {log})")
    started = time.monotonic()
    try:
        yield log
    except BaseException:
        announce(f"mmcv-patcher tests: {what}: FAILED after {time.monotonic() - started:.0f} s (log: {log})")
        raise
    announce(f"mmcv-patcher tests: {what}: done in {time.monotonic() - started:.0f} s")


@contextlib.contextmanager
def made_once(artefact: str) -> Iterator[None]:
    """Holds the lock of one cached artefact while it is looked for and made: another test
    process (a pytest-xdist worker) that needs it waits, then finds it made."""
    locks = CACHE / "locks"
    locks.mkdir(parents=True, exist_ok=True)
    with open(locks / (re.sub(r"[^\w.=-]+", "-", artefact) + ".lock"), "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def buildenv() -> Path:
    """The python of a virtualenv with torch, numpy and setuptools<70: old mmcv setup.py
    files import them (pkg_resources, torch.utils.cpp_extension) even to report metadata."""
    python = BUILDENV / "bin" / "python"
    ready = BUILDENV / ".ready"
    with made_once("buildenv"):
        if ready.exists():
            return python
        with slow_step("making the build environment (torch, numpy, setuptools<70)", "2 minutes") as log:
            venv.EnvBuilder(with_pip=True, clear=True).create(str(BUILDENV))
            run([python, "-m", "pip", "install", "-q", TORCH], log=log)
            # torch's metadata asks for a newer setuptools; the old setup.py files need <70.
            run([python, "-m", "pip", "install", "-q", "numpy", "setuptools<70", "wheel", "mmengine"], log=log)
        ready.write_text("ok\n")
    return python


def _pip(release: Release, command: str) -> List[object]:
    """``pip COMMAND`` set up for preparing or building the release's sdist."""
    if release.isolated:
        return [sys.executable, "-m", "pip", command]
    return [buildenv(), "-m", "pip", command, "--no-build-isolation"]


def download(release: Release) -> Path:
    """The release's file from the package index (sdist, or the wheel for wheel-only ones)."""
    with made_once(f"download-{release.id}"):
        return _download(release)


def _download(release: Release) -> Path:
    found = _find(DISTS, release, (".tar.gz", ".zip", ".whl"))
    if found is not None:
        return found
    DISTS.mkdir(parents=True, exist_ok=True)
    pip = (
        [sys.executable, "-m", "pip", "download"] if release.distribution in _WHEEL_ONLY else _pip(release, "download")
    )
    with slow_step(f"downloading {release.spec}", "10 seconds") as log:
        if release.distribution in _WHEEL_ONLY:
            run([*pip, "-q", "--no-deps", "--only-binary", ":all:", release.spec, "-d", DISTS], log=log)
        else:
            run(
                [*pip, "-q", "--no-deps", "--no-binary", release.distribution, release.spec, "-d", DISTS],
                release.naming_env,
                log=log,
            )
    found = _find(DISTS, release, (".tar.gz", ".zip", ".whl"))
    if found is None:
        raise RuntimeError(f"pip downloaded nothing for {release.spec} into {DISTS}")
    return found


def wheel(release: Release) -> Path:
    """An installable wheel: the index's own, or one built once from the sdist (no ops)."""
    downloaded = download(release)
    if downloaded.suffix == ".whl":
        return downloaded
    if release.naming_env["MMCV_WITH_OPS"] == "1":
        raise ValueError(f"{release.spec} has compiled ops; only ops_wheel() builds it")
    return _built(release, WHEELS, release.naming_env, "building a pure-Python wheel", "10 seconds")


def ops_wheel() -> Path:
    """mmcv 2.1.0 built from its sdist with CPU ops (MMCV_WITH_OPS=1, FORCE_CUDA=0), once.
    Needs a C++ compiler and the Python headers. pip runs verbosely here, so the log fills
    with the compiler's lines as the build goes."""
    env = dict(OPS.naming_env, MAX_JOBS=str(os.cpu_count() or 1))
    return _built(OPS, WHEELS / "ops", env, "building the wheel with its C++ CPU ops", OPS_BUILD_TIME, verbose=True)


#: How long the CPU-ops build takes on 2 cores: quiet, and with the machine's other core
#: busy (as when the rest of the suite runs beside it).
OPS_BUILD_TIME = "8 to 25 minutes quiet, up to 55 loaded,"


def _built(
    release: Release, directory: Path, env: Dict[str, str], what: str, expected: str, *, verbose: bool = False
) -> Path:
    """The wheel built from the release's sdist with ``env``, cached in ``directory``."""
    with made_once(f"{directory.name}-{release.id}"):
        return _build(release, directory, env, what, expected, verbose=verbose)


def _build(release: Release, directory: Path, env: Dict[str, str], what: str, expected: str, *, verbose: bool) -> Path:
    built = _find(directory, release, (".whl",))
    if built is not None:
        return built
    sdist = download(release)
    directory.mkdir(parents=True, exist_ok=True)
    with slow_step(f"{release.spec}: {what}", expected) as log:
        run([*_pip(release, "wheel"), "-v" if verbose else "-q", "--no-deps", sdist, "-w", directory], env, log=log)
    built = _find(directory, release, (".whl",))
    if built is None:
        raise RuntimeError(f"building {sdist} with {env} produced no wheel in {directory}")
    return built


#: mmdetection, for the tests and benchmarks that run a real detector (with mmengine from the build environment).
MMDET = "mmdet==3.3.0"


def mmdet_site() -> Path:
    """A directory holding mmdet 3.3.0 and what it needs beyond the build environment (which
    has torch and mmengine), installed once under the cache; put it on ``PYTHONPATH``."""
    site = CACHE / "mmdet-3.3.0"
    with made_once(site.name):
        if (site / ".ready").exists():
            return site
        with slow_step(f"installing {MMDET} and its dependencies", "1 minute") as log:
            run(
                [
                    sys.executable,
                    "-m",
                    "pip",
                    "install",
                    "-q",
                    "--target",
                    site,
                    MMDET,
                    "pycocotools",
                    "scipy",
                    "shapely",
                    "terminaltables",
                    "matplotlib",
                    "six",
                    "tqdm",
                ],
                log=log,
            )
        (site / ".ready").write_text("ok\n")
    return site


#: mmrotate, for the rotated detectors: the one release that installs beside mmdet 3.3.0 and mmcv
#: 2.1.0 (OpenMMLab's last, 1.0.0rc1, asserts mmdet 3.1.0 or older, which asserts an older mmcv).
MMROTATE = "onedl-mmrotate==1.2.1"


def mmrotate_site() -> Path:
    """A directory holding onedl-mmrotate 1.2.1 alone (``--no-deps``: it declares
    onedl-mmdetection and onedl-mmcv, and runs on mmdet 3.3.0 and this mmcv), installed once
    under the cache; put it on ``PYTHONPATH`` beside :func:`mmdet_site`'s."""
    site = CACHE / "onedl-mmrotate-1.2.1"
    with made_once(site.name):
        if (site / ".ready").exists():
            return site
        with slow_step(f"installing {MMROTATE}", "1 minute") as log:
            run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", site, MMROTATE], log=log)
        (site / ".ready").write_text("ok\n")
    return site


def torch_venv(where: Path, wheel_file: Path) -> Path:
    """A throwaway venv with ``wheel_file`` installed for real; torch and mmcv's other
    dependencies come from the build env (added by a ``.pth`` hook, after the venv's own
    site-packages) instead of being installed again. Returns its python."""
    python = make_venv(where)
    hook = site_packages(python) / "zz_mmcv_patcher_runner.pth"
    hook.write_text(hook.read_text() + f"import site; site.addsitedir({str(site_packages(buildenv()))!r})\n")
    pip_install(python, "--no-index", wheel_file)
    return python


def detector_venv(where: Path) -> Path:
    """:func:`torch_venv` with mmcv 2.1.0's CPU-ops build, and mmdet 3.3.0 and onedl-mmrotate
    1.2.1 installed into it for real (their files are what ``apply`` patches there); their
    other dependencies come from :func:`mmdet_site`, added by the same ``.pth`` hook, after
    the venv's own site-packages (so the venv's mmdet is the one imported). Returns its python."""
    python = torch_venv(where, ops_wheel())
    pip_install(python, "--no-index", *(wheel(each) for each in DETECTORS))
    hook = site_packages(python) / "zz_mmcv_patcher_runner.pth"
    hook.write_text(hook.read_text() + f"import site; site.addsitedir({str(mmdet_site())!r})\n")
    return python


def released_file(release: Release, inside: str = "mmcv/ops/nms.py") -> bytes:
    """The bytes of a file exactly as the release ships it, read from the archive."""
    archive = download(release)
    if archive.suffix == ".whl":
        with zipfile.ZipFile(archive) as zipped:
            return zipped.read(inside)
    with tarfile.open(archive) as tarred:
        for member in tarred.getmembers():
            if member.name.split("/", 1)[-1] == inside:
                extracted = tarred.extractfile(member)
                assert extracted is not None
                return extracted.read()
    raise KeyError(f"{inside} not in {archive}")


def unpack(release: Release, into: Path) -> Path:
    """The sdist unpacked under ``into``, as a user's source checkout; returns its root."""
    archive = download(release)
    with tarfile.open(archive) as tarred:
        members = tarred.getmembers()
        for member in members:
            if not (member.isfile() or member.isdir()) or member.name.startswith("/") or ".." in member.name.split("/"):
                raise RuntimeError(f"unsafe member {member.name} in {archive}")
        tarred.extractall(into, members=members)
    roots = {member.name.split("/", 1)[0] for member in members}
    assert len(roots) == 1, roots
    return into / roots.pop()


def make_venv(where: Path, python: str = sys.executable, *, with_tool: bool = True, with_pip: bool = False) -> Path:
    """A throwaway virtualenv; returns its python.

    With ``with_tool`` the test run's own environment (this mmcv-patcher and its
    dependencies) is added after the venv's site-packages by a ``.pth`` hook, so the tool
    runs inside the venv exactly as if installed beside mmcv there, in a fraction of the time.
    """
    run([python, "-m", "venv", *([] if with_pip else ["--without-pip"]), where])
    venv_python = where / "bin" / "python"
    if with_tool:
        runner = [p for p in sys.path if p.endswith("site-packages")]
        hook = "".join(f"import site; site.addsitedir({p!r})\n" for p in runner)
        (site_packages(venv_python) / "zz_mmcv_patcher_runner.pth").write_text(hook)
    return venv_python


def pip_install(
    venv_python: Path, *requirements: object, env: Optional[Dict[str, str]] = None, deps: bool = False
) -> None:
    """Installs into the venv with this interpreter's pip, offline for local files; the
    requirements' own dependencies too only with ``deps``."""
    run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            venv_python,
            "install",
            "-q",
            *([] if deps else ["--no-deps"]),
            *requirements,
        ],
        env,
    )


def site_packages(venv_python: Path) -> Path:
    return Path(run([venv_python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip())


def tool(
    python: Path, *args: str, cwd: Optional[Path] = None, env: Optional[Dict[str, str]] = None
) -> subprocess.CompletedProcess[str]:
    """``python -m mmcv_patcher ARGS`` as a user runs it (from a directory of their own, not
    this checkout, whose ``mmcv_patcher/`` would shadow the installed package); never
    raises on a non-zero exit."""
    return subprocess.run(
        [str(python), "-m", "mmcv_patcher", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        universal_newlines=True,
        cwd=str(cwd or tempfile.gettempdir()),
        env=dict(os.environ, **(env or {})),
    )


def pyenv_python(version: str) -> str:
    """The pyenv interpreter of ``version`` (X.Y); skips the test without one, fails it on CI."""
    root = os.environ.get("PYENV_ROOT") or str(Path.home() / ".pyenv")
    found = sorted(glob.glob(f"{root}/versions/{version}.*/bin/python{version}"))
    if not found:
        if os.environ.get("CI"):
            pytest.fail(f"Python {version} is not installed under {root}; CI must prove it")
        pytest.skip(f"Python {version} is not installed under {root}")
    return found[-1]
