"""The promise, on real mmcv running real NMS: AMP-style inputs crash batched_nms until
the patch is applied, the patched results match the fp32 run, and revert brings the crash
back. Uses mmcv 2.1.0 built with its CPU ops (built once, cached; see scripts/releases.py).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any, Dict, Optional

import pytest

from mmcv_patcher import registry
from scripts import releases
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


def answer(python: Path, *args: str, site: Optional[Path] = None) -> Dict[str, Any]:
    """The JSON object ``python ARGS`` prints last (``site``: mmdet's, on its path)."""
    done = subprocess.run(
        [str(python), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        universal_newlines=True,
        env=None if site is None else dict(os.environ, PYTHONPATH=str(site)),
    )
    assert done.returncode == 0, done.stderr[-3000:]
    document: Dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return document


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
    cases = verdicts  # every patch has its case
    # every case crashes on the release (batched-nms-fp32-offsets: the kernel refuses the boxes first),
    # except where its op has a kernel for the dtype here: mmcv's CPU deformable convolutions lack bf16 only
    assert {key: verdict for key, verdict in cases.items() if verdict != "crashed"} == dict.fromkeys(
        RELEASE_HAS_THE_KERNEL, "survived"
    )
    assert len(cases) >= 16
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
    assert f"survived: {len(cases)} of {len(cases)} cases survived" in survived.stdout


def test_verify_on_mmcv_lite_says_ops_are_missing_without_a_traceback(tmp_path: Path) -> None:
    lite = next(r for r in releases.INSTALLED if r.id == "mmcv-lite-2.2.0")
    python = releases.torch_venv(tmp_path / "venv", releases.wheel(lite))
    done = tool("verify", python=python)
    assert done.returncode == 1 and done.stderr == ""
    mmcv_dir = releases.site_packages(python) / "mmcv"
    *others, last = registry.ops(registry.all_patches())
    every_op = f"{', '.join(others)} or {last}" if others else last
    reason = f"unavailable: mmcv at {mmcv_dir} has no compiled ops (mmcv-lite, or a build without MMCV_WITH_OPS=1), so there is no {every_op} to run"
    assert done.stdout.splitlines()[-1] == reason and done.stdout.count(reason) == 1
    one = tool("verify", "--patch", "roi-align-fp32-kernel", python=python)
    assert one.stdout.splitlines()[-1].endswith("so there is no RoIAlign to run"), "the patch's own op"


def test_verify_without_torch_says_first_that_there_are_no_ops_then_no_torch(tmp_path: Path) -> None:
    lite = next(r for r in releases.INSTALLED if r.id == "mmcv-lite-2.2.0")
    python = releases.make_venv(tmp_path / "venv")
    releases.pip_install(python, "--no-index", releases.wheel(lite))
    done = tool("verify", "--json", python=python)
    assert done.returncode == 1 and "Traceback" not in done.stdout + done.stderr
    report = json.loads(done.stdout)["verify"]
    assert report["verdict"] == "unavailable"
    assert report["detail"].startswith(f"mmcv at {releases.site_packages(python) / 'mmcv'} has no compiled ops")
    assert report["detail"].endswith("; torch cannot be imported (ModuleNotFoundError: No module named 'torch') too")


def test_verify_with_ops_but_without_torch_says_torch_is_missing(tmp_path: Path) -> None:
    python = releases.make_venv(tmp_path / "venv")
    releases.pip_install(python, "--no-index", releases.ops_wheel())
    done = tool("verify", "--json", python=python)
    assert done.returncode == 1 and "Traceback" not in done.stdout + done.stderr
    report = json.loads(done.stdout)["verify"]
    assert (report["verdict"], report["detail"]) == (
        "unavailable",
        "torch cannot be imported (ModuleNotFoundError: No module named 'torch')",
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


# --- RoIAlign: bf16, and features and RoIs of different dtypes ---------------------------------

#: RoIAlign (7x7, spatial scale 1/8, what mmdet's RoI extractors build) on seeded features and
#: fp32 RoIs, in the case given. Prints the error, or the output's dtype and a digest of its
#: bytes, its largest difference from the same values in fp32 (features' dtype rounded), the
#: features' gradient dtype, digest and largest difference from the fp32 run's (differences
#: relative to the fp32 run's largest value), and how many copies (``aten._to_copy``) the call made.
ROI_ALIGN = r"""
import hashlib, json, sys, torch
from torch.utils._python_dispatch import TorchDispatchMode
from mmcv.ops import RoIAlign
features_dtype, rois_dtype = (getattr(torch, name) for name in sys.argv[1:3])
g = torch.Generator().manual_seed(5)
features = torch.rand(2, 16, 64, 64, generator=g)
xy = torch.rand(300, 2, generator=g) * 400
rois = torch.cat([torch.randint(0, 2, (300, 1), generator=g).float(), xy, xy + torch.rand(300, 2, generator=g) * 100 + 1], 1)
layer = RoIAlign((7, 7), 0.125, 2)

class Copies(TorchDispatchMode):
    count = 0
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        Copies.count += func.__name__.startswith("_to_copy")
        return func(*args, **(kwargs or {}))

def run(features_dtype, rois_dtype):
    x = features.to(features_dtype).detach().clone().requires_grad_()
    given = rois.to(rois_dtype)
    with Copies():  # the layer's own copies only
        out = layer(x, given)
    out.float().sum().backward()
    return x, out

try:
    x, out = run(features_dtype, rois_dtype)
except Exception as error:
    print(json.dumps({"error": "%s: %s" % (type(error).__name__, str(error).splitlines()[0])}))
    sys.exit(0)
copies = Copies.count
reference_x = features.to(features_dtype).float().detach().clone().requires_grad_()
reference = layer(reference_x, rois.to(rois_dtype).float())  # the same values: the RoIs rounded as given
reference.sum().backward()
print(json.dumps({
    "dtype": str(out.dtype), "digest": hashlib.sha256(out.detach().float().numpy().tobytes()).hexdigest()[:16],
    "difference": ((out.detach().float() - reference.detach()).abs().max() / reference.abs().max()).item(),
    "grad_dtype": str(x.grad.dtype), "grad_difference": ((x.grad.float() - reference_x.grad).abs().max() / reference_x.grad.abs().max()).item(),
    "grad_digest": hashlib.sha256(x.grad.float().numpy().tobytes()).hexdigest()[:16],
    "copies": copies,
}))
"""


def roi_align(python: Path, features: str, rois: str) -> Dict[str, Any]:
    return answer(python, "-c", ROI_ALIGN, features, rois)


#: (features, rois) -> what the release raises: bf16 is no kernel's dtype; fp16 features with fp32 RoIs mix dtypes
ROI_ALIGN_ERRORS = {
    ("bfloat16", "float32"): "NotImplementedError: \"ROIAlign_forward\" not implemented for 'BFloat16'",
    ("bfloat16", "bfloat16"): "NotImplementedError: \"ROIAlign_forward\" not implemented for 'BFloat16'",
    ("float16", "float32"): "RuntimeError: expected scalar type Half but found Float",
}
#: calls that work on the release
ROI_ALIGN_WORKING = [("float32", "float32"), ("float64", "float64"), ("float16", "float16")]


def test_roi_align_fails_in_bf16_and_mixed_dtypes_until_applied_and_leaves_working_calls_alone(python: Path) -> None:
    roi_align_py = releases.site_packages(python) / "mmcv" / "ops" / "roi_align.py"
    original = releases.released_file(releases.OPS, "mmcv/ops/roi_align.py")
    working = {case: roi_align(python, *case) for case in ROI_ALIGN_WORKING}
    for case, error in ROI_ALIGN_ERRORS.items():
        assert roi_align(python, *case) == {"error": error}, case

    assert tool("apply", python=python).returncode == 0
    try:
        fixed = {case: roi_align(python, *case) for case in ROI_ALIGN_ERRORS}
        still = {case: roi_align(python, *case) for case in ROI_ALIGN_WORKING}
    finally:
        assert tool("revert", python=python).returncode == 0
    for (features, _), found in fixed.items():
        assert found["dtype"] == found["grad_dtype"] == f"torch.{features}", (
            found
        )  # the features' dtype, forward and back
        tolerance = 2**-9 if features == "float16" else 2**-6  # a few roundings of the dtype (11 and 8 bits)
        assert found["difference"] <= tolerance and found["grad_difference"] <= tolerance, found
    assert still == working, "calls that work on the release: bit-identical output and gradients"
    assert all(found["copies"] == 0 for found in still.values()), "and no copies"

    assert roi_align_py.read_bytes() == original
    assert {case: roi_align(python, *case).get("error") for case in ROI_ALIGN_ERRORS} == ROI_ALIGN_ERRORS


# --- deformable convolution (DCN, DCNv2): bf16 -------------------------------------------------

#: mmcv's DeformConv2dPack or ModulatedDeformConv2dPack (3x3, 16 channels: the layer with its own
#: offset conv, as mmdet's DCN heads and backbones build it) on seeded features in the dtype
#: given, under CPU autocast for the AMP dtypes. Prints the error, or the output's dtype and a
#: digest of its bytes, its largest difference from the same values in fp32 (relative to the
#: fp32 run's largest value), the features' and the weight's gradient dtypes, digests and
#: largest differences, and how many copies (``aten._to_copy``) the kernel call itself made.
DEFORM = r"""
import hashlib, json, sys, torch
from torch.utils._python_dispatch import TorchDispatchMode
from mmcv import ops
name, dtype = sys.argv[1], getattr(torch, sys.argv[2])
torch.manual_seed(0)
layer = getattr(ops, name)(16, 16, 3, 1, 1)
torch.nn.init.normal_(layer.conv_offset.weight, std=0.1)  # mmcv zero-inits it: real offsets, not a grid
features = torch.rand(2, 16, 24, 24, generator=torch.Generator().manual_seed(5))

class Copies(TorchDispatchMode):
    count = 0
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        Copies.count += func.__name__.startswith("_to_copy")
        return func(*args, **(kwargs or {}))

def digest(t):
    return hashlib.sha256(t.detach().float().numpy().tobytes()).hexdigest()[:16]

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
    "difference": ((out.detach().float() - reference.detach().float()).abs().max() / reference.abs().max()).item(),
    "grad_dtypes": {key: str(grad.dtype) for key, grad in grads.items()},
    "grad_digests": {key: digest(grad) for key, grad in grads.items()},
    "grad_differences": {key: ((grads[key].float() - reference_grads[key].float()).abs().max() / reference_grads[key].abs().max()).item() for key in grads},
    "copies": Copies.count,
}))
"""


def deform(python: Path, name: str, dtype: str) -> Dict[str, Any]:
    return answer(python, "-c", DEFORM, name, dtype)


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
        return answer(python, "-c", YOLOX, site=mmdet_site)

    assert predict() == {"error": "expected scalar type Float but found Half"}
    assert tool("apply", python=python).returncode == 0
    try:
        after = predict()
    finally:
        assert tool("revert", python=python).returncode == 0
    assert "error" not in after and after["boxes"] > 0, after


# --- the seed's whole scenario: a training step of mmdet's Faster R-CNN at 2666x1600 in bf16 -----

#: scripts/model_step.py: one step of an mmdet config (random weights) on one seeded image
STEP = releases.REPOSITORY / "scripts" / "model_step.py"
#: the seed's model and input size (height x width)
FASTER_RCNN, SEED_SIZE = "faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py", "1600x2666"


def model_step(python: Path, mmdet_site: Path, config: str, dtype: str, *options: str) -> Dict[str, Any]:
    """A training step of ``config`` in ``dtype`` (``options``: scripts/model_step.py's)."""
    return answer(python, str(STEP), config, "train", dtype, *options, site=mmdet_site)


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
ZOO_PROOFS = {
    "deform-conv-fp32-kernel": ("tood/tood_r50_fpn_1x_coco.py", "mmcv/ops/deform_conv.py"),
    "modulated-deform-conv-fp32-kernel": (
        "centernet/centernet_r18-dcnv2_8xb16-crop512-140e_coco.py",
        "mmcv/ops/modulated_deform_conv.py",
    ),
}


@pytest.mark.parametrize("patch_id", sorted(ZOO_PROOFS))
def test_a_model_using_the_op_crashes_in_bf16_trains_once_applied_and_crashes_again(
    python: Path, mmdet_site: Path, patch_id: str
) -> None:
    config, crashes_in = ZOO_PROOFS[patch_id]
    before = model_step(python, mmdet_site, config, "bf16", "--size", "256x256")
    assert before["mmcv_frame"].startswith(f"{crashes_in}:") and "BFloat16" in before["error"], before
    assert tool("apply", "--patch", patch_id, python=python).returncode == 0
    try:
        trained = model_step(python, mmdet_site, config, "bf16", "--size", "256x256")
    finally:
        assert tool("revert", python=python).returncode == 0
    assert "error" not in trained and trained["finite"], trained
    assert model_step(python, mmdet_site, config, "bf16", "--size", "256x256")["error"] == before["error"]
