"""The promise, on real mmcv running real NMS: AMP-style inputs crash batched_nms until
the patch is applied, the patched results match the fp32 run, and revert brings the crash
back. Uses mmcv 2.1.0 built with its CPU ops (built once, cached; see scripts/releases.py).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, NamedTuple, Sequence, Tuple

import pytest

from mmcv_patcher import registry
from scripts import releases, sweep_zoo
from tests.fixtures import tool

pytestmark = [pytest.mark.e2e, pytest.mark.release]

THE_ERROR = (
    "Index put requires the source and destination dtypes match, got Half for the destination and Float for the source."
)

#: Runs batched_nms on seeded AMP-style inputs (fp32 boxes, fp16 scores) and on the same
#: inputs with fp32 scores; prints what happened as JSON.
CALL = r"""
import json, sys, torch
from mmcv.ops import batched_nms
n = int(sys.argv[1])
g = torch.Generator().manual_seed(1)
xy = torch.rand(n, 2, generator=g) * 1000
boxes = torch.cat([xy, xy + torch.rand(n, 2, generator=g) * 100 + 1], 1)
scores = torch.rand(n, generator=g).half()
idxs = torch.randint(0, 4, (n,), generator=g)
cfg = dict(type="nms", iou_threshold=0.5)
ref_dets, ref_keep = batched_nms(boxes, scores.float(), idxs, dict(cfg))
out = {"ref_keep": ref_keep.tolist(), "ref_scores": ref_dets[:, -1].tolist()}
try:
    dets, keep = batched_nms(boxes, scores, idxs, dict(cfg))
    out.update(keep=keep.tolist(), dets=dets.tolist(), dtype=str(dets.dtype))
except RuntimeError as error:
    out["error"] = str(error)
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return releases.torch_venv(tmp_path_factory.mktemp("ops") / "venv", releases.ops_wheel())


def answer(python: Path, *args: str, sites: Sequence[Path] = ()) -> Dict[str, Any]:
    """The JSON object ``python ARGS`` prints last (``sites``: mmdet's and mmrotate's, on its path)."""
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


#: Appended to a script that defines ``run(*args)``: runs it on each case of the JSON list in
#: argv[1], in one process, and prints each answer (or the error it raised) in order.
ANSWERS = r"""
import json as _json, sys as _sys

def _answer(args):
    try:
        return run(*args)
    except Exception as error:
        return {"error": "%s: %s" % (type(error).__name__, str(error).splitlines()[0])}

print(_json.dumps({"answers": [_answer(args) for args in _json.loads(_sys.argv[1])]}))
"""


def answers(python: Path, script: str, cases: Dict[Any, Tuple[str, ...]]) -> Dict[Any, Any]:
    """What ``script``'s ``run`` (after :data:`COUNTING`) answers for each of ``cases`` (a key -> its
    arguments), by key."""
    found = answer(python, "-c", COUNTING + script + ANSWERS, json.dumps(list(cases.values())))["answers"]
    return dict(zip(cases, found))


class Cycle(NamedTuple):
    """What one op's cases answered: those that work on the release (``working``), and with
    every patch applied, those that failed on it (``fixed``) and the working ones (``still``)."""

    working: Dict[Any, Any]
    fixed: Dict[Any, Any]
    still: Dict[Any, Any]


def release_patched_release(
    python: Path,
    ask: Callable[[Iterable[Any]], Dict[Any, Any]],
    file: str,
    working: Iterable[Any],
    errors: Dict[Any, str],
) -> Cycle:
    """The cycle of an op's test: on the release the ``working`` cases answer and the others
    raise ``errors``; then every patch is applied and both are asked again; after ``revert``,
    ``ops/FILE`` is the release's bytes and the failing cases raise the same errors again."""
    installed = releases.site_packages(python) / "mmcv" / "ops" / file
    original = releases.released_file(releases.OPS, f"mmcv/ops/{file}")
    before = ask(working)
    assert not [found for found in before.values() if "error" in found], before
    assert ask(errors) == {case: {"error": error} for case, error in errors.items()}
    assert tool("apply", python=python).returncode == 0
    try:
        cycle = Cycle(before, ask(errors), ask(before))
    finally:
        assert tool("revert", python=python).returncode == 0
    assert installed.read_bytes() == original
    assert {case: found.get("error") for case, found in ask(errors).items()} == errors
    return cycle


def call(python: Path, boxes: int) -> Dict[str, Any]:
    return answer(python, "-c", CALL, str(boxes))


def test_crash_fix_and_crash_again(python: Path) -> None:
    nms = releases.site_packages(python) / "mmcv" / "ops" / "nms.py"
    original = releases.released_file(releases.OPS)
    assert nms.read_bytes() == original

    unpatched = call(python, 12000)
    assert unpatched["error"] == THE_ERROR

    assert tool("apply", python=python).returncode == 0
    patched = call(python, 12000)
    assert "error" not in patched
    assert patched["keep"] == patched["ref_keep"], "the patched call must keep the same boxes as the fp32 run"
    scores = [row[-1] for row in patched["dets"]]
    assert len(scores) == len(patched["ref_scores"]) > 1000
    assert all(abs(a - b) <= 1e-3 * max(1.0, abs(b)) for a, b in zip(scores, patched["ref_scores"]))

    assert tool("revert", python=python).returncode == 0
    assert nms.read_bytes() == original
    assert call(python, 12000)["error"] == THE_ERROR


def test_below_split_thr_results_are_identical_with_and_without_the_patch(python: Path) -> None:
    before = call(python, 5000)
    assert tool("apply", python=python).returncode == 0
    try:
        after = call(python, 5000)
    finally:
        assert tool("revert", python=python).returncode == 0
    assert "error" not in before and before == after


#: (patch, dtype) whose verify case already works on the release, on this CPU build.
RELEASE_HAS_THE_KERNEL = (
    ("deform-conv-fp32-kernel", "float16"),
    ("modulated-deform-conv-fp32-kernel", "float16"),
)


