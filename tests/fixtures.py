"""What the tests share, one helper per job: synthetic mmcv trees and their metadata (written
here: no mmcv code is copied into this repository), and the one way tests run the CLI.

The synthetic tree holds every file a registered patch names: ``ops/nms.py`` as written
below (the shape of mmcv 2.1.0's), and any other file made of its patches' own first
examples, so a new patch module brings its test file with it.
"""

from __future__ import annotations

import ast
import json
import os
import py_compile
import re
import subprocess
import sys
from pathlib import Path
from typing import IO, Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import pytest

from mmcv_patcher import plan, ranges, registry, write
from mmcv_patcher.interpreter import Found, Interpreter
from mmcv_patcher.model import PACKAGES, Affected, Case, Edit, Example, Patch, Release, per_distribution
from mmcv_patcher.source import Source, record_hash, sha256_hex

#: This checkout, which the runners of tests/e2e_ops import from
REPOSITORY = Path(__file__).resolve().parents[1]

ANCHOR = "scores_after_nms[mask[keep]] = dets[:, -1]"
FIXED = "scores_after_nms[mask[keep]] = dets[:, -1].to(scores_after_nms.dtype)"
ANCHOR_LINE = 18

#: The shape of mmcv 2.1.0's ops/nms.py, reduced to the statements the patches care about.
NMS = """\
import torch


def nms(boxes, scores, iou_threshold, offset=0, score_threshold=0, max_num=-1):
    inds = NMSop.apply(boxes, scores, iou_threshold, offset, score_threshold, max_num)


def batched_nms(boxes, scores, idxs, nms_cfg, class_agnostic=False):
    split_thr = nms_cfg.pop('split_thr', 10000)
    if boxes.shape[0] < split_thr:
        dets, keep = nms(boxes, scores, **nms_cfg)
        scores = dets[:, -1]
    else:
        scores_after_nms = scores.new_zeros(scores.size())
        for id in torch.unique(idxs):
            mask = (idxs == id).nonzero(as_tuple=False).view(-1)
            dets, keep = nms(boxes[mask], scores[mask], **nms_cfg)
            scores_after_nms[mask[keep]] = dets[:, -1]
    if boxes.size(-1) == 5:
        offsets = idxs.to(boxes) * (max_coordinate + torch.tensor(1).to(boxes))
    else:
        offsets = idxs.to(boxes) * (max_coordinate + torch.tensor(1).to(boxes))
    return boxes, scores


def soft_nms(boxes, scores, iou_threshold=0.3, sigma=0.5, min_score=1e-3, method='linear', offset=0):
    dets, inds = SoftNMSop.apply(boxes.cpu(), scores.cpu(), float(iou_threshold), float(sigma), float(min_score), method_dict[method], int(offset))
    dets = dets[:inds.size(0)]


def nms_rotated(dets, scores, iou_threshold, labels=None, clockwise=True):
    keep_inds = ext_module.nms_rotated(dets_wl, scores, order, dets_sorted, input_labels, iou_threshold, multi_label)
"""
assert NMS.splitlines()[ANCHOR_LINE - 1].strip() == ANCHOR
#: batched_nms alone, as it stands in NMS (for files with it twice, or a copy of it).
BATCHED = NMS[NMS.index("def batched_nms") : NMS.index("def soft_nms")].rstrip("\n") + "\n"
#: NMS with the anchor also in nms(), the function above batched_nms.
ANCHOR_IN_NMS_TOO = NMS.replace("max_num)\n\n\ndef batched", f"max_num)\n    {ANCHOR}\n\n\ndef batched", 1)


def lines_of(text: str, stripped: str) -> List[int]:
    """1-based numbers of the lines of ``text`` that are ``stripped`` once stripped."""
    return [number for number, line in enumerate(text.splitlines(), 1) if line.strip() == stripped]


def nms_with(statement: str) -> str:
    """NMS with the anchor statement replaced by ``statement`` (indentation added)."""
    return NMS.replace(ANCHOR, statement)


