"""The check ``verify`` runs in the target interpreter, passed as ``python -c`` source.

It is the only code of this tool that imports torch and mmcv, and it runs in a child
process so the patcher itself never does. It imports nothing from mmcv_patcher, keeps to
Python 3.6 syntax, and prints one JSON object on its last line of output.

argv: number of boxes (the batched_nms split case), device ("cpu" or "cuda"), split_thr,
and the patch ids whose cases to run, comma-separated.

Each case calls mmcv with what AMP gives it and compares with the same values in fp32: it
survived when it kept the same boxes, crashed when mmcv raised, and is wrong otherwise.
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


def _cases(torch, ops, boxes_n, device, split_thr):
    """patch id -> (what it gives mmcv, a call taking a cast for the AMP-side tensors)."""
    g = torch.Generator().manual_seed(0)
    split = (_boxes(torch, g, boxes_n, device), torch.rand(boxes_n, generator=g).to(device), torch.randint(0, 3, (boxes_n,), generator=g).to(device))
    plain = (_boxes(torch, g, 3000, device), torch.rand(3000, generator=g).to(device))
    coco = (_boxes(torch, g, 2000, device), torch.rand(2000, generator=g).to(device), torch.randint(0, 80, (2000,), generator=g).to(device))
    ctr = torch.rand(1500, 2, generator=g) * 500
    rotated = (torch.cat([ctr, torch.rand(1500, 2, generator=g) * 60 + 4, (torch.rand(1500, 1, generator=g) - 0.5) * 3], 1).to(device), torch.rand(1500, generator=g).to(device))
    config = {"type": "nms", "iou_threshold": 0.5, "split_thr": split_thr}
    return {
        "batched-nms-amp-dtype": (
            "batched_nms: %d fp32 boxes, fp16 scores, 3 classes (split_thr %d)" % (boxes_n, split_thr),
            lambda cast: ops.batched_nms(split[0], cast(split[1]), split[2], dict(config)),
        ),
        "batched-nms-fp32-offsets": (
            "batched_nms: 2000 fp16 boxes and scores, 80 classes",
            lambda cast: ops.batched_nms(cast(coco[0]), cast(coco[1]), coco[2], dict(config)),
        ),
        "nms-fp32-kernel": ("nms: 3000 fp16 boxes and scores", lambda cast: ops.nms(cast(plain[0]), cast(plain[1]), 0.5)),
        "nms-rotated-fp32-kernel": ("nms_rotated: 1500 fp16 rotated boxes and scores", lambda cast: ops.nms_rotated(cast(rotated[0]), cast(rotated[1]), 0.3)),
        "soft-nms-fp32-kernel": ("soft_nms: 3000 fp32 boxes, fp16 scores", lambda cast: ops.soft_nms(plain[0], cast(plain[1]), 0.5, min_score=0.05)),
    }


def _run_case(torch, call):
    """survived / crashed / wrong, and why."""
    try:
        dets, keep = call(lambda t: t.half())
    except Exception as error:  # what the user would see under AMP
        return "crashed", "%s: %s" % (type(error).__name__, str(error).splitlines()[0] if str(error) else "")
    reference_dets, reference_keep = call(lambda t: t.half().float())  # the same values in fp32
    if torch.equal(keep.cpu(), reference_keep.cpu()) and torch.allclose(dets.float().cpu(), reference_dets.float().cpu(), rtol=1e-3, atol=1e-3):
        return "survived", "kept the same %d boxes as the same values in fp32" % keep.numel()
    return "wrong", "returned, but kept other boxes than the same values in fp32 (%d against %d)" % (keep.numel(), reference_keep.numel())


def main(argv):
    boxes_n, device, split_thr, ids = int(argv[1]), argv[2], int(argv[3]), argv[4].split(",")
    report = {"python": sys.executable, "device": device, "patches": ids}
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
    cases = _cases(torch, ops, boxes_n, device, split_thr)
    report["cases"] = {}
    for id in ids:
        gave, call = cases[id]
        verdict, detail = _run_case(torch, call)
        report["cases"][id] = {"gave": gave, "verdict": verdict, "detail": detail}
    verdicts = [case["verdict"] for case in report["cases"].values()]
    survived = verdicts.count("survived")
    overall = "survived" if survived == len(verdicts) else "crashed" if "crashed" in verdicts else "wrong"
    failed = ", ".join("%s %s" % (id, case["verdict"]) for id, case in report["cases"].items() if case["verdict"] != "survived")
    return _finish(report, overall, "%d of %d cases survived" % (survived, len(verdicts)) + ("; %s" % failed if failed else ""))


if __name__ == "__main__":
    sys.exit(main(sys.argv))