def test_verify_reports_each_patchs_case_crashing_then_surviving_in_fp16_and_bf16(python: Path) -> None:
    crashed = tool("verify", "--json", python=python)
    assert crashed.returncode == 1
    report = json.loads(crashed.stdout)["verify"]
    verdicts = {
        (id, dtype): case["verdict"] for id, by_dtype in report["cases"].items() for dtype, case in by_dtype.items()
    }
    assert set(verdicts) == {(patch.id, dtype) for patch in registry.all_patches() for dtype in ("float16", "bfloat16")}
    # the CUDA-only ops' cases are skipped on the CPU, and count neither way
    skipped = {
        (patch.id, dtype)
        for patch in registry.all_patches()
        if "cpu" not in patch.case.devices
        for dtype in ("float16", "bfloat16")
    }
    assert {key for key, verdict in verdicts.items() if verdict == "skipped"} == skipped and len(skipped) >= 6
    cases = {key: verdict for key, verdict in verdicts.items() if key not in skipped}
    # every other case crashes on the release (batched-nms-fp32-offsets: the kernel refuses the boxes first),
    # except where its op has a kernel for the dtype here: mmcv's CPU deformable convolutions lack bf16 only
    assert {key: verdict for key, verdict in cases.items() if verdict != "crashed"} == dict.fromkeys(
        RELEASE_HAS_THE_KERNEL, "survived"
    )
    assert len(cases) >= 20
    split = report["cases"]["batched-nms-amp-dtype"]
    assert split["float16"]["detail"] == "RuntimeError: " + THE_ERROR
    assert split["bfloat16"]["detail"] == "RuntimeError: " + THE_ERROR.replace("Half", "BFloat16")
    assert split["float16"]["gave"] == "batched_nms: 12000 fp32 boxes, fp16 scores, 3 classes (split_thr 10000)"
    assert (
        report["cases"]["roi-align-fp32-kernel"]["bfloat16"]["detail"]
        == "NotImplementedError: \"ROIAlign_forward\" not implemented for 'BFloat16'"
    )
    assert report["verdict"] == "crashed" and report["detail"].startswith(
        f"{len(RELEASE_HAS_THE_KERNEL)} of {len(cases)} cases survived"
    )
    assert Path(report["mmcv_dir"]) == releases.site_packages(python) / "mmcv"

    assert tool("apply", "--patch", "nms-fp32-kernel", python=python).returncode == 0
    try:
        narrowed = tool(
            "verify",
            "--patch",
            "nms-fp32-kernel",
            "--patch",
            "batched-nms-fp32-offsets",
            "--dtype",
            "float16",
            "--json",
            python=python,
        )
        assert tool("apply", python=python).returncode == 0
        survived = tool("verify", python=python)
    finally:
        assert tool("revert", python=python).returncode == 0
    narrowed_cases = json.loads(narrowed.stdout)["verify"]["cases"]
    assert {
        id: {dtype: case["verdict"] for dtype, case in by_dtype.items()} for id, by_dtype in narrowed_cases.items()
    } == {
        "nms-fp32-kernel": {"float16": "survived"},
        "batched-nms-fp32-offsets": {"float16": "wrong"},  # the fp16 class offsets overflow
    }
    assert narrowed.returncode == 1
    assert survived.returncode == 0, survived.stdout + survived.stderr
    assert "imports mmcv and torch in a child process" in survived.stdout
    assert "nms-rotated-fp32-kernel (bfloat16): survived: kept the same" in survived.stdout
    assert "roi-align-fp32-kernel (bfloat16): survived: gave bfloat16 the same values as fp32" in survived.stdout
    assert (
        f"survived: {len(cases)} of {len(cases)} cases survived; skipped, with no cpu kernel in mmcv: "
        in survived.stdout
    )
    assert (
        "sigmoid-focal-loss-fp32-kernel (bfloat16): skipped: mmcv has no cpu kernel for sigmoid_focal_loss"
        in survived.stdout
    )


def test_verify_on_mmcv_lite_says_ops_are_missing_without_a_traceback(tmp_path: Path) -> None:
    lite = next(r for r in releases.INSTALLED if r.id == "mmcv-lite-2.2.0")
    python = releases.torch_venv(tmp_path / "venv", releases.wheel(lite))
    done = tool("verify", python=python)
    assert done.returncode == 1 and done.stderr == ""
    mmcv_dir = releases.site_packages(python) / "mmcv"
    *others, last = registry.ops(registry.all_patches())
    every_op = f"{', '.join(others)} or {last}" if others else last
    reason = f"unavailable: mmcv at {mmcv_dir} has no compiled ops (mmcv-lite, or a build without MMCV_WITH_OPS=1), so there is no {every_op} to run: install mmcv of the same version in its place (mim install mmcv==VERSION takes a wheel built for your torch and CUDA; pip install mmcv==VERSION builds the ops)"
    assert done.stdout.splitlines()[-1] == reason and done.stdout.count(reason) == 1
    one = tool("verify", "--patch", "roi-align-fp32-kernel", python=python)
    assert "so there is no RoIAlign to run: install mmcv" in one.stdout.splitlines()[-1], "the patch's own op"


def test_verify_without_torch_says_first_that_there_are_no_ops_then_no_torch(tmp_path: Path) -> None:
    lite = next(r for r in releases.INSTALLED if r.id == "mmcv-lite-2.2.0")
    python = releases.make_venv(tmp_path / "venv")
    releases.pip_install(python, "--no-index", releases.wheel(lite))
    done = tool("verify", "--json", python=python)
    assert done.returncode == 1 and "Traceback" not in done.stdout + done.stderr
    report = json.loads(done.stdout)["verify"]
    assert report["verdict"] == "unavailable"
    assert report["detail"].startswith(f"mmcv at {releases.site_packages(python) / 'mmcv'} has no compiled ops")
    assert report["detail"].endswith(
        "; torch cannot be imported (ModuleNotFoundError: No module named 'torch'): install torch too"
    )


def test_verify_with_ops_but_without_torch_says_torch_is_missing(tmp_path: Path) -> None:
    python = releases.make_venv(tmp_path / "venv")
    releases.pip_install(python, "--no-index", releases.ops_wheel())
    done = tool("verify", "--json", python=python)
    assert done.returncode == 1 and "Traceback" not in done.stdout + done.stderr
    report = json.loads(done.stdout)["verify"]
    assert (report["verdict"], report["detail"]) == (
        "unavailable",
        "torch cannot be imported (ModuleNotFoundError: No module named 'torch'): install torch",
    )


# --- the patch pack: every AMP case of nms.py ------------------------------------------------

#: Runs each case, in the mode given: "amp" (what AMP gives: the marked tensors in the AMP
#: dtype given, float16 or bfloat16), "rounded" (fp32 copies of those same values) or "fp32"
#: (plain fp32 inputs). Prints, per case, the error or what it kept (indices), the dets'
#: dtype and a digest of their bytes.
CASES = r"""
import hashlib, json, sys, torch
from mmcv.ops import batched_nms, nms, nms_rotated, soft_nms
mode, amp = sys.argv[1], getattr(torch, sys.argv[2])
g = torch.Generator().manual_seed(3)

def boxes_of(n, spread=1000.0):
    xy = torch.rand(n, 2, generator=g) * spread
    return torch.cat([xy, xy + torch.rand(n, 2, generator=g) * 100 + 1], 1)

def rotated_of(n):
    ctr = torch.rand(n, 2, generator=g) * 500
    wh = torch.rand(n, 2, generator=g) * 60 + 4
    return torch.cat([ctr, wh, (torch.rand(n, 1, generator=g) - 0.5) * 3], 1)

b1, s1, i1 = boxes_of(3000), torch.rand(3000, generator=g), torch.randint(0, 5, (3000,), generator=g)
b2, s2, i2 = boxes_of(2000), torch.rand(2000, generator=g), torch.randint(0, 80, (2000,), generator=g)
b3, s3, i3 = boxes_of(12000), torch.rand(12000, generator=g), torch.randint(0, 3, (12000,), generator=g)
r4, s4 = rotated_of(1500), torch.rand(1500, generator=g)
fp16 = lambda t: t.to(amp) if mode == "amp" else t.to(amp).float() if mode == "rounded" else t
cases = {
    "nms": lambda: nms(fp16(b1), fp16(s1), 0.5),
    "soft_nms": lambda: soft_nms(b1, fp16(s1), 0.5, min_score=0.05),
    "batched_nms(soft_nms)": lambda: batched_nms(b1, fp16(s1), i1, dict(type="soft_nms", iou_threshold=0.5, min_score=0.05)),
    "batched_nms(80 classes)": lambda: batched_nms(fp16(b2), fp16(s2), i2, dict(type="nms", iou_threshold=0.5)),
    "batched_nms(split)": lambda: batched_nms(b3, fp16(s3), i3, dict(type="nms", iou_threshold=0.5)),
    "nms_rotated": lambda: nms_rotated(fp16(r4), fp16(s4), 0.3),
}
out = {}
for name, call in cases.items():
    try:
        dets, keep = call()
        out[name] = {"keep": keep.tolist(), "dtype": str(dets.dtype), "digest": hashlib.sha256(dets.detach().float().numpy().tobytes()).hexdigest()[:16],
                     "raw": hashlib.sha256(dets.detach().contiguous().view(torch.uint8).numpy().tobytes()).hexdigest()[:16]}
    except Exception as error:
        out[name] = {"error": "%s: %s" % (type(error).__name__, str(error).splitlines()[0])}
print(json.dumps(out))
"""
#: What each case raises on the release, per AMP dtype: the texts users search for.
AMP_ERRORS = {
    dtype: {
        "nms": f"RuntimeError: expected scalar type Float but found {name}",
        "soft_nms": f"RuntimeError: expected scalar type Float but found {name}",
        "batched_nms(soft_nms)": f"RuntimeError: expected scalar type Float but found {name}",
        "batched_nms(split)": "RuntimeError: " + THE_ERROR.replace("Half", name),
        "nms_rotated": f"NotImplementedError: \"nms_rotated\" not implemented for '{name}'",
    }
    for dtype, name in (("float16", "Half"), ("bfloat16", "BFloat16"))
}


