"""One step of an mmdetection or mmrotate config with random weights, on seeded images (one unless ``--batch``) with three boxes each.

Run in the interpreter whose mmcv is under test, with mmdet (and for its configs mmrotate) on its path:

    python scripts/model_step.py CONFIG train|predict fp32|bf16|fp16 [--size HxW] [--batch N] [--rounds N] [--rpn-split-thr N] [--rules cpu|cuda] [--copies] [--peak]
    python scripts/model_step.py --serve

``CONFIG`` is a config file, or its path under the configs a package ships (as
``.mim/configs``), named as mmengine names them:
``mmrotate::roi_trans/roi-trans-le90_r50_fpn_1x_dota.py``, and mmdet's without the prefix,
e.g. ``vfnet/vfnet_r50_fpn_1x_coco.py``. A config whose ``default_scope`` is ``mmrotate`` is
built with mmrotate's registry, and its three boxes are rotated ones (or their corners, for
a config that trains on quadrilaterals). Every ``init_cfg`` of type ``Pretrained`` is taken
out, and so is a distilling detector's teacher checkpoint (nothing is downloaded; its
teacher config is read from the configs the package ships); SyncBN becomes BN (one process);
a batch padded to a fixed size (``BatchFixedSizePad``, the crop size of large scale jitter)
is padded to the step's size; and the inputs go through the model's own
``data_preprocessor``, with a semantic map for a model with a semantic head and proposals
for a two-stage detector without an RPN. ``train`` is forward with ``mode='loss'`` and
backward; ``predict`` is inference with the config's test cfg. ``bf16`` and ``fp16`` run
under ``torch.autocast('cpu', dtype=...)``, as ``AmpOptimWrapper`` does on a GPU (mmengine's
CPU autocast takes bf16 only; torch's takes both), or with ``--rules cuda`` under CUDA's
rules, simulated (its autocast, with fp16 computed in fp32 as a GPU's kernels accumulate it,
and in every dtype, fp32 included, mmcv's kernels held to their CUDA launchers' dtypes, with
references where they have no CPU kernel); fp16 training scales the loss with a
``GradScaler``, as the wrapper does. ``--rpn-split-thr`` sets the RPN's NMS ``split_thr``
(mmcv's ``batched_nms`` runs per class id at or above it).

Prints one JSON object: the losses and whether they and every gradient are finite (for fp16,
at the loss scale the ``GradScaler`` settled at), or the boxes predicted; or the error, the
functions its traceback passed through and its innermost frames inside the packages this
tool patches and overall; the input's size as the model got it, after its preprocessor; the
seconds of each round after the model is built; and with ``--copies``, the seconds the
copies made on patched lines took in one more round; with ``--peak``, the largest magnitude
any module outputs in one more forward. Each image's three boxes come with masks when the
model predicts masks.

``--serve`` answers many steps from one process: each line of stdin (one step's arguments,
a JSON list) gets one line of that object on stdout, the step run in a child forked before
mmcv, mmdet or mmrotate is imported, so each step runs the files as they are when it starts.
"""

import argparse
import contextlib
import importlib
import json
import linecache
import os
import sys
import threading
import time
import traceback
import types
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, TextIO, Tuple

import torch
from torch.overrides import TorchFunctionMode

DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def config_path(config: str) -> str:
    """``config`` itself when it is a file, else its path under the shipped configs of the
    package it names (``PACKAGE::PATH``; mmdet's without a prefix)."""
    if os.path.isfile(config):
        return config
    package, _, path = config.rpartition("::")
    module = importlib.import_module(package or "mmdet")
    return os.path.join(os.path.dirname(module.__file__ or ""), ".mim", "configs", path)


def without_pretrained(node: Any) -> Any:
    """The config tree with nothing to download: every ``init_cfg`` that loads a checkpoint
    (of type ``Pretrained``, or naming a ``checkpoint``, which means the same) taken out, and
    every ``pretrained`` (the older way, DetectoRS's ``torchvision://resnet50``) and
    ``teacher_ckpt`` (LD's and LAD's teacher) set to None."""
    if isinstance(node, dict):
        return {
            key: None if key in ("pretrained", "teacher_ckpt") else without_pretrained(value)
            for key, value in node.items()
            if not (key == "init_cfg" and _is_pretrained(value))
        }
    if isinstance(node, list):
        return [without_pretrained(value) for value in node]
    return node


