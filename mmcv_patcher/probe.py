"""The check ``verify`` runs in the target interpreter, passed as ``python -c`` source.

It is the only code of this tool that imports torch and mmcv, and it runs in a child
process so the patcher itself never does. It imports nothing from mmcv_patcher, keeps to
Python 3.6 syntax, and prints one JSON object on its last line of output.

argv: number of boxes, device ("cpu" or "cuda"), split_thr.
"""

import importlib.util
import json
import os
import sys

MESSAGE_OF_THE_BUG = "Index put requires the source and destination dtypes match"


def _finish(report, verdict, detail):
    report["verdict"] = verdict
    report["detail"] = detail
    print(json.dumps(report))
    return 0


def main(argv):
    boxes_n, device, split_thr = int(argv[1]), argv[2], int(argv[3])
    report = {
        "python": sys.executable,
        "boxes": boxes_n,
        "classes": 3,
        "split_thr": split_thr,
        "boxes_dtype": "float32",
        "scores_dtype": "float16",
        "device": device,
    }
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
        from mmcv.ops import batched_nms
    except Exception as error:
        return _finish(
            report,
            "unavailable",
            "mmcv.ops cannot be imported (%s: %s); mmcv-lite and builds without ops have no batched_nms to check"
            % (type(error).__name__, str(error).splitlines()[0] if str(error) else ""),
        )
    report["mmcv"] = getattr(mmcv, "__version__", None)
    report["mmcv_dir"] = os.path.dirname(os.path.abspath(mmcv.__file__))
    if device == "cuda" and not torch.cuda.is_available():
        return _finish(report, "unavailable", "torch.cuda.is_available() is False")

    generator = torch.Generator().manual_seed(0)
    xy = torch.rand(boxes_n, 2, generator=generator) * 1000
    wh = torch.rand(boxes_n, 2, generator=generator) * 100 + 1
    boxes = torch.cat([xy, xy + wh], 1).to(device)  # decoded boxes stay fp32 under AMP
    scores = torch.rand(boxes_n, generator=generator).half().to(device)  # the head's fp16 scores
    idxs = torch.randint(0, 3, (boxes_n,), generator=generator).to(device)
    config = {"type": "nms", "iou_threshold": 0.5, "split_thr": split_thr}
    try:
        dets, keep = batched_nms(boxes, scores, idxs, dict(config))
    except RuntimeError as error:
        if MESSAGE_OF_THE_BUG in str(error):
            return _finish(report, "crashed", str(error))
        raise
    reference_dets, reference_keep = batched_nms(boxes, scores.float(), idxs, dict(config))
    report["kept"] = int(keep.numel())
    same_boxes = torch.equal(keep.cpu(), reference_keep.cpu())
    same_scores = same_boxes and torch.allclose(dets[:, -1].float().cpu(), reference_dets[:, -1].float().cpu(), rtol=1e-3, atol=1e-3)
    if same_scores:
        return _finish(report, "survived", "kept the same %d boxes as with fp32 scores" % keep.numel())
    return _finish(report, "wrong", "returned, but kept different boxes or scores than with fp32 scores")


if __name__ == "__main__":
    sys.exit(main(sys.argv))