def cases(python: Path, mode: str, dtype: str) -> Dict[str, Any]:
    return answer(python, "-c", CASES, mode, dtype)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_every_amp_case_fails_before_apply_keeps_the_fp32_boxes_after_and_fails_again_after_revert(
    python: Path, dtype: str
) -> None:
    nms = releases.site_packages(python) / "mmcv" / "ops" / "nms.py"
    original = releases.released_file(releases.OPS)
    errors = AMP_ERRORS[dtype]
    reference = cases(python, "rounded", dtype)  # fp32 copies of the same values, unpatched
    fp32_before = cases(python, "fp32", dtype)
    assert not any("error" in case for case in reference.values()), reference
    before = cases(python, "amp", dtype)
    for name, error in errors.items():
        assert before[name].get("error") == error, (name, before[name])
    # boxes of 80 classes: the kernel refuses them; with only the kernel fixed, the class
    # offsets overflow fp16 (and lose bf16's few bits) and batched_nms silently keeps other boxes
    assert before["batched_nms(80 classes)"]["error"] == errors["nms"]
    assert tool("apply", "--patch", "nms-fp32-kernel", python=python).returncode == 0
    try:
        kernel_only = cases(python, "amp", dtype)["batched_nms(80 classes)"]
    finally:
        assert tool("revert", python=python).returncode == 0
    assert "error" not in kernel_only and kernel_only["keep"] != reference["batched_nms(80 classes)"]["keep"]

    assert tool("apply", python=python).returncode == 0
    try:
        after = cases(python, "amp", dtype)
        fp32_after = cases(python, "fp32", dtype)
    finally:
        assert tool("revert", python=python).returncode == 0
    for name, case in after.items():
        assert "error" not in case, (name, case)
        assert case["keep"] == reference[name]["keep"], f"{name}: the boxes the same values keep in fp32"
    assert after["nms"]["dtype"] == f"torch.{dtype}" and after["soft_nms"]["dtype"] == "torch.float32"
    assert fp32_after == fp32_before, "fp32 inputs: bit-identical values and dtypes with every patch applied"

    assert nms.read_bytes() == original
    again = cases(python, "amp", dtype)
    assert {name: again[name].get("error") for name in errors} == errors


#: What runs before each op script below: ``Copies``, a dispatch mode that counts the copies
#: (``aten._to_copy``) made inside it, ``digest``, a short hash of a tensor's values, and
#: ``difference``, the largest difference of two tensors relative to the second's largest value.
COUNTING = r"""
import hashlib, torch
from torch.utils._python_dispatch import TorchDispatchMode

class Copies(TorchDispatchMode):
    count = 0
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        Copies.count += func.__name__.startswith("_to_copy")
        return func(*args, **(kwargs or {}))

def digest(t):
    return hashlib.sha256(t.detach().float().numpy().tobytes()).hexdigest()[:16]

def difference(ours, theirs):
    return ((ours.detach().float() - theirs.detach().float()).abs().max() / theirs.abs().max()).item()
"""


# --- RoIAlign and RoIAlignRotated: bf16, and features and RoIs of different dtypes -------------

#: mmcv's RoIAlign or RoIAlignRotated (7x7, spatial scale 1/8, what mmdet's and mmrotate's RoI
#: extractors build) on seeded features and RoIs (boxes or rotated boxes) in the dtypes of
#: each case. Answers the error, or the output's dtype, a digest of its bytes and its largest
#: difference from the same values in fp32 (relative to the largest), the same of the
#: features' gradient, and how many copies (``aten._to_copy``) the layer itself made.
ROI_ALIGN = r"""
from mmcv import ops
g = torch.Generator().manual_seed(5)
features = torch.rand(2, 16, 64, 64, generator=g)
images = torch.randint(0, 2, (300, 1), generator=g).float()
xy, sizes, angles = torch.rand(300, 2, generator=g) * 400, torch.rand(300, 2, generator=g) * 100 + 1, (torch.rand(300, 1, generator=g) - 0.5) * 3
ROIS = {"RoIAlign": torch.cat([images, xy, xy + sizes], 1), "RoIAlignRotated": torch.cat([images, xy, sizes, angles], 1)}

def run(name, features_dtype, rois_dtype):
    layer, rois = getattr(ops, name)((7, 7), 0.125, 2), ROIS[name]
    features_dtype, rois_dtype = getattr(torch, features_dtype), getattr(torch, rois_dtype)
    x = features.to(features_dtype).detach().clone().requires_grad_()
    given = rois.to(rois_dtype)
    Copies.count = 0
    with Copies():  # the layer's own copies only
        out = layer(x, given)
    out.float().sum().backward()
    reference_x = features.to(features_dtype).float().detach().clone().requires_grad_()
    reference = layer(reference_x, rois.to(rois_dtype).float())  # the same values: the RoIs rounded as given
    reference.sum().backward()
    return {
        "dtype": str(out.dtype), "digest": digest(out),
        "difference": difference(out, reference),
        "grad_dtype": str(x.grad.dtype), "grad_difference": difference(x.grad, reference_x.grad),
        "grad_digest": digest(x.grad),
        "copies": Copies.count,
    }
"""


def roi_align(python: Path, layer: str, cases: Iterable[Tuple[str, str]]) -> Dict[Tuple[str, str], Any]:
    """Each case's answer, by (features, rois) dtype."""
    return answers(python, ROI_ALIGN, {case: (layer, *case) for case in cases})