def patches_of(file: str = "ops/nms.py") -> List[Patch]:
    """The registered patches of one file, in registry order: the family whose markers that file shares."""
    return [patch for patch in registry.all_patches() if patch.file == file]


def synthetic_files(package: str = "mmcv") -> Dict[str, str]:
    """Path inside ``package`` -> the synthetic source of every file a registered patch of
    that package names, each patch of it unpatched (mmcv 2.1.0, mmdet 3.3.0, mmrotate 1.0.0rc1)."""
    files = {"ops/nms.py": NMS} if package == "mmcv" else {}
    examples: Dict[str, List[str]] = {}
    for patch in registry.all_patches():
        if patch.package == package and patch.file not in files:
            examples.setdefault(patch.file, []).append(patch.examples[0].before)
    files.update((file, "\n\n".join(befores)) for file, befores in examples.items())
    return files


#: The release of each package the synthetic tree holds beside mmcv (whose version each tree names).
OTHER_RELEASES = {"mmdet": ("mmdet", "3.3.0"), "mmrotate": ("mmrotate", "1.0.0rc1")}
#: The packages that have registered patches, in the order runs take them.
PATCHED_PACKAGES = tuple(dict.fromkeys(patch.package for patch in registry.all_patches()))


def patched(text: Optional[str] = None, file: str = "ops/nms.py", family: Optional[Sequence[Patch]] = None) -> str:
    """``file``'s synthetic text (or ``text``) after apply with each of ``family`` (default:
    every registered patch of that file, as the CLI writes it; mmcv 2.1.0, mmdet 3.3.0, mmrotate 1.0.0rc1)."""
    family = patches_of(file) if family is None else family
    package = family[0].package if family else "mmcv"
    text = synthetic_files(package)[file] if text is None else text
    for patch in family:
        release = Release(*OTHER_RELEASES.get(package, ("mmcv", "2.1.0")), package=package)
        action = plan.plan_apply(
            plan.assess(Source(text, "utf-8"), patch, release, need_text=True, family=family),
            force=False,
        )
        assert action.ok and action.new_text is not None, action
        text = action.new_text
    return text


def marked(patch: Patch, example: Example) -> str:
    """``example.after`` as apply writes it: our marker at the end of the last line of each
    statement that is one of the patch's fixes, keeping the sha256 of ``example.before``."""
    fixes = {ast.dump(ast.parse(edit.fix).body[0]) for edit in patch.edits}
    ends = {
        node.end_lineno
        for node in ast.walk(ast.parse(example.after))
        if isinstance(node, ast.stmt) and ast.dump(node) in fixes
    }
    mark = f"  # mmcv-patcher: {patch.id} sha256={sha256_hex(example.before.encode())}"
    return "".join(
        line.rstrip("\n") + mark + "\n" if number in ends else line
        for number, line in enumerate(example.after.splitlines(True), 1)
    )


def compiled(source: str, **options: Any) -> Path:
    """The ``.pyc`` :func:`py_compile.compile` writes for ``source`` (raising on an error)."""
    pyc = py_compile.compile(source, doraise=True, **options)
    assert pyc is not None
    return Path(pyc)


def make_tree(
    root: Path,
    nms: str = NMS,
    *,
    version: Optional[str] = "2.1.0",
    distribution: Optional[str] = None,
    record: bool = True,
) -> Path:
    """``root/mmcv`` with every synthetic file (``ops/nms.py`` holding ``nms``) and
    ``version.py``, and beside it every other package with registered patches and its files
    (:data:`OTHER_RELEASES`); with ``distribution`` (mmcv's), each package's metadata
    (:func:`dist_info`). Returns the nms.py."""
    for package in dict.fromkeys(("mmcv", *PATCHED_PACKAGES)):
        files = dict(synthetic_files(package), **({"ops/nms.py": nms} if package == "mmcv" else {}))
        owner, release = (distribution, version) if package == "mmcv" else OTHER_RELEASES[package]
        _package_tree(root, package, files, release, owner if distribution is not None else None, record)
    return root / "mmcv" / "ops" / "nms.py"