def one_process(node: Any) -> Any:
    """The config tree for one process: SyncBN (which needs a process group) as BN."""
    if isinstance(node, dict):
        synced = node.get("type") in ("SyncBN", "MMSyncBN")
        return type(node)(
            {key: "BN" if synced and key == "type" else one_process(value) for key, value in node.items()}
        )
    if isinstance(node, list):
        return [one_process(value) for value in node]
    return node


def padded_to(node: Any, size: Tuple[int, int]) -> Any:
    """The config tree with every ``BatchFixedSizePad`` padding to ``size`` (height, width): such
    a pad brings each batch to the config's crop size (1024x1024 for large scale jitter), which
    the step's input, smaller, stands for; at the crop size the step would not be at ``size``."""
    if isinstance(node, dict):
        padded = type(node)({key: padded_to(value, size) for key, value in node.items()})
        if node.get("type") == "BatchFixedSizePad":
            padded["size"] = size
        return padded
    if isinstance(node, list):
        return [padded_to(value, size) for value in node]
    return node


def _is_pretrained(init_cfg: Any) -> bool:
    if isinstance(init_cfg, dict):
        return init_cfg.get("type") == "Pretrained" or "checkpoint" in init_cfg
    return isinstance(init_cfg, list) and any(_is_pretrained(each) for each in init_cfg)


def has_masks(config: str) -> bool:
    """Whether the model predicts masks (its config names a mask branch or loss), and so
    trains on them; a detector given masks may take them for something else (RTMDet's
    assigner takes their centres)."""
    from mmengine.config import Config

    return "mask" in str(Config.fromfile(config_path(config)).model.to_dict())


def rotated_box_type(config: str) -> Optional[str]:
    """The box type an mmrotate ``config`` trains on (``rbox`` or ``qbox``, what its training
    pipeline makes of the ground truth last), or None for a config of another scope."""
    from mmengine.config import Config

    loaded = Config.fromfile(config_path(config))
    if loaded.get("default_scope") != "mmrotate":
        return None
    box_type = "rbox"
    for transform in loaded.train_dataloader.dataset.get("pipeline", []):
        box_type = transform.get("box_type_mapping", {}).get("gt_bboxes", transform.get("box_type", box_type))
    return str(box_type)


def _mmrotate_models() -> Any:
    """mmrotate's model registry, with its models and box structures registered.

    onedl-mmrotate 1.2.1 (the mmrotate that installs beside mmdet 3.3.0) imports two things
    that cannot load here and that a training step never runs; each gets a stand-in, named so,
    only when it cannot be imported: ``mmrotate.evaluation`` (its metrics import
    ``FasterCocoMetric``, which only onedl-mmdetection has) and torchvision (PyPI's does not load
    beside this torch; mmrotate imports it only for H2RBox-v2's augmentations)."""
    for name, submodules in (("torchvision", ("transforms",)), ("mmrotate.evaluation", ())):
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - any failure to import: the stand-in instead
            stand_in = sys.modules[name] = types.ModuleType(name, "a stand-in: see scripts/model_step.py")
            for submodule in submodules:
                setattr(stand_in, submodule, types.ModuleType(f"{name}.{submodule}", stand_in.__doc__))
    importlib.import_module("mmrotate.models")
    importlib.import_module("mmrotate.structures")
    from mmengine.registry import DefaultScope
    from mmrotate.registry import MODELS

    DefaultScope.get_instance("mmrotate", scope_name="mmrotate")
    return MODELS


def _mmdet_models() -> Any:
    """mmdet's model registry, with all its modules registered."""
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules

    register_all_modules()
    return MODELS