#: layer -> its file, and (features, rois) -> what the release raises: bf16 is no kernel's
#: dtype; fp16 features with fp32 RoIs mix dtypes
ROI_ALIGN_ERRORS = {
    layer: (
        file,
        {
            ("bfloat16", "float32"): f"NotImplementedError: \"{kernel}\" not implemented for 'BFloat16'",
            ("bfloat16", "bfloat16"): f"NotImplementedError: \"{kernel}\" not implemented for 'BFloat16'",
            ("float16", "float32"): "RuntimeError: expected scalar type Half but found Float",
        },
    )
    for layer, file, kernel in [
        ("RoIAlign", "roi_align.py", "ROIAlign_forward"),
        ("RoIAlignRotated", "roi_align_rotated.py", "ROIAlignRotated_forward"),
    ]
}
#: calls that work on the release
ROI_ALIGN_WORKING = [("float32", "float32"), ("float64", "float64"), ("float16", "float16")]


@pytest.mark.parametrize("layer", sorted(ROI_ALIGN_ERRORS))
def test_roi_align_fails_in_bf16_and_mixed_dtypes_until_applied_and_leaves_working_calls_alone(
    python: Path, layer: str
) -> None:
    file, errors = ROI_ALIGN_ERRORS[layer]
    working, fixed, still = release_patched_release(
        python, lambda cases: roi_align(python, layer, cases), file, ROI_ALIGN_WORKING, errors
    )
    for (features, _), found in fixed.items():
        assert found["dtype"] == found["grad_dtype"] == f"torch.{features}", (
            found
        )  # the features' dtype, forward and back
        tolerance = 2**-9 if features == "float16" else 2**-6  # a few roundings of the dtype (11 and 8 bits)
        assert found["difference"] <= tolerance and found["grad_difference"] <= tolerance, found
    assert still == working, "calls that work on the release: bit-identical output and gradients"
    assert all(found["copies"] == 0 for found in still.values()), "and no copies"


def test_roi_align_rotated_as_mmcv_1_5_3_has_it_gets_the_import_its_fix_needs_and_runs_on_the_kernels(
    python: Path, tmp_path: Path
) -> None:
    """mmcv 1.5.3's file binds torch only as ``nn``. Patched by ``apply`` on a tree that says
    1.5.3 and put in place of 2.1.0's file (with its import of ``deprecated_api_warning``
    from mmengine, where 2.x moved it), it fails as released and runs once patched, giving
    what 2.1.0's own file gives patched."""
    file = "roi_align_rotated.py"
    released = releases.released_file(releases.Release("mmcv", "1.5.3", "unpatched"), f"mmcv/ops/{file}").decode()
    moved = released.replace(
        "from ..utils import deprecated_api_warning, ext_loader\n",
        "from mmengine.utils import deprecated_api_warning\nfrom ..utils import ext_loader\n",
    )
    assert moved != released and "\nimport torch\n" not in moved
    tree = tmp_path / "mmcv"
    (tree / "ops").mkdir(parents=True)
    (tree / "__init__.py").write_text("")
    (tree / "version.py").write_text("__version__ = '1.5.3'\n")
    (tree / "ops" / file).write_text(moved)
    assert tool("apply", "--path", str(tmp_path), "--patch", "roi-align-rotated-fp32-kernel").returncode == 0
    patched = (tree / "ops" / file).read_text()
    assert patched.split("\n")[1].startswith("import torch.nn as nn, torch  # mmcv-patcher: ")
    _, errors = ROI_ALIGN_ERRORS["RoIAlignRotated"]
    cases = [*ROI_ALIGN_WORKING, *errors]
    installed = releases.site_packages(python) / "mmcv" / "ops" / file
    original = installed.read_bytes()
    try:
        installed.write_text(moved)
        as_released = roi_align(python, "RoIAlignRotated", cases)
        installed.write_text(patched)
        fixed = roi_align(python, "RoIAlignRotated", cases)
    finally:
        installed.write_bytes(original)
    assert {case: as_released[case].get("error") for case in errors} == errors
    assert tool("apply", "--patch", "roi-align-rotated-fp32-kernel", python=python).returncode == 0
    try:
        assert fixed == roi_align(python, "RoIAlignRotated", cases)
    finally:
        assert tool("revert", python=python).returncode == 0
    assert installed.read_bytes() == original


# --- rotated IoU: the kernel takes fp32 only ----------------------------------------------------

#: mmcv's box_iou_rotated on seeded rotated boxes (300 against 200, and 300 aligned pairs) in the
#: dtypes of each case. Answers the error, or the IoUs' dtype, a digest of their bytes, their
#: largest difference from the same values in fp32, and how many copies the call made.
BOX_IOU_ROTATED = r"""
from mmcv.ops import box_iou_rotated
g = torch.Generator().manual_seed(5)

def rotated(n):
    return torch.cat([torch.rand(n, 2, generator=g) * 200, torch.rand(n, 2, generator=g) * 60 + 4, (torch.rand(n, 1, generator=g) - 0.5) * 3], 1)

boxes1, boxes2, pairs = rotated(300), rotated(200), rotated(300)

def run(first, second):
    a, b, c = boxes1.to(getattr(torch, first)), boxes2.to(getattr(torch, second)), pairs.to(getattr(torch, second))
    Copies.count = 0
    with Copies():
        ious, aligned = box_iou_rotated(a, b), box_iou_rotated(a, c, aligned=True)
    reference = box_iou_rotated(a.float(), b.float()), box_iou_rotated(a.float(), c.float(), aligned=True)
    return {
        "dtypes": [str(ious.dtype), str(aligned.dtype)],
        "digest": digest(torch.cat([ious.flatten(), aligned.flatten()])),
        "difference": max((ours.float() - theirs).abs().max().item() for ours, theirs in zip((ious, aligned), reference)),
        "copies": Copies.count,
    }
"""


def box_iou(python: Path, cases: Iterable[Tuple[str, str]]) -> Dict[Tuple[str, str], Any]:
    """Each case's answer, by the (first, second) boxes' dtypes."""
    return answers(python, BOX_IOU_ROTATED, {case: case for case in cases})


#: (first boxes, second boxes) -> what the release raises: its kernel takes fp32 only
BOX_IOU_ERRORS = {
    ("float16", "float16"): "RuntimeError: expected scalar type Float but found Half",
    ("bfloat16", "bfloat16"): "RuntimeError: expected scalar type Float but found BFloat16",
    ("float16", "float32"): "RuntimeError: expected scalar type Float but found Half",
    ("float32", "bfloat16"): "RuntimeError: expected scalar type Float but found BFloat16",
    ("float64", "float64"): "RuntimeError: expected scalar type Float but found Double",
}


def test_rotated_iou_fails_outside_fp32_until_applied_and_leaves_fp32_calls_alone(python: Path) -> None:
    fp32 = ("float32", "float32")
    working, fixed, still = release_patched_release(
        python, lambda cases: box_iou(python, cases), "box_iou_rotated.py", [fp32], BOX_IOU_ERRORS
    )
    for (first, _), found in fixed.items():
        assert found["dtypes"] == [f"torch.{first}"] * 2, found  # the first boxes' dtype, as the release makes it
        assert found["difference"] <= (2**-8 if first == "bfloat16" else 2**-10), found  # one rounding of an IoU
    assert still == working and working[fp32]["copies"] == 0, "fp32 calls: bit-identical, no copies"


# --- deformable convolution (DCN, DCNv2): bf16 -------------------------------------------------

