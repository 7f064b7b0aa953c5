"""One step of mmdetection's own Faster R-CNN (``faster-rcnn_r50_fpn_1x_coco.py``, random
weights) on one image resized to 2666x1600 with three boxes: a training step (forward with
``mode='loss'`` and backward) or inference with the COCO test cfg (80 classes).

Run in the interpreter whose mmcv is under test, with mmdet on its path:

    python tests/faster_rcnn_step.py train|predict fp32|bf16 [ROUNDS]

``bf16`` runs under ``torch.autocast('cpu', dtype=torch.bfloat16)``, what mmengine's CPU
autocast (and ``AmpOptimWrapper(dtype='bfloat16')``) gives. Prints one JSON object: the
losses, whether they and every gradient are finite, or the error and the functions its
traceback passed through; and the seconds of each round after the model is built. The
inputs are seeded, so every run and round gets the same ones.
"""

import json
import os
import sys
import time
import traceback
from typing import Any, Dict, List

import torch


def _model() -> Any:
    import mmdet
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    from mmengine.config import Config

    register_all_modules()
    config = Config.fromfile(
        os.path.join(
            os.path.dirname(mmdet.__file__), ".mim", "configs", "faster_rcnn", "faster-rcnn_r50_fpn_1x_coco.py"
        )
    )
    config.model.backbone.init_cfg = None  # random weights: nothing is downloaded
    torch.manual_seed(0)
    model = MODELS.build(config.model)
    model.init_weights()
    return model


def _batch(model: Any, training: bool) -> Any:
    from mmdet.structures import DetDataSample
    from mmengine.structures import InstanceData

    generator = torch.Generator().manual_seed(1)
    height, width = 1600, 2666
    image = (torch.rand(3, height, width, generator=generator) * 255).to(torch.uint8)
    sample = DetDataSample(
        metainfo=dict(
            img_shape=(height, width), ori_shape=(height, width), scale_factor=(1.0, 1.0), pad_shape=(height, width)
        )
    )
    boxes = torch.tensor(
        [[100.0, 200.0, 900.0, 1000.0], [1200.0, 300.0, 1800.0, 1400.0], [2000.0, 100.0, 2600.0, 700.0]]
    )
    sample.gt_instances = InstanceData(bboxes=boxes, labels=torch.tensor([0, 2, 7]))
    return model.data_preprocessor({"inputs": [image], "data_samples": [sample]}, training=training)


def _train(model: Any, data: Any) -> Dict[str, Any]:
    model.zero_grad()
    losses = model(**data, mode="loss")
    total: Any = sum(
        value.sum() if isinstance(value, torch.Tensor) else sum(v.sum() for v in value)
        for key, value in losses.items()
        if "loss" in key
    )
    total.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    finite = bool(torch.isfinite(total)) and all(bool(torch.isfinite(g).all()) for g in grads)
    sums = {
        key: sum(v.sum() for v in value) if isinstance(value, list) else value.sum()
        for key, value in losses.items()
        if "loss" in key
    }
    return {"losses": {key: float(value.detach()) for key, value in sums.items()}, "finite": finite}


def _predict(model: Any, data: Any) -> Dict[str, Any]:
    with torch.no_grad():
        [result] = model(**data, mode="predict")
    return {
        "boxes": len(result.pred_instances.bboxes),
        "finite": bool(torch.isfinite(result.pred_instances.scores.float()).all()),
    }


def main(argv: List[str]) -> int:
    mode, dtype, rounds = argv[1], argv[2], int(argv[3]) if len(argv) > 3 else 1
    model = _model()
    model.train(mode == "train")
    data = _batch(model, training=mode == "train")
    step = _train if mode == "train" else _predict
    out: Dict[str, Any] = {"seconds": []}
    for _ in range(rounds):
        started = time.perf_counter()
        try:
            if dtype == "bf16":
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    out.update(step(model, data))
            else:
                out.update(step(model, data))
        except Exception as error:  # what the user sees in their training log
            frames = traceback.extract_tb(error.__traceback__)
            out.update(
                error="%s: %s" % (type(error).__name__, str(error).splitlines()[0]),
                passed=[frame.name for frame in frames],
            )
            break
        out["seconds"].append(time.perf_counter() - started)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