def _package_tree(
    root: Path,
    package: str,
    files: Mapping[str, str],
    version: Optional[str],
    distribution: Optional[str],
    record: bool,
) -> None:
    """``root/package`` holding ``files`` (and ``version.py`` saying ``version``), with its
    distribution's metadata beside it."""
    directory = root / package
    directory.mkdir(parents=True)
    (directory / "__init__.py").write_text(f"raise ImportError('mmcv-patcher must never import {package}')\n")
    for file, text in files.items():
        (directory / file).parent.mkdir(parents=True, exist_ok=True)
        (directory / file).write_bytes(text.encode("utf-8"))
        (directory / file).parent.joinpath("__init__.py").touch()
    if version is not None:
        (directory / "version.py").write_text(f"__version__ = '{version}'\n")
    if distribution is not None:
        listed = {
            path.relative_to(root).as_posix(): path.read_bytes() if record else None for path in directory.rglob("*.py")
        }
        dist_info(root, distribution, version or "0", listed)


def dist_info(
    root: Path, distribution: str, version: str, files: Mapping[str, Optional[bytes]], *, algorithm: str = "sha256"
) -> Path:
    """The ``.dist-info`` pip would write in ``root``: METADATA, and a RECORD listing each of
    ``files`` (POSIX path under ``root`` -> the bytes it was installed with, or None to
    list it without a hash), hashed with ``algorithm``."""
    info = root / f"{distribution.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {distribution}\nVersion: {version}\n")

    lines = [
        f"{path},{record_hash(data, algorithm)},{len(data)}" if data is not None else f"{path},,"
        for path, data in sorted(files.items())
    ]
    (info / "RECORD").write_text("\n".join(lines + [f"{info.name}/RECORD,,"]) + "\n")
    return info


def egg_info(root: Path, directory: str, name: str, version: str, listing: str, lines: str) -> None:
    """An ``.egg-info`` directory in ``root``: PKG-INFO and a file list (SOURCES.txt for an
    sdist, installed-files.txt for old pip's ``setup.py install``)."""
    info = root / directory
    info.mkdir()
    (info / "PKG-INFO").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    (info / listing).write_text(lines)


def expected_states(distribution: str, version: str, package: str = "mmcv") -> Dict[str, str]:
    """What ``status`` must say of each registered patch of ``package`` on a release's own
    files: unpatched in range, not-affected below it, and fixed-upstream past its end."""
    states = {}
    for patch in registry.all_patches():
        if patch.package != package:
            continue
        place, _ = ranges.standing(patch, Release(distribution, version))
        states[patch.id] = {
            ranges.Standing.AFFECTED: "unpatched",
            ranges.Standing.BELOW: "not-affected",
            ranges.Standing.OUTSIDE: "fixed-upstream",
        }[place]
    return states


# --- the state table on strings: the seed patch, and the family of nms.py --------------------

#: The engine's worked example, owned by the tests so that they stand without any one patch
#: module: ``batched_nms``'s index_put under AMP (the seed's crash), as a patch declares it.
#: Only the fields the engine reads carry data.
SEED = Patch(
    id="batched-nms-amp-dtype",
    summary="batched_nms: cast dets[:, -1] to the score buffer's dtype",
    affected=per_distribution((Affected(introduced="1.3.4", last_affected="2.2.0"),), (Affected(fixed="2.3.6"),)),
    file="ops/nms.py",
    function="batched_nms",
    edits=(Edit(ANCHOR, FIXED),),
    error="",
    case=Case(op="batched_nms", args=(), gave=""),
    examples=(),
    untouched=(),
)
[INSERTED] = SEED.edits[0].insertions
#: The patches of ops/nms.py whose markers that file shares in the string tests: the
#: registered ones, with :data:`SEED` in place of (or beside) a registered patch of its id.
FAMILY = sorted(
    [SEED, *(patch for patch in patches_of("ops/nms.py") if patch.id != SEED.id)], key=lambda patch: patch.id
)