#: mmcv's DeformConv2dPack or ModulatedDeformConv2dPack (3x3, 16 channels: the layer with its own
#: offset conv, as mmdet's DCN heads and backbones build it) on seeded features in the dtype
#: given, under CPU autocast for the AMP dtypes. Prints the error, or the output's dtype and a
#: digest of its bytes, its largest difference from the same values in fp32 (relative to the
#: fp32 run's largest value), the features' and the weight's gradient dtypes, digests and
#: largest differences, and how many copies (``aten._to_copy``) the kernel call itself made.
DEFORM = r"""
import json, sys
from mmcv import ops
name, dtype = sys.argv[1], getattr(torch, sys.argv[2])
torch.manual_seed(0)
layer = getattr(ops, name)(16, 16, 3, 1, 1)
torch.nn.init.normal_(layer.conv_offset.weight, std=0.1)  # mmcv zero-inits it: real offsets, not a grid
features = torch.rand(2, 16, 24, 24, generator=torch.Generator().manual_seed(5))

def step(dtype):
    layer.zero_grad()
    x = features.to(dtype).detach().clone().requires_grad_()
    with torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32):
        out = layer(x)
    out.float().sum().backward()
    return x, out

try:
    x, out = step(dtype)
except Exception as error:
    print(json.dumps({"error": "%s: %s" % (type(error).__name__, str(error).splitlines()[0])}))
    sys.exit(0)
grads = {"features": x.grad, "weight": layer.weight.grad.clone()}
reference_x, reference = step(torch.float32)
reference_grads = {"features": reference_x.grad, "weight": layer.weight.grad}
with torch.no_grad(), torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32):
    offset = layer.conv_offset(x.detach())  # what the layer gives the kernel in this dtype
Copies.count = 0
with torch.no_grad(), Copies():  # the kernel call alone
    if name == "DeformConv2dPack":
        ops.deform_conv2d(x.detach(), offset, layer.weight, 1, 1, 1, 1, 1, False, 32)
    else:
        o1, o2, mask = torch.chunk(offset, 3, dim=1)
        ops.modulated_deform_conv2d(x.detach(), torch.cat((o1, o2), 1), mask.sigmoid(), layer.weight, layer.bias, 1, 1, 1, 1, 1)
print(json.dumps({
    "dtype": str(out.dtype), "digest": digest(out),
    "difference": difference(out, reference),
    "grad_dtypes": {key: str(grad.dtype) for key, grad in grads.items()},
    "grad_digests": {key: digest(grad) for key, grad in grads.items()},
    "grad_differences": {key: difference(grads[key], reference_grads[key]) for key in grads},
    "copies": Copies.count,
}))
"""


def deform(python: Path, name: str, dtype: str) -> Dict[str, Any]:
    return answer(python, "-c", COUNTING + DEFORM, name, dtype)


#: layer -> what the release raises under bf16 autocast: its kernels have no bf16
DEFORM_ERRORS = {
    "DeformConv2dPack": "NotImplementedError: \"deformable_im2col_cpu\" not implemented for 'BFloat16'",
    "ModulatedDeformConv2dPack": "NotImplementedError: \"modulated_deformable_im2col_cpu\" not implemented for 'BFloat16'",
}
#: dtypes the release's layers work in: fp32, and fp16 under CPU autocast
DEFORM_WORKING = ("float32", "float16")


def test_deformable_convolutions_fail_in_bf16_until_applied_and_leave_working_calls_alone(python: Path) -> None:
    originals = {
        file: releases.released_file(releases.OPS, f"mmcv/ops/{file}")
        for file in ("deform_conv.py", "modulated_deform_conv.py")
    }
    working = {(name, dtype): deform(python, name, dtype) for name in DEFORM_ERRORS for dtype in DEFORM_WORKING}
    assert {name: deform(python, name, "bfloat16") for name in DEFORM_ERRORS} == {
        name: {"error": error} for name, error in DEFORM_ERRORS.items()
    }

    assert tool("apply", python=python).returncode == 0
    try:
        fixed = {name: deform(python, name, "bfloat16") for name in DEFORM_ERRORS}
        still = {case: deform(python, *case) for case in working}
    finally:
        assert tool("revert", python=python).returncode == 0
    for name, found in fixed.items():
        # bf16 forward and back for the features; the weight's gradient in its own dtype, fp32
        assert found["dtype"] == "torch.bfloat16" and found["grad_dtypes"] == {
            "features": "torch.bfloat16",
            "weight": "torch.float32",
        }, (name, found)
        # within what fp16 gets on the release (11 bits), scaled by bf16's precision (8 bits): 8x
        fp16 = working[(name, "float16")]
        assert found["difference"] <= 8 * fp16["difference"], (name, found)
        for key, difference in found["grad_differences"].items():
            assert difference <= 8 * fp16["grad_differences"][key], (name, key, found)
    assert still == working, "calls that work on the release: bit-identical output and gradients, no more copies"

    package = releases.site_packages(python) / "mmcv" / "ops"
    assert {file: (package / file).read_bytes() for file in originals} == originals
    assert {name: deform(python, name, "bfloat16").get("error") for name in DEFORM_ERRORS} == DEFORM_ERRORS


#: mmcv's deform_conv2d or modulated_deform_conv2d called directly, as a layer whose inputs come
#: from layers in other dtypes calls it: seeded features, offsets and (modulated) mask, each in
#: the dtype given, an fp32 weight (and bias). Answers the error, or the output's dtype and
#: digest, its largest difference from the same values in fp32 (relative to the largest), each
#: input's gradient dtype, digest and largest difference, and the copies the call made.
DEFORM_MIXED = r"""
from mmcv import ops
g = torch.Generator().manual_seed(5)
INPUTS = {
    "features": torch.rand(2, 16, 24, 24, generator=g), "offsets": torch.randn(2, 18, 24, 24, generator=g),
    "mask": torch.rand(2, 9, 24, 24, generator=g), "weight": torch.randn(16, 16, 3, 3, generator=g) * 0.1,
}
bias = torch.zeros(16)

def call(op, tensors):
    if op == "deform_conv2d":
        return ops.deform_conv2d(tensors["features"], tensors["offsets"], tensors["weight"], 1, 1, 1, 1, 1, False, 32)
    return ops.modulated_deform_conv2d(tensors["features"], tensors["offsets"], tensors["mask"], tensors["weight"], bias, 1, 1, 1, 1, 1)

def leaves(dtypes):
    return {name: value.to(dtypes.get(name, torch.float32)).detach().clone().requires_grad_() for name, value in INPUTS.items()}

def run(op, *dtypes):
    dtypes = dict(zip(("features", "offsets", "mask"), (getattr(torch, dtype) for dtype in dtypes)))
    tensors = leaves(dtypes)
    Copies.count = 0
    with Copies():
        out = call(op, tensors)
    copies = Copies.count
    out.float().sum().backward()
    reference_tensors = {name: tensor.detach().float().requires_grad_() for name, tensor in leaves(dtypes).items()}
    reference = call(op, reference_tensors)  # the same values in fp32
    reference.sum().backward()
    used = [name for name in INPUTS if op != "deform_conv2d" or name != "mask"]
    return {
        "dtype": str(out.dtype), "digest": digest(out), "difference": difference(out, reference),
        "grad_dtypes": {name: str(tensors[name].grad.dtype) for name in used},
        "grad_digests": {name: digest(tensors[name].grad) for name in used},
        "grad_differences": {name: difference(tensors[name].grad, reference_tensors[name].grad) for name in used},
        "copies": copies,
    }
"""