def build(config: str, rpn_split_thr: Optional[int], size: Optional[Tuple[int, int]] = None) -> Any:
    """``config``'s model with random weights (every checkpoint stripped), in one process;
    with ``size``, its batches padded to that size and no larger (:func:`padded_to`)."""
    from mmengine.config import Config, ConfigDict

    models = _mmrotate_models() if rotated_box_type(config) else _mmdet_models()
    loaded = Config.fromfile(config_path(config))
    model_cfg = without_pretrained(loaded.model.to_dict())
    model_cfg = ConfigDict(padded_to(model_cfg, size) if size is not None else model_cfg)
    if rpn_split_thr is not None:
        for mode in ("train_cfg", "test_cfg"):
            rpn = model_cfg.get(mode, {}).get("rpn_proposal" if mode == "train_cfg" else "rpn")
            if rpn is not None:
                rpn.nms["split_thr"] = rpn_split_thr
    torch.manual_seed(0)
    path, here = config_path(config), os.getcwd()
    shipped = path.split(os.sep + "configs" + os.sep)[0]  # .mim: what a teacher's "configs/gfl/..." names
    os.chdir(shipped if os.path.basename(shipped) == ".mim" else here)
    try:
        model = models.build(one_process(model_cfg))
    finally:
        os.chdir(here)
    with _unrecorded_init():
        model.init_weights()
    from mmengine.logging import MessageHub

    hub = MessageHub.get_current_instance()  # what a runner says at its first step
    hub.update_info("epoch", 0)
    hub.update_info("iter", 0)
    return model


@contextlib.contextmanager
def _unrecorded_init() -> Iterator[None]:
    """mmengine's ``init_weights`` without its record of which initialiser set each weight,
    which sets no weight: after each module's initialiser it takes the mean of every weight
    below that module again, for a log line, which costs a ResNet-50 model more than its
    initialisers do."""
    from mmengine.model import base_module, weight_init

    recorded = weight_init.update_init_info
    base_module.update_init_info = weight_init.update_init_info = _unrecorded
    try:
        yield
    finally:
        base_module.update_init_info = weight_init.update_init_info = recorded


def _unrecorded(module: Any, init_info: str) -> None:
    """Records nothing (:func:`_unrecorded_init`)."""


def classes(model: Any) -> int:
    """The fewest classes a head of ``model`` tells (a tracker's pedestrian detector has one)."""
    return min(
        (module.num_classes for module in model.modules() if isinstance(getattr(module, "num_classes", None), int)),
        default=80,
    )