def seeing(sys_path: Sequence[Path], mmcv_dir: Path) -> Interpreter:
    """An interpreter (as asked) with ``sys_path`` whose programs import mmcv from ``mmcv_dir``
    and find no other package with patches."""
    packages = tuple(
        (package, Found(str(mmcv_dir), None) if package == "mmcv" else Found(None, f"no {package} is importable"))
        for package in PACKAGES
    )
    return Interpreter("python", tuple(str(entry) for entry in sys_path), None, packages)


def registered(id: str) -> Patch:
    """The registered patch ``id``; the test is skipped when its module is not there."""
    found = [patch for patch in registry.all_patches() if patch.id == id]
    if not found:
        pytest.skip(f"no patch module for {id}")
    return found[0]


def recorded(text: str) -> str:
    """RECORD's hash field for a file holding ``text`` (UTF-8)."""
    return record_hash(text.encode())


def assess(
    text: str,
    version: Optional[str] = "2.1.0",
    distribution: Optional[str] = "mmcv",
    *,
    need_text: bool = True,
    record: Optional[str] = None,
    encoding: str = "utf-8",
) -> plan.Finding:
    """The seed patch's finding on ``text`` as ops/nms.py of that release (``record``: its RECORD hash)."""
    release = Release(distribution, version, {SEED.file: record} if record is not None else {})
    return plan.assess(Source(text, encoding), SEED, release, need_text=need_text)


def apply(text: str, **kwargs: Any) -> str:
    """``text`` after apply of the seed patch, which must succeed."""
    action = plan.plan_apply(assess(text, **kwargs), force=False)
    assert action.ok and action.new_text is not None, action
    return action.new_text


def revert(text: str, **kwargs: Any) -> str:
    """``text`` after revert of the seed patch, which must succeed."""
    action = plan.plan_revert(assess(text, **kwargs), SEED, Release("mmcv", "2.1.0"), force=False)
    assert action.ok and action.new_text is not None, action
    return action.new_text


def assess_family(text: str, patches: Sequence[Patch] = FAMILY, *, need_text: bool = True) -> Dict[str, plan.Finding]:
    """Each patch's finding on ``text`` (mmcv 2.1.0), with every patch of nms.py as the family
    (``need_text``: as apply asks, with each fix's text; False: as status and revert ask)."""
    every = plan.assess_all(
        Source(text, "utf-8"), [(p, Release("mmcv", "2.1.0")) for p in patches], need_text=need_text, family=FAMILY
    )
    return {p.id: finding for p, finding in zip(patches, every)}


def revert_family(text: str, *, force: bool) -> Tuple[bool, str]:
    """What revert of every patch gives, as the CLI runs it: each on the text the one after it left."""
    ok = True
    for patch in reversed(FAMILY):
        finding = assess_family(text, [patch], need_text=False)[patch.id]
        action = plan.plan_revert(finding, patch, Release("mmcv", "2.1.0"), force=force)
        ok = ok and action.ok
        text = action.new_text if action.new_text is not None else text
    return ok, text


# --- running the CLI ------------------------------------------------------------------------

#: ``sitecustomize`` that fails or stops the CLI at a chosen file-system call (its docstring says how).
INJECTOR = Path(__file__).parent / "faultinject"


def start(
    *args: str,
    python: Optional[Path] = None,
    flags: Tuple[str, ...] = (),
    cwd: Optional[Path] = None,
    env: Optional[Dict[str, str]] = None,
    stdout: Union[int, IO[str]] = subprocess.PIPE,
) -> "subprocess.Popen[str]":
    """``PYTHON [FLAGS] -m mmcv_patcher ARGS`` started as a user runs it: from a directory of
    their own (this checkout's ``mmcv_patcher/`` would shadow an installed one), with
    ``env`` added to this environment."""
    return subprocess.Popen(
        [str(python or sys.executable), *flags, "-m", "mmcv_patcher", *args],
        stdout=stdout,
        stderr=subprocess.PIPE,
        universal_newlines=True,
        cwd=str(cwd or Path(os.sep, "tmp")),
        env=dict(os.environ, **(env or {})),
    )