def deform_mixed(python: Path, cases: Iterable[Tuple[str, ...]]) -> Dict[Tuple[str, ...], Any]:
    """Each case's answer, by (op, features, offsets[, mask]) dtypes."""
    return answers(python, DEFORM_MIXED, {case: case for case in cases})


#: (op, features, offsets[, mask]) -> what the release raises: it casts the features to the
#: offsets' dtype, so bf16 offsets meet a kernel without bf16 whatever the features are
DEFORM_MIXED_ERRORS = {
    ("deform_conv2d", "float32", "bfloat16"): DEFORM_ERRORS["DeformConv2dPack"],
    ("modulated_deform_conv2d", "float32", "bfloat16", "bfloat16"): DEFORM_ERRORS["ModulatedDeformConv2dPack"],
    ("modulated_deform_conv2d", "bfloat16", "bfloat16", "float32"): DEFORM_ERRORS["ModulatedDeformConv2dPack"],
}
#: mixed calls that work on the release: fp16 features with fp32 offsets or masks, bf16
#: features with fp32 offsets (all cast to the offsets' dtype)
DEFORM_MIXED_WORKING = [
    ("deform_conv2d", "float16", "float32"),
    ("deform_conv2d", "bfloat16", "float32"),
    ("modulated_deform_conv2d", "float16", "float32", "float32"),
    ("modulated_deform_conv2d", "float16", "float16", "float32"),
    ("modulated_deform_conv2d", "bfloat16", "float32", "float32"),
]


def test_deformable_convolutions_take_mixed_dtypes_and_bf16_offsets_once_applied_and_leave_working_calls_alone(
    python: Path,
) -> None:
    for file in ("deform_conv.py", "modulated_deform_conv.py"):
        op = file[: -len(".py")] + "2d"
        working, fixed, still = release_patched_release(
            python,
            lambda cases: deform_mixed(python, cases),
            file,
            [case for case in DEFORM_MIXED_WORKING if case[0] == op],
            {case: error for case, error in DEFORM_MIXED_ERRORS.items() if case[0] == op},
        )
        for (_, *dtypes), found in fixed.items():
            # the output in the offsets' dtype, as the release casts it; each gradient in its input's dtype
            assert found["dtype"] == "torch.bfloat16", found
            assert found["grad_dtypes"] == dict(
                zip(("features", "offsets", "mask"), (f"torch.{dtype}" for dtype in dtypes)), weight="torch.float32"
            ), found
            # the kernel runs in fp32 on the same values: one rounding to bf16 (8 bits) at most
            assert found["difference"] <= 2**-7, found
            assert all(difference <= 2**-7 for difference in found["grad_differences"].values()), found
        assert still == working, "mixed calls that work on the release: bit-identical, no more copies"


# --- CUDA-only ops (focal losses, multi-scale deformable attention): a kernel stand-in ---------

#: The real mmcv's Python around a CUDA-only kernel, run on the CPU with a stand-in for the
#: kernel (none of these kernels is built for the CPU, and no GPU is here): the stand-in checks
#: the dtypes as the CUDA kernels' dispatch does (float, double and half, every float tensor in
#: the dispatched one), records them, and computes the op in PyTorch in that dtype. So this
#: claims what the patch changes, the dtypes the kernel gets and what comes back, and nothing
#: about the kernels themselves (``verify --device cuda`` runs those). Prints the error, or
#: the dtypes the kernel got, the output's and the gradient's dtypes, digests and largest
#: differences from the same values in fp32, and how many copies the call made.
KERNEL_STAND_IN = r"""
from mmcv.ops import focal_loss, multi_scale_deform_attn
NAMES = {torch.bfloat16: "BFloat16", torch.float16: "Half", torch.float32: "Float", torch.float64: "Double"}

class StandIn:
    "mmcv's CUDA kernels' dtype rules, recorded, over a PyTorch computation: a stand-in, not mmcv's kernel."
    seen = []

    def _dispatch(self, name, tensors):
        self.seen.append([str(t.dtype) for t in tensors])
        if tensors[0].dtype not in (torch.float32, torch.float64, torch.float16):
            raise NotImplementedError("\"%s\" not implemented for '%s'" % (name, NAMES[tensors[0].dtype]))
        for t in tensors[1:]:
            if t.dtype != tensors[0].dtype:
                raise RuntimeError("expected scalar type %s but found %s" % (NAMES[tensors[0].dtype], NAMES[t.dtype]))

    def _sigmoid(self, input, target, weight, gamma, alpha):
        p = input.sigmoid()
        hit = torch.nn.functional.one_hot(target, input.size(1) + 1)[:, :-1].to(input.dtype)
        loss = -(alpha * hit * (1 - p) ** gamma * p.log() + (1 - alpha) * (1 - hit) * p ** gamma * (1 - p).log())
        return loss * weight[target].unsqueeze(1) if weight.numel() else loss

    def _softmax(self, p, target, weight, gamma, alpha):
        p_t = p.gather(1, target.unsqueeze(1)).squeeze(1)
        loss = -alpha * (1 - p_t) ** gamma * p_t.log()
        return loss * weight[target] if weight.numel() else loss

    def _grad(self, function, leaf, *args):
        with torch.enable_grad():
            leaf = leaf.detach().double().requires_grad_()
            return torch.autograd.grad(function(leaf, *args).sum(), leaf)[0]

    def sigmoid_focal_loss_forward(self, input, target, weight, output, gamma, alpha):
        self._dispatch("sigmoid_focal_loss_forward_cuda_kernel", [input, weight, output])
        output.copy_(self._sigmoid(input.double(), target, weight.double(), gamma, alpha))

    def sigmoid_focal_loss_backward(self, input, target, weight, grad_input, gamma, alpha):
        self._dispatch("sigmoid_focal_loss_backward_cuda_kernel", [input, weight, grad_input])
        grad_input.copy_(self._grad(self._sigmoid, input, target, weight.double(), gamma, alpha))

    def softmax_focal_loss_forward(self, input_softmax, target, weight, output, gamma, alpha):
        self._dispatch("softmax_focal_loss_forward_cuda_kernel", [input_softmax, weight, output])
        output.copy_(self._softmax(input_softmax.double(), target, weight.double(), gamma, alpha))

    def softmax_focal_loss_backward(self, input_softmax, target, weight, buff, grad_input, gamma, alpha):
        self._dispatch("softmax_focal_loss_backward_cuda_kernel", [input_softmax, weight, buff, grad_input])
        p = input_softmax.double()
        g = self._grad(self._softmax, p, target, weight.double(), gamma, alpha)
        grad_input.copy_(p * (g - (g * p).sum(1, keepdim=True)))  # through the softmax, to the logits

    def _attention(self, value, shapes, locations, weights):
        return multi_scale_deform_attn.multi_scale_deformable_attn_pytorch(value, shapes, locations, weights)

    def ms_deform_attn_forward(self, value, shapes, starts, locations, weights, im2col_step):
        self._dispatch("ms_deform_attn_forward_cuda", [value, locations, weights])
        return self._attention(value.double(), shapes, locations.double(), weights.double()).to(value.dtype)

    def ms_deform_attn_backward(self, value, shapes, starts, locations, weights, grad_output, grad_value, grad_locations, grad_weights, im2col_step):
        self._dispatch("ms_deform_attn_backward_cuda", [value, locations, weights, grad_output, grad_value, grad_locations, grad_weights])
        with torch.enable_grad():
            leaves = [t.detach().double().requires_grad_() for t in (value, locations, weights)]
            out = self._attention(leaves[0], shapes, leaves[1], leaves[2])
            grads = torch.autograd.grad(out, leaves, grad_output.double())
        for into, grad in zip((grad_value, grad_locations, grad_weights), grads):
            into.copy_(grad)

focal_loss.ext_module = multi_scale_deform_attn.ext_module = StandIn()

g = torch.Generator().manual_seed(5)
logits, targets = torch.randn(64, 10, generator=g) * 2, torch.randint(0, 10, (64,), generator=g)
class_weights = torch.rand(10, generator=g) + 0.5
levels = torch.tensor([[8, 8], [4, 4]])
starts = torch.tensor([0, 64])
value = torch.rand(2, 80, 4, 8, generator=g)
locations, attention = torch.rand(2, 30, 4, 2, 4, 2, generator=g), torch.rand(2, 30, 4, 2, 4, generator=g).softmax(-1)

def call(op, dtype, weights):
    "The op on inputs as autocast gives them: the logits or values in dtype, the rest in fp32."
    x = (logits if op != "ms_deform_attn" else value).to(dtype).detach().requires_grad_()
    if op == "sigmoid_focal_loss":
        out = focal_loss.sigmoid_focal_loss(x, targets, 2.0, 0.25, weights, "none")  # as mmdet's FocalLoss calls it
    elif op == "softmax_focal_loss":
        out = focal_loss.softmax_focal_loss(x, targets, 2.0, 0.25, weights, "mean")  # its backward takes no "none"
    else:
        out = multi_scale_deform_attn.MultiScaleDeformableAttnFunction.apply(x, levels, starts, locations, attention, 64)
    out.float().sum().backward()
    return x, out

def run(op, dtype, weighted):
    dtype, weights = getattr(torch, dtype), class_weights if weighted == "weighted" else None
    StandIn.seen.clear()
    x, out = call(op, dtype, weights)
    kernel = list(StandIn.seen)
    Copies.count = 0
    with Copies():
        call(op, dtype, weights)
    reference_x, reference = call(op, torch.float32, weights)
    return {
        "kernel": kernel, "dtype": str(out.dtype), "grad_dtype": str(x.grad.dtype),
        "digests": [digest(out), digest(x.grad)],
        "differences": [difference(out, reference), difference(x.grad, reference_x.grad)],
        "copies": Copies.count,
    }
"""