def batch(
    model: Any, size: Tuple[int, int], training: bool, masks: bool, box_type: Optional[str], images: int = 1
) -> Any:
    """``images`` seeded uint8 images of ``size`` (height, width), each of its own noise (a
    batch norm's statistics over copies of one would be no spread at all), each with three
    boxes (of classes 0, 2 and 7, less where the model has fewer), and with ``masks`` their
    masks; ``box_type``: the boxes as mmrotate's of that type (``rbox``: centre, size and
    angle; ``qbox``: the same boxes' four corners). A video model gets videos of two frames
    of the first image (:func:`video`)."""
    from mmdet.structures import DetDataSample
    from mmdet.structures.mask import BitmapMasks
    from mmengine.structures import InstanceData

    height, width = size
    generator = torch.Generator().manual_seed(1)
    pictures = [(torch.rand(3, height, width, generator=generator) * 255).to(torch.uint8) for _ in range(images)]
    sample = DetDataSample(
        metainfo=dict(
            img_shape=(height, width),
            ori_shape=(height, width),
            scale_factor=(1.0, 1.0),
            pad_shape=(height, width),
            batch_input_shape=(height, width),
            border=(0, height, 0, width),  # where the image lies in its pad: CenterNet's and CornerNet's predict
        )
    )
    fractions = torch.tensor([[0.04, 0.12, 0.34, 0.62], [0.45, 0.19, 0.68, 0.88], [0.75, 0.06, 0.98, 0.44]])
    boxes = fractions * torch.tensor([width, height, width, height], dtype=torch.float32)
    labels = torch.tensor([0, 2, 7]) % classes(model)
    if box_type:
        from mmrotate.structures.bbox import RotatedBoxes

        centres, sides = (boxes[:, :2] + boxes[:, 2:]) / 2, boxes[:, 2:] - boxes[:, :2]
        angles = torch.tensor([[0.3], [-0.5], [1.0]])
        gt, none = RotatedBoxes(torch.cat([centres, sides, angles], 1)), RotatedBoxes(torch.zeros(0, 5))
        sample.gt_instances = InstanceData(bboxes=gt.convert_to(box_type), labels=labels)
        sample.ignored_instances = InstanceData(bboxes=none.convert_to(box_type), labels=labels[:0])
        return model.data_preprocessor({"inputs": pictures, "data_samples": [sample] * images}, training=training)
    sample.gt_instances = InstanceData(bboxes=boxes, labels=labels)
    if masks:
        filled = torch.zeros(3, height, width, dtype=torch.uint8)
        for index, (x1, y1, x2, y2) in enumerate(boxes.int().tolist()):
            filled[index, y1:y2, x1:x2] = 1
        sample.gt_instances.masks = BitmapMasks(filled.numpy(), height, width)
    sample.ignored_instances = InstanceData(bboxes=torch.zeros(0, 4), labels=torch.zeros(0, dtype=torch.long))
    heads = (model, getattr(model, "roi_head", None))
    if any(getattr(head, name, False) for head in heads for name in ("with_semantic", "with_semantic_head")):
        from mmengine.structures import PixelData

        semantic = torch.zeros(1, height, width, dtype=torch.long)
        for label, (x1, y1, x2, y2) in zip(labels.tolist(), boxes.int().tolist()):
            semantic[0, y1:y2, x1:x2] = label + 1
        sample.gt_sem_seg = PixelData(sem_seg=semantic)
    if hasattr(model, "with_rpn") and not model.with_rpn:  # Fast R-CNN: proposals come with the image
        jitter = torch.tensor([[-4.0, -4.0, 4.0, 4.0], [3.0, -2.0, -3.0, 2.0]])
        proposals = torch.cat([boxes + shift for shift in jitter] + [boxes])
        sample.proposals = InstanceData(bboxes=proposals, scores=torch.linspace(0.9, 0.3, len(proposals)))
    if _takes_videos(model):
        return model.data_preprocessor(video(pictures[0], sample, images), training=training)
    return model.data_preprocessor({"inputs": pictures, "data_samples": [sample] * images}, training=training)


def _inputs(data: Any) -> Any:
    """The images a preprocessed batch gives the model (a video's frames: the first video's)."""
    inputs = data["inputs"]
    return inputs[0] if isinstance(inputs, list) else inputs


def _takes_videos(model: Any) -> bool:
    """Whether ``model`` trains on videos: a tracker that learns from a key frame and a
    reference frame (QDTrack), or a video instance segmenter (MaskTrack R-CNN, Mask2Former's)."""
    preprocessor = model.data_preprocessor
    return type(preprocessor).__name__ == "TrackDataPreprocessor" and not preprocessor.use_det_processor


def video(image: Any, sample: Any, videos: int) -> Dict[str, Any]:
    """``videos`` videos of two frames, each ``image`` with ``sample``'s instances, tracked
    (``instances_ids``) from the first frame, the key frame, to the second, the reference."""
    from mmdet.structures import TrackDataSample

    frames = []
    for frame_id in range(2):
        frame = sample.clone()
        frame.set_metainfo({"frame_id": frame_id, "img_id": frame_id, "video_length": 2})
        frame.gt_instances.instances_ids = torch.arange(len(frame.gt_instances))
        frames.append(frame)
    track = TrackDataSample(video_data_samples=frames, metainfo={"key_frames_inds": [0], "ref_frames_inds": [1]})
    return {"inputs": [torch.stack([image, image])] * videos, "data_samples": [track] * videos}


#: A GradScaler's first scale, as AmpOptimWrapper makes it for fp16, and the factor a step
#: whose gradients overflow takes it down by here (the wrapper's halves it per skipped step)
SCALE, BACKOFF = 2.0**16, 2.0**-4