def tool(*args: str, timeout: float = 600, **how: object) -> "subprocess.CompletedProcess[str]":
    """:func:`start`, waited for (at most ``timeout`` seconds); never raises on a non-zero exit."""
    process = start(*args, **how)  # type: ignore[arg-type]
    out, err = process.communicate(timeout=timeout)
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def with_fault(fault: Optional[str] = None, log: Optional[Path] = None) -> Dict[str, str]:
    """The environment that loads :data:`INJECTOR` with ``MMCVP_FAULT`` and ``MMCVP_FAULT_LOG``
    (empty: none)."""
    return {
        "PYTHONPATH": os.pathsep.join(filter(None, [str(INJECTOR), os.environ.get("PYTHONPATH")])),
        "MMCVP_FAULT": fault or "",
        "MMCVP_FAULT_LOG": str(log or ""),
    }


def leftovers(nms: Path) -> List[str]:
    """Temporary files of ours beside ``nms`` or in its ``__pycache__``."""
    return [
        p.name
        for folder in (nms.parent, nms.parent / "__pycache__")
        if folder.is_dir()
        for p in folder.iterdir()
        if p.name.endswith(write.TEMP_SUFFIX)
    ]


def snapshot(root: Path) -> Dict[str, Tuple[bool, bytes]]:
    """Every path under root: whether it is a link, and its bytes (files) or target (links)."""
    found = {}
    for path in sorted(root.rglob("*")):
        if path.is_symlink():
            found[str(path)] = (True, os.readlink(path).encode())
        elif path.is_file():
            found[str(path)] = (False, path.read_bytes())
    return found


def refused(done: subprocess.CompletedProcess[str], *, file: Path) -> str:
    """The failure's lines naming ``file``, said once: the patches' results on stdout (one
    line for patches failing alike) or a failure that is no patch's on stderr, not both."""
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    results = [line for line in done.stdout.splitlines() if re.search(r": (drifted|unverified) at ", line)]
    errors = done.stderr.splitlines()
    assert bool(results) != bool(errors), done.stdout + done.stderr
    assert all(f" at {file}" in line for line in results) and all(
        line.startswith("mmcv-patcher: error: ") and str(file) in line for line in errors
    )
    return "\n".join(results + errors)


# --- the runners of tests/e2e_ops, in a venv with torch ---------------------------------------------


def answer(python: Path, *args: str, sites: Sequence[Path] = ()) -> Dict[str, Any]:
    """The JSON object ``python ARGS`` prints last (``sites``: put on its path)."""
    done = subprocess.run(
        [str(python), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        universal_newlines=True,
        env=dict(os.environ, PYTHONPATH=os.pathsep.join(map(str, sites))) if sites else None,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    document: Dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return document


def ask(
    python: Path, runner: str, cases: Iterable[Tuple[Any, ...]], sites: Sequence[Path] = ()
) -> Dict[Tuple[Any, ...], Any]:
    """What op runner ``tests/e2e_ops/RUNNER.py`` answers for each case, by case, in one process."""
    listed = list(cases)
    found = answer(python, "-m", f"tests.e2e_ops.{runner}", json.dumps(listed), sites=[REPOSITORY, *sites])["answers"]
    return dict(zip(listed, found))


#: The seed's message, as torch gives it in fp16
THE_ERROR = (
    "Index put requires the source and destination dtypes match, got Half for the destination and Float for the source."
)


def patches_named(ids: Iterable[str]) -> List[Patch]:
    """The registered patches ``ids``; the test is skipped where one's module is not there."""
    return [registered(id) for id in ids]


def applied(python: Path, *ids: str) -> None:
    """Applies the patches ``ids``, one run each, in order."""
    for id in ids:
        assert tool("apply", "--patch", id, python=python).returncode == 0, id
