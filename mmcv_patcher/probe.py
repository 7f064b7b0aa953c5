"""The check ``verify`` runs in the target interpreter, passed as ``python -c`` source.

It is the only code of this tool that imports torch and mmcv, and it runs in a child
process so the patcher itself never does. It imports nothing from mmcv_patcher, keeps to
Python 3.6 syntax, and prints one JSON object on its last line of output.

argv: number of boxes (the batched_nms split case), device ("cpu" or "cuda"), split_thr,
the patch ids whose cases to run, and the AMP dtypes to run them in ("float16",
"bfloat16"), both comma-separated.

Each case calls mmcv with what AMP gives it in that dtype and compares with the same values
in fp32: it survived when it gave what fp32 gives (the same boxes; RoIAlign's output within
the dtype's rounding), crashed when mmcv raised, and is wrong otherwise. A patch this probe
has no case for says so.
"""

import importlib.util
import json
import os
import sys


def _finish(report, verdict, detail):
    report["verdict"] = verdict
    report["detail"] = detail
    print(json.dumps(report))
    return 0


def _boxes(torch, generator, n, device, spread=1000.0):
    xy = torch.rand(n, 2, generator=generator) * spread
    return torch.cat([xy, xy + torch.rand(n, 2, generator=generator) * 100 + 1], 1).to(device)


def _same_boxes(torch, result, reference):
    """NMS results: the same kept indices, and dets equal to the fp32 run's."""
    (dets, keep), (reference_dets, reference_keep) = result, reference
    if torch.equal(keep.cpu(), reference_keep.cpu()) and torch.allclose(dets.float().cpu(), reference_dets.float().cpu(), rtol=1e-3, atol=1e-3):
        return True, "kept the same %d boxes as the same values in fp32" % keep.numel()
    return False, "returned, but kept other boxes than the same values in fp32 (%d against %d)" % (keep.numel(), reference_keep.numel())


def _close_features(dtype):
    """RoIAlign results: the features' own dtype, and the fp32 run's values within its rounding."""

    def compare(torch, result, reference):
        tolerance = 1e-2 if dtype == "float16" else 5e-2
        if result.dtype != getattr(torch, dtype):
            return False, "returned %s, not the features' %s" % (result.dtype, dtype)
        if torch.allclose(result.float().cpu(), reference.float().cpu(), rtol=tolerance, atol=tolerance):
            return True, "gave %s the same values as fp32 within %s rounding, shape %s" % (dtype, dtype, tuple(result.shape))
        return False, "returned values that differ from the same inputs in fp32 by up to %g" % (result.float() - reference.float()).abs().max().item()

    return compare


def _cases(torch, ops, boxes_n, device, split_thr, dtype):
    """patch id -> (what it gives mmcv, a call taking a cast for the AMP-side tensors, how
    to compare its result with the fp32 run's)."""
    g = torch.Generator().manual_seed(0)
    split = (_boxes(torch, g, boxes_n, device), torch.rand(boxes_n, generator=g).to(device), torch.randint(0, 3, (boxes_n,), generator=g).to(device))
    plain = (_boxes(torch, g, 3000, device), torch.rand(3000, generator=g).to(device))
    coco = (_boxes(torch, g, 2000, device), torch.rand(2000, generator=g).to(device), torch.randint(0, 80, (2000,), generator=g).to(device))
    ctr = torch.rand(1500, 2, generator=g) * 500
    rotated = (torch.cat([ctr, torch.rand(1500, 2, generator=g) * 60 + 4, (torch.rand(1500, 1, generator=g) - 0.5) * 3], 1).to(device), torch.rand(1500, generator=g).to(device))
    features = torch.rand(2, 16, 64, 64, generator=g).to(device)
    rois = torch.cat([torch.randint(0, 2, (200, 1), generator=g).float(), _boxes(torch, g, 200, "cpu", spread=400.0)], 1).to(device)
    config = {"type": "nms", "iou_threshold": 0.5, "split_thr": split_thr}
    short = {"float16": "fp16", "bfloat16": "bf16"}[dtype]
    return {
        "batched-nms-amp-dtype": (
            "batched_nms: %d fp32 boxes, %s scores, 3 classes (split_thr %d)" % (boxes_n, short, split_thr),
            lambda cast: ops.batched_nms(split[0], cast(split[1]), split[2], dict(config)),
            _same_boxes,
        ),
        "batched-nms-fp32-offsets": (
            "batched_nms: 2000 %s boxes and scores, 80 classes" % short,
            lambda cast: ops.batched_nms(cast(coco[0]), cast(coco[1]), coco[2], dict(config)),
            _same_boxes,
        ),
        "nms-fp32-kernel": ("nms: 3000 %s boxes and scores" % short, lambda cast: ops.nms(cast(plain[0]), cast(plain[1]), 0.5), _same_boxes),
        "nms-rotated-fp32-kernel": (
            "nms_rotated: 1500 %s rotated boxes and scores" % short,
            lambda cast: ops.nms_rotated(cast(rotated[0]), cast(rotated[1]), 0.3),
            _same_boxes,
        ),
        "roi-align-fp32-kernel": (
            "RoIAlign 7x7: %s features 2x16x64x64, 200 fp32 RoIs" % short,
            lambda cast: ops.RoIAlign((7, 7), 0.125, 2)(cast(features), rois),
            _close_features(dtype),
        ),
        "soft-nms-fp32-kernel": (
            "soft_nms: 3000 fp32 boxes, %s scores" % short,
            lambda cast: ops.soft_nms(plain[0], cast(plain[1]), 0.5, min_score=0.05),
            _same_boxes,
        ),
    }