def train(model: Any, data: Any, scaled: bool = False) -> Dict[str, Any]:
    """Forward with ``mode='loss'`` and backward; with ``scaled`` (fp16) through a
    ``GradScaler``, backing off until the gradients are finite, as the wrapper's would over
    its first steps (``scale``: where it settles; None: at no scale down to 1)."""
    model.zero_grad()
    losses = model(**data, mode="loss")
    sums = {
        key: sum(v.sum() for v in value) if isinstance(value, (list, tuple)) else value.sum()
        for key, value in losses.items()
        if "loss" in key
    }
    total: Any = sum(sums.values())
    out: Dict[str, Any] = {"losses": {key: float(value.detach()) for key, value in sums.items()}}
    weights = [p for p in model.parameters() if p.requires_grad]
    if not scaled:
        total.backward()
        grads = [p.grad for p in weights if p.grad is not None]
        finite = all(bool(torch.isfinite(g).all()) for g in grads)
    else:
        scaler = torch.amp.GradScaler("cpu", init_scale=SCALE, backoff_factor=BACKOFF)
        optimizer = torch.optim.SGD(weights, lr=0.0)
        while True:
            optimizer.zero_grad()
            scale = scaler.get_scale()
            scaler.scale(total).backward(retain_graph=scale > 1)
            scaler.unscale_(optimizer)
            scaler.step(optimizer)  # skipped where a gradient is not finite
            scaler.update()
            finite = scaler.get_scale() >= scale
            if finite or scale <= 1:
                break
        out["scale"] = scale if finite else None
    out["finite"] = bool(torch.isfinite(total)) and finite
    return out


def peak(model: Any, data: Any, mode: str) -> float:
    """The largest magnitude of any floating-point tensor a module of ``model`` outputs in
    one forward with ``mode`` (without autograd): the range a low-precision dtype must hold
    for the step's activations (fp16's largest finite value is 65504)."""
    largest = 0.0

    def record(module: Any, inputs: Any, output: Any) -> None:
        nonlocal largest
        pending = [output]
        while pending:
            each = pending.pop()
            if isinstance(each, (list, tuple)):
                pending.extend(each)
            elif isinstance(each, dict):
                pending.extend(each.values())
            elif isinstance(each, torch.Tensor) and each.is_floating_point() and each.numel():
                largest = max(largest, float(each.detach().abs().max()))

    handle = torch.nn.modules.module.register_module_forward_hook(record)
    try:
        with torch.no_grad():
            model(**data, mode=mode)
    finally:
        handle.remove()
    return largest


#: What the tool writes after each statement it patched
MARKER = "# mmcv-patcher:"


class PatchCopies(TorchFunctionMode):  # type: ignore[misc]
    """Times the copies made on the lines this tool patched (their ``# mmcv-patcher:``
    marker): each cast there that gives a new tensor, forward, and the backward of it
    (autograd's node for the cast, timed by hooks). ``seconds`` and ``copies`` add up."""

    CASTS = (torch.Tensor.to, torch.Tensor.float, torch.Tensor.type_as, torch.Tensor.half, torch.Tensor.bfloat16)

    def __init__(self) -> None:
        super().__init__()
        self.seconds, self.copies = 0.0, 0
        self._started: Dict[int, float] = {}

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        if func not in self.CASTS or not _on_a_patched_line():
            return func(*args, **(kwargs or {}))
        started = time.perf_counter()
        out = func(*args, **(kwargs or {}))
        if out is not args[0]:
            self.seconds += time.perf_counter() - started
            self.copies += 1
            if out.grad_fn is not None:
                out.grad_fn.register_prehook(self._backward_starts)
                out.grad_fn.register_hook(self._backward_ends)
        return out

    def _backward_starts(self, grad_outputs: Any) -> None:
        self._started[threading.get_ident()] = time.perf_counter()

    def _backward_ends(self, grad_inputs: Any, grad_outputs: Any) -> None:
        self.seconds += time.perf_counter() - self._started.pop(threading.get_ident())
        self.copies += 1


def _on_a_patched_line() -> bool:
    """Whether the code that called the cast is a line this tool patched."""
    frame: Optional[types.FrameType] = sys._getframe(2)
    for _ in range(3):
        if frame is None:
            return False
        if MARKER in linecache.getline(frame.f_code.co_filename, frame.f_lineno):
            return True
        frame = frame.f_back
    return False