def stand_in(python: Path, op: str, cases: Iterable[Tuple[str, str]]) -> Dict[Tuple[str, str], Any]:
    """Each case's answer, by (dtype, class weights)."""
    return answers(python, KERNEL_STAND_IN, {case: (op, *case) for case in cases})


#: op -> its file, and (dtype, class weights) -> what the release raises with the stand-in's
#: dtype rules: no bf16 kernel, and fp32 class weights beside fp16 logits mix dtypes
STAND_IN_ERRORS = {
    "sigmoid_focal_loss": (
        "focal_loss.py",
        {
            (
                "bfloat16",
                "unweighted",
            ): "NotImplementedError: \"sigmoid_focal_loss_forward_cuda_kernel\" not implemented for 'BFloat16'",
            (
                "bfloat16",
                "weighted",
            ): "NotImplementedError: \"sigmoid_focal_loss_forward_cuda_kernel\" not implemented for 'BFloat16'",
            ("float16", "weighted"): "RuntimeError: expected scalar type Half but found Float",
        },
    ),
    "softmax_focal_loss": (
        "focal_loss.py",
        {
            (
                "bfloat16",
                "unweighted",
            ): "NotImplementedError: \"softmax_focal_loss_forward_cuda_kernel\" not implemented for 'BFloat16'",
            (
                "bfloat16",
                "weighted",
            ): "NotImplementedError: \"softmax_focal_loss_forward_cuda_kernel\" not implemented for 'BFloat16'",
            ("float16", "weighted"): "RuntimeError: expected scalar type Half but found Float",
        },
    ),
    "ms_deform_attn": (
        "multi_scale_deform_attn.py",
        {
            (
                "bfloat16",
                "unweighted",
            ): "NotImplementedError: \"ms_deform_attn_forward_cuda\" not implemented for 'BFloat16'"
        },
    ),
}
#: calls the release makes with the kernel's dtypes
STAND_IN_WORKING = {
    "sigmoid_focal_loss": [("float32", "unweighted"), ("float32", "weighted"), ("float16", "unweighted")],
    "softmax_focal_loss": [("float32", "unweighted"), ("float32", "weighted"), ("float16", "unweighted")],
    "ms_deform_attn": [("float32", "unweighted"), ("float16", "unweighted")],
}


@pytest.mark.parametrize("op", sorted(STAND_IN_ERRORS))
def test_cuda_only_ops_give_a_kernel_stand_in_fp32_under_bf16_once_applied_and_nothing_new_otherwise(
    python: Path, op: str
) -> None:
    file, errors = STAND_IN_ERRORS[op]
    working, fixed, still = release_patched_release(
        python, lambda cases: stand_in(python, op, cases), file, STAND_IN_WORKING[op], errors
    )
    for (dtype, _), found in fixed.items():
        # the kernel gets one dtype it has, fp32 under bf16, forward and back
        assert {each for call in found["kernel"] for each in call} == {
            "torch.float32" if dtype == "bfloat16" else f"torch.{dtype}"
        }, found
        assert found["dtype"] == found["grad_dtype"] == f"torch.{dtype}", found  # the caller's, forward and back
        assert max(found["differences"]) <= (2**-6 if dtype == "bfloat16" else 2**-9), found
    assert still == working, "calls that work on the release: the same kernel dtypes, bit-identical, no more copies"


# --- a real client: mmdetection's YOLOX head with a soft_nms test cfg --------------------------

#: YOLOXHead.predict_by_feat from the real mmdet with fp16 class and objectness outputs (what
#: the head gives under AMP) and a soft_nms test cfg, as YOLOX and ByteTrack configs use.
YOLOX = r"""
import json, torch
from mmengine.config import ConfigDict
from mmdet.models.dense_heads import YOLOXHead
torch.manual_seed(0)
head = YOLOXHead(num_classes=80, in_channels=8, feat_channels=8,
                 test_cfg=ConfigDict(score_thr=0.01, nms=dict(type="soft_nms", iou_threshold=0.65)))
sizes = [40, 20, 10]  # a 320x320 image at strides 8, 16, 32
cls_scores = [torch.randn(1, 80, s, s).half() for s in sizes]
bbox_preds = [torch.randn(1, 4, s, s) for s in sizes]
objectnesses = [torch.randn(1, 1, s, s).half() for s in sizes]
metas = [dict(img_shape=(320, 320), scale_factor=(1.0, 1.0))]
try:
    [result] = head.predict_by_feat(cls_scores, bbox_preds, objectnesses, metas, rescale=False, with_nms=True)
    print(json.dumps({"boxes": len(result.bboxes), "scores_dtype": str(result.scores.dtype)}))
except RuntimeError as error:
    print(json.dumps({"error": str(error).splitlines()[0]}))
"""