def _run_case(torch, case, dtype):
    """survived / crashed / wrong, and why."""
    gave, call, compare = case
    amp = getattr(torch, dtype)
    try:
        result = call(lambda t: t.to(amp))
    except Exception as error:  # what the user would see under AMP
        return {"gave": gave, "verdict": "crashed", "detail": "%s: %s" % (type(error).__name__, str(error).splitlines()[0] if str(error) else "")}
    reference = call(lambda t: t.to(amp).float())  # the same values in fp32
    survived, detail = compare(torch, result, reference)
    return {"gave": gave, "verdict": "survived" if survived else "wrong", "detail": detail}


def main(argv):
    boxes_n, device, split_thr, ids, dtypes = int(argv[1]), argv[2], int(argv[3]), argv[4].split(","), argv[5].split(",")
    report = {"python": sys.executable, "device": device, "patches": ids, "dtypes": dtypes}
    torch_problem = None
    try:
        import torch
    except Exception as error:  # any import failure means: cannot check here
        torch_problem = "torch cannot be imported (%s: %s)" % (type(error).__name__, error)
    # What matters first: mmcv-lite (or a build without MMCV_WITH_OPS) has no compiled ops,
    # so there is nothing to run whatever torch does. Told from the files, importing nothing.
    spec = importlib.util.find_spec("mmcv")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if locations and os.path.isdir(locations[0]) and not any(name.startswith("_ext") for name in os.listdir(locations[0])):
        detail = "mmcv at %s has no compiled ops (mmcv-lite, or a build without MMCV_WITH_OPS=1), so there is no batched_nms to run" % locations[0]
        return _finish(report, "unavailable", detail + ("; %s too" % torch_problem if torch_problem else ""))
    if torch_problem is not None:
        return _finish(report, "unavailable", torch_problem)
    report["torch"] = torch.__version__
    try:
        import mmcv
        from mmcv import ops
    except Exception as error:
        return _finish(
            report,
            "unavailable",
            "mmcv.ops cannot be imported (%s: %s)" % (type(error).__name__, str(error).splitlines()[0] if str(error) else ""),
        )
    report["mmcv"] = getattr(mmcv, "__version__", None)
    report["mmcv_dir"] = os.path.dirname(os.path.abspath(mmcv.__file__))
    if device == "cuda" and not torch.cuda.is_available():
        return _finish(report, "unavailable", "torch.cuda.is_available() is False")
    report["cases"] = {}
    for dtype in dtypes:
        cases = _cases(torch, ops, boxes_n, device, split_thr, dtype)
        for id in ids:
            if id in cases:
                found = _run_case(torch, cases[id], dtype)
            else:
                found = {"gave": None, "verdict": "no-case", "detail": "no case for %s in this version of verify" % id}
            report["cases"].setdefault(id, {})[dtype] = found
    ran = [(id, dtype, case) for id, by_dtype in report["cases"].items() for dtype, case in by_dtype.items() if case["verdict"] != "no-case"]
    verdicts = [case["verdict"] for _, _, case in ran]
    survived = verdicts.count("survived")
    overall = "survived" if survived == len(verdicts) else "crashed" if "crashed" in verdicts else "wrong"
    failed = ", ".join("%s in %s %s" % (id, dtype, case["verdict"]) for id, dtype, case in ran if case["verdict"] != "survived")
    without = sorted(id for id, by_dtype in report["cases"].items() if all(case["verdict"] == "no-case" for case in by_dtype.values()))
    detail = "%d of %d cases survived" % (survived, len(verdicts)) + ("; %s" % failed if failed else "") + ("; no case for %s" % ", ".join(without) if without else "")
    return _finish(report, overall, detail)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