def autocast(rules: str, dtype: Any) -> Any:
    """Autocast in ``dtype`` under the CPU's rules (``dtype`` None: none), or CUDA's simulated
    (with its kernels' dtypes and the branches that take them; ``dtype`` None: those alone,
    in fp32)."""
    if dtype is None and rules == "cpu":
        return contextlib.nullcontext()
    if rules == "cuda":
        checkout = str(Path(__file__).resolve().parents[1])  # for scripts.cuda_rules, asked for only here
        if checkout not in sys.path:
            sys.path.insert(0, checkout)
        from scripts.cuda_rules import simulated

        return simulated(dtype, fp32_arithmetic=True)
    return torch.autocast("cpu", dtype=dtype)


def predict(model: Any, data: Any) -> Dict[str, Any]:
    with torch.no_grad():
        [result] = model(**data, mode="predict")
    return {
        "boxes": len(result.pred_instances.bboxes),
        "finite": bool(torch.isfinite(result.pred_instances.scores.float()).all()),
    }


def failure(error: BaseException) -> Dict[str, Any]:
    """What a training log shows of ``error``: its line, the functions it passed through,
    and where it was raised: inside the packages this tool patches (mmcv, mmdet, mmrotate)
    or a project of mmdetection's repository (``projects/``, Co-DETR's: ``package_frame``,
    the innermost) and overall (``file:line in function``, the file from its package
    directory on)."""
    frames = traceback.extract_tb(error.__traceback__)

    def where(frame: traceback.FrameSummary) -> str:
        path = frame.filename.replace(os.sep, "/")
        for package in ("/mmcv/", "/mmdet/", "/mmrotate/", "/projects/", "/mmengine/", "/torch/"):
            if package in path:
                path = package.strip("/") + "/" + path.rsplit(package, 1)[1]
                break
        return f"{path}:{frame.lineno} in {frame.name}"

    message = str(error).splitlines()[0] if str(error) else ""
    inside = [
        frame
        for frame in frames
        if any(f"/{package}/" in frame.filename.replace(os.sep, "/") for package in (*PATCHED, "projects"))
    ]
    return {
        "error": f"{type(error).__name__}: {message}",
        "passed": [frame.name for frame in frames],
        "package_frame": where(inside[-1]) if inside else None,
        "frame": where(frames[-1]) if frames else None,
    }