@pytest.fixture(scope="module")
def mmdet_site() -> Path:
    return releases.mmdet_site()


def test_mmdetection_yolox_with_soft_nms_under_amp_crashes_until_applied(python: Path, mmdet_site: Path) -> None:
    def predict() -> Dict[str, Any]:
        return answer(python, "-c", YOLOX, sites=[mmdet_site])

    assert predict() == {"error": "expected scalar type Float but found Half"}
    assert tool("apply", python=python).returncode == 0
    try:
        after = predict()
    finally:
        assert tool("revert", python=python).returncode == 0
    assert "error" not in after and after["boxes"] > 0, after


def test_every_config_of_the_zoo_list_is_one_its_package_ships_and_each_family_is_named_once(
    mmdet_site: Path,
) -> None:
    entries = sweep_zoo.zoo(sweep_zoo.ZOO, ())
    shipped = {"mmdet": mmdet_site / "mmdet", "mmrotate": releases.mmrotate_site() / "mmrotate"}
    missing = []
    for entry in entries:
        package, _, path = entry.config.rpartition("::")
        if not (shipped[package or "mmdet"] / ".mim" / "configs" / path).is_file():
            missing.append(entry.config)
    assert missing == []
    families = [entry.family for entry in entries]
    assert len(set(families)) == len(families), "--only names a family: each once"


# --- the seed's whole scenario: a training step of mmdet's Faster R-CNN at 2666x1600 in bf16 -----

#: scripts/model_step.py: one step of an mmdet config (random weights) on one seeded image
STEP = releases.REPOSITORY / "scripts" / "model_step.py"
#: the seed's model and input size (height x width)
FASTER_RCNN, SEED_SIZE = "faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py", "1600x2666"


def model_step(python: Path, mmdet_site: Path, config: str, dtype: str, *options: str) -> Dict[str, Any]:
    """A training step of ``config`` in ``dtype`` (``options``: scripts/model_step.py's)."""
    sites = [mmdet_site, releases.mmrotate_site()] if config.startswith("mmrotate::") else [mmdet_site]
    return answer(python, str(STEP), config, "train", dtype, *options, sites=sites)


def _installed_files(python: Path) -> Dict[str, bytes]:
    package = releases.site_packages(python) / "mmcv"
    return {str(path.relative_to(package)): path.read_bytes() for path in package.rglob("*.py")}


def test_the_seeds_training_step_in_bf16_crashes_trains_once_applied_and_crashes_again(
    python: Path, mmdet_site: Path
) -> None:
    released = _installed_files(python)
    before = model_step(python, mmdet_site, FASTER_RCNN, "bf16", "--size", SEED_SIZE)
    assert before["error"] == "RuntimeError: expected scalar type Float but found BFloat16"
    assert {"loss_and_predict", "batched_nms", "nms"} <= set(before["passed"]), (
        "in the RPN's proposals, as users report it"
    )

    assert tool("apply", python=python).returncode == 0
    try:
        trained = model_step(python, mmdet_site, FASTER_RCNN, "bf16", "--size", SEED_SIZE)
    finally:
        assert tool("revert", python=python).returncode == 0
    assert "error" not in trained, trained
    assert trained["finite"] and set(trained["losses"]) == {"loss_rpn_cls", "loss_rpn_bbox", "loss_cls", "loss_bbox"}, (
        trained
    )

    assert _installed_files(python) == released, "every mmcv file byte-identical to the release"
    assert model_step(python, mmdet_site, FASTER_RCNN, "bf16", "--size", SEED_SIZE)["error"] == before["error"]


def test_the_seeds_training_step_in_fp16_crashes_trains_once_applied_and_crashes_again(
    python: Path, mmdet_site: Path
) -> None:
    """The seed's config in fp16, under torch's CPU autocast (mmengine's takes bf16 only).
    fp16 convolutions on these CPUs are about 25 times slower than fp32, so the step runs at
    160x160 instead of 2666x1600, with the RPN's ``split_thr`` lowered to 100 so that its
    ``batched_nms`` takes the per-class path the seed's 2666x1600 input takes at 10000:
    there, on the release, the fp16 boxes meet mmcv's NMS kernel, which takes fp32 only."""
    options = ("--size", "160x160", "--rpn-split-thr", "100")
    before = model_step(python, mmdet_site, FASTER_RCNN, "fp16", *options)
    assert before["error"] == "RuntimeError: expected scalar type Float but found Half", before
    assert {"batched_nms", "nms"} <= set(before["passed"]) and before["mmcv_frame"].startswith("mmcv/ops/nms.py:")
    assert tool("apply", python=python).returncode == 0
    try:
        trained = model_step(python, mmdet_site, FASTER_RCNN, "fp16", *options)
    finally:
        assert tool("revert", python=python).returncode == 0
    assert "error" not in trained and trained["finite"], trained
    assert model_step(python, mmdet_site, FASTER_RCNN, "fp16", *options)["error"] == before["error"]


# --- every patch proven by a real mmdet model whose step crashes on the release ---------------

#: patch id -> (config, its layer that crashes, the file of mmcv it crashes in), each at 256x256
#: under bf16: TOOD's task alignment calls mmcv's deform_conv2d itself; CenterNet's neck is DCNv2
#: patch -> a config whose step crashes in the op's file under bf16, and the patches that take
#: it past earlier crashes, applied first (RoI Trans meets NMS in its RPN and RoIAlign in its
#: first, horizontal stage before RoIAlignRotated)
ZOO_PROOFS = {
    "deform-conv-fp32-kernel": ("tood/tood_r50_fpn_1x_coco.py", "mmcv/ops/deform_conv.py", ()),
    "modulated-deform-conv-fp32-kernel": (
        "centernet/centernet_r18-dcnv2_8xb16-crop512-140e_coco.py",
        "mmcv/ops/modulated_deform_conv.py",
        (),
    ),
    "roi-align-rotated-fp32-kernel": (
        "mmrotate::roi_trans/roi-trans-le90_r50_fpn_1x_dota.py",
        "mmcv/ops/roi_align_rotated.py",
        ("nms-fp32-kernel", "roi-align-fp32-kernel"),
    ),
    "rotated-feature-align-fp32-kernel": (
        "mmrotate::r3det/r3det-oc_r50_fpn_1x_dota.py",
        "mmcv/ops/rotated_feature_align.py",
        (),
    ),
}


@pytest.mark.parametrize("patch_id", sorted(ZOO_PROOFS))
def test_a_model_using_the_op_crashes_in_bf16_trains_once_applied_and_crashes_again(
    python: Path, mmdet_site: Path, patch_id: str
) -> None:
    config, crashes_in, first = ZOO_PROOFS[patch_id]

    def step() -> Dict[str, Any]:
        return model_step(python, mmdet_site, config, "bf16", "--size", "256x256")

    for each in first:
        assert tool("apply", "--patch", each, python=python).returncode == 0
    try:
        before = step()
        assert before["mmcv_frame"].startswith(f"{crashes_in}:") and "BFloat16" in before["error"], before
        assert tool("apply", "--patch", patch_id, python=python).returncode == 0
        trained = step()
        assert tool("revert", "--patch", patch_id, python=python).returncode == 0
        again = step()
    finally:
        assert tool("revert", python=python).returncode == 0
    assert "error" not in trained and trained["finite"], trained
    assert again["error"] == before["error"]