def report(argv: List[str]) -> Dict[str, Any]:
    """What one step given ``argv`` (the arguments after the program's name) did: the JSON
    object :func:`main` prints."""
    parser = argparse.ArgumentParser(prog="model_step.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("config")
    parser.add_argument("mode", choices=("train", "predict"))
    parser.add_argument("dtype", choices=sorted(DTYPES))
    parser.add_argument("--size", default="512x512", help="HEIGHTxWIDTH of the image (default 512x512)")
    parser.add_argument(
        "--batch", type=int, default=1, help="images in the batch, each of its own seeded noise (default 1)"
    )
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--rpn-split-thr", type=int)
    parser.add_argument(
        "--rules",
        choices=("cpu", "cuda"),
        default="cpu",
        help="whose rules the step runs under: the CPU's (default), or CUDA's, simulated (scripts/cuda_rules.py: its"
        " autocast in bf16 and fp16, and in every dtype mmcv's CUDA kernels' dtypes and the branches that take them)",
    )
    parser.add_argument(
        "--copies",
        action="store_true",
        help="one more round, not timed: the seconds the copies made on patched lines took in it (forward and backward)",
    )
    parser.add_argument(
        "--peak",
        action="store_true",
        help="one more forward, not timed: the largest magnitude of any module's output (the range AMP's dtype must hold)",
    )
    args = parser.parse_args(argv)
    height, width = (int(side) for side in args.size.split("x"))
    out: Dict[str, Any] = {"seconds": []}
    try:
        model = build(args.config, args.rpn_split_thr, (height, width))
        model.train(args.mode == "train")
        masks, box_type = has_masks(args.config), rotated_box_type(args.config)

        def fresh() -> Any:
            """The batch, made anew for each forward: a model may change what it is given
            (Mask2Former's video instance segmenter turns its masks into tensors)."""
            return batch(
                model,
                (height, width),
                training=args.mode == "train",
                masks=masks,
                box_type=box_type,
                images=args.batch,
            )

        data = fresh()
    except Exception as error:  # the config cannot be built here: not a step's failure
        out.update(failure(error), built=False)
        return out
    out["input"] = "x".join(str(side) for side in _inputs(data).shape[-2:])
    dtype = DTYPES[args.dtype]

    def once(given: Any) -> None:
        with autocast(args.rules, dtype):
            if args.mode == "predict":
                out.update(predict(model, given))
            else:
                out.update(train(model, given, scaled=dtype is torch.float16))

    for index in range(args.rounds):
        given = data if index == 0 else fresh()
        started = time.perf_counter()
        try:
            once(given)
        except Exception as error:  # what the user sees in their training log
            out.update(failure(error))
            break
        out["seconds"].append(time.perf_counter() - started)
    if args.peak and "error" not in out:
        with autocast(args.rules, dtype):
            out["peak"] = peak(model, fresh(), "loss" if args.mode == "train" else "predict")
    if args.copies and "error" not in out:
        copies = PatchCopies()
        given = fresh()
        with copies:
            once(given)
        out["copies"] = {"seconds": copies.seconds, "copies": copies.copies}
    return out


#: What ``--serve`` imports once, before any step: what steps import and no patch edits (the
#: fake tensors CUDA's rules, simulated, ask CUDA's autocast with, too)
PRELOADED = (
    "numpy",
    "cv2",
    "scipy.optimize",
    "matplotlib.pyplot",
    "mmengine.config",
    "mmengine.logging",
    "mmengine.model",
    "mmengine.runner",
    "mmengine.structures",
    "torch._subclasses.fake_tensor",
)

#: The packages whose files a patch may edit: a served step imports them from disk itself
PATCHED = ("mmcv", "mmdet", "mmrotate")


def serve(requests: TextIO, answers: TextIO) -> int:
    """Answers each line of ``requests`` (a JSON list: the arguments of one step) with one
    line on ``answers`` (:func:`report`'s object), each step in a child forked from this
    process once it has imported :data:`PRELOADED` and nothing of :data:`PATCHED`: a child
    imports mmcv, mmdet and mmrotate from disk as they are when it starts, as a new
    interpreter would, so a file written between two steps is what the next one runs, and
    only the imports no patch touches are shared. What the step's libraries print goes to
    stderr."""
    for name in PRELOADED:
        importlib.import_module(name)
    shared = sorted(name for name in sys.modules if name.partition(".")[0] in PATCHED)
    if shared:
        raise SystemExit(f"model_step.py --serve: preloading imported {shared[0]}, which a step must import itself")
    for request in requests:
        readable, writable = os.pipe()
        child = os.fork()
        if child == 0:
            os.close(readable)
            os.dup2(2, 1)
            with os.fdopen(writable, "w") as answer:
                try:
                    answer.write(json.dumps(report(json.loads(request))))
                except BaseException as error:  # noqa: BLE001 - bad arguments too: an answer, not a dead server
                    answer.write(json.dumps({"error": f"{type(error).__name__}: {error}", "died": True}))
            sys.stdout.flush()
            os._exit(0)
        os.close(writable)
        with os.fdopen(readable) as pipe:
            answered = pipe.read()
        _, status = os.waitpid(child, 0)
        if not answered:
            ended = (
                f"was killed by signal {os.WTERMSIG(status)}"
                if os.WIFSIGNALED(status)
                else f"exited {os.WEXITSTATUS(status)}"
            )
            answered = json.dumps({"error": f"the step's process {ended}", "died": True})
        answers.write(answered + "\n")
        answers.flush()
    return 0


def main(argv: List[str]) -> int:
    if argv[1:] == ["--serve"]:
        return serve(sys.stdin, sys.stdout)
    print(json.dumps(report(argv[1:])))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
