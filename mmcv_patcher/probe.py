"""The check ``verify`` runs in the target interpreter, passed as ``python -c`` source.

It is the only code of this tool that imports torch and the packages it patches (mmcv, and
mmdet or mmrotate for their cases), and it runs in a child process so the patcher itself
never does. It imports nothing from mmcv_patcher, keeps to
Python 3.6 syntax, and prints one JSON object on its last line of output.

argv[1] is one JSON object: ``cases`` (patch id -> its case, as
:meth:`mmcv_patcher.model.Case.as_json` writes it), ``dtypes`` (the AMP dtypes to run each
in: "float16", "bfloat16"), ``device`` ("cpu" or "cuda") and ``boxes`` (``--boxes``).

Each case calls its package as training does under AMP: with what autocast gives it in that
dtype, inside ``torch.autocast`` on the device (where the installed torch has it), and then,
when the result carries a gradient, backward. It compares the forward result with the same
values in fp32: it survived when it gave what fp32 gives (the same boxes; a tensor within
the dtype's rounding, in the dtype; a head's losses, every one finite), crashed when the
call raised, forward or backward, and is wrong otherwise. A case of an op mmcv has no kernel
for on the device (a CUDA-only op on the CPU) is skipped, and counts neither way.
"""

import contextlib
import copy
import importlib.util
import json
import os
import sys

_SHORT = {"float16": "fp16", "bfloat16": "bf16"}


def _finish(report, verdict, detail):
    report["verdict"] = verdict
    report["detail"] = detail
    print(json.dumps(report))
    return 0


def _boxes(torch, generator, n, spread):
    rows = (n,) if isinstance(n, int) else tuple(n)
    xy = torch.rand(*rows, 2, generator=generator) * spread
    return torch.cat([xy, xy + torch.rand(*rows, 2, generator=generator) * 100 + 1], -1)


def _rotated_boxes(torch, generator, n, spread):
    rows = (n,) if isinstance(n, int) else tuple(n)
    centres = torch.rand(*rows, 2, generator=generator) * spread
    sizes = torch.rand(*rows, 2, generator=generator) * 60 + 4
    return torch.cat([centres, sizes, (torch.rand(*rows, 1, generator=generator) - 0.5) * 3], -1)


def _images(torch, generator, spec, n):
    return torch.randint(0, spec["images"], (n, 1), generator=generator).float()


def _level_starts(torch, shapes):
    sizes = torch.tensor([h * w for h, w in shapes], dtype=torch.int64)
    return torch.cat([sizes.new_zeros(1), sizes.cumsum(0)[:-1]])


def _det_samples(torch, generator, spec, n):
    """One image's ground truth as mmdet gives a head: a list of one ``DetDataSample`` with
    ``n`` boxes inside a ``scale`` x ``scale`` image, labels below ``classes``, and each box's
    mask (the box filled)."""
    from mmdet.structures import DetDataSample
    from mmdet.structures.mask import BitmapMasks
    from mmengine.structures import InstanceData

    side = int(spec["scale"])
    corners = torch.rand(n, 2, generator=generator) * side * 0.6
    boxes = torch.cat([corners, corners + torch.rand(n, 2, generator=generator) * side * 0.4 + 4], 1)
    masks = torch.zeros(n, side, side, dtype=torch.uint8)
    for each, (x1, y1, x2, y2) in enumerate(boxes.round().long().tolist()):
        masks[each, y1:y2, x1:x2] = 1
    sample = DetDataSample(
        metainfo={"img_shape": (side, side), "pad_shape": (side, side), "batch_input_shape": (side, side)}
    )
    sample.gt_instances = InstanceData(
        bboxes=boxes,
        labels=torch.randint(0, int(spec["classes"]), (n,), generator=generator),
        masks=BitmapMasks(masks.numpy(), side, side),
    )
    return [sample]


#: each kind of :class:`mmcv_patcher.model.Tensor`: (torch, generator, its fields, its rows) -> the tensor
KINDS = {
    "boxes": lambda torch, g, spec, n: _boxes(torch, g, n, spec["scale"] or 1000.0),
    "scores": lambda torch, g, spec, n: torch.rand(n, generator=g),
    "labels": lambda torch, g, spec, n: torch.randint(0, int(spec["scale"]), (n,), generator=g),
    "rotated-boxes": lambda torch, g, spec, n: _rotated_boxes(torch, g, n, spec["scale"] or 500.0),
    "features": lambda torch, g, spec, n: torch.rand(*spec["size"], generator=g) * (spec["scale"] or 1.0),
    "rois": lambda torch, g, spec, n: torch.cat(
        [_images(torch, g, spec, n), _boxes(torch, g, n, spec["scale"] or 1000.0)], 1
    ),
    "rotated-rois": lambda torch, g, spec, n: torch.cat(
        [_images(torch, g, spec, n), _rotated_boxes(torch, g, n, spec["scale"] or 500.0)], 1
    ),
    "shapes": lambda torch, g, spec, n: torch.tensor(spec["size"], dtype=torch.int64),
    "starts": lambda torch, g, spec, n: _level_starts(torch, spec["size"]),
    "levels": lambda torch, g, spec, n: tuple(torch.rand(*shape, generator=g) for shape in spec["size"]),
    "det-samples": _det_samples,
}


def _each(function, value):
    """``function`` of a tensor, of each tensor in a tuple of them, or of a list of samples (``.to``)."""
    if isinstance(value, tuple):
        return tuple(function(each) for each in value)
    if isinstance(value, list):
        return [function(each) for each in value]
    return function(value)


def _resolve(path):
    """What a dotted path names, as code that imports its first module reaches it: each
    name an attribute of what comes before it (``mmcv.ops.nms``, the function the package
    exports), or else the submodule of that name, imported."""
    parts = path.split(".")
    found = importlib.import_module(parts[0])
    for index, name in enumerate(parts[1:], 2):
        if not hasattr(found, name):
            importlib.import_module(".".join(parts[:index]))
        found = getattr(found, name)
    return found


def _tensor(torch, generator, spec, boxes):
    """The tensor a case's ``Tensor`` describes, on the CPU (fp32 unless it holds indices)."""
    if spec["kind"] not in KINDS:
        raise ValueError("this version of verify cannot make a %r tensor" % spec["kind"])
    return KINDS[spec["kind"]](torch, generator, spec, boxes if spec["size"] == "boxes" else spec["size"])


def _is_tensor(arg):
    """Whether a case's argument describes a tensor (a ``Tensor`` as JSON has it)."""
    return isinstance(arg, dict) and bool(arg.get("tensor"))


def _made(torch, generator, arg, boxes, device):
    """An argument of a case on ``device``, and whether it comes in the AMP dtype (None: a
    JSON value, passed as it is): a tensor, or a list of them (one per image, as mmdet's
    losses take ground truth)."""
    if _is_tensor(arg):
        return _each(lambda t: t.to(device), _tensor(torch, generator, arg, boxes)), arg["amp"]
    if isinstance(arg, list) and arg and all(_is_tensor(each) for each in arg):
        return [_tensor(torch, generator, each, boxes).to(device) for each in arg], all(each["amp"] for each in arg)
    return arg, None


def _same_boxes(torch, dtype, result, reference):
    """NMS results: the same kept indices, and dets equal to the fp32 run's."""
    (dets, keep), (reference_dets, reference_keep) = result, reference
    if torch.equal(keep.cpu(), reference_keep.cpu()) and torch.allclose(
        dets.float().cpu(), reference_dets.float().cpu(), rtol=1e-3, atol=1e-3
    ):
        return True, "kept the same %d boxes as the same values in fp32" % keep.numel()
    return False, "returned, but kept other boxes than the same values in fp32 (%d against %d)" % (
        keep.numel(),
        reference_keep.numel(),
    )


#: How far a result in each AMP dtype may be from the fp32 run's, relative: a few roundings
ROUNDING = {"float16": 1e-2, "bfloat16": 5e-2}


def _close_values(torch, dtype, result, reference):
    """A tensor: in the AMP dtype, and the fp32 run's values within its rounding, relative
    to each value and to the largest (a kernel that sums in the AMP dtype, as mmcv's fp16
    deformable convolution does, rounds each sum at the scale of its terms)."""
    tolerance = ROUNDING[dtype]
    if result.dtype != getattr(torch, dtype):
        return False, "returned %s, not the inputs' %s" % (result.dtype, dtype)
    largest = max(1.0, reference.float().abs().max().item()) if reference.numel() else 1.0
    if torch.allclose(result.float().cpu(), reference.float().cpu(), rtol=tolerance, atol=tolerance * largest):
        return True, "gave %s the same values as fp32 within %s rounding, shape %s" % (
            dtype,
            dtype,
            tuple(result.shape),
        )
    return False, "returned values that differ from the same inputs in fp32 by up to %g" % (
        result.float() - reference.float()
    ).abs().max().item()


def _losses(result):
    """A loss dict's tensors, a loss given as a list of them (one per level) summed, as
    mmengine's ``parse_losses`` sums it."""
    return dict(
        (name, sum(each.sum() for each in value) if isinstance(value, (list, tuple)) else value)
        for name, value in result.items()
    )


def _finite_losses(torch, dtype, result, reference):
    """A head's losses: the same losses as the fp32 run, every one finite."""
    losses, expected = _losses(result), _losses(reference)
    if sorted(losses) != sorted(expected):
        return False, "gave the losses %s, not the fp32 run's %s" % (sorted(losses), sorted(expected))
    infinite = sorted(name for name, value in losses.items() if not bool(torch.isfinite(value.float()).all()))
    if infinite:
        return False, "gave non-finite %s" % ", ".join(infinite)
    return True, "gave the fp32 run's losses (%s), every one finite" % ", ".join(sorted(losses))


def _close_loss(torch, dtype, result, reference):
    """A loss tensor: finite, and the fp32 run's value within the AMP dtype's rounding, in
    whatever dtype it comes (CUDA's autocast gives losses in fp32)."""
    if not bool(torch.isfinite(result.float()).all()):
        return False, "gave a non-finite loss"
    tolerance = ROUNDING[dtype]
    if torch.allclose(result.float().cpu(), reference.float().cpu(), rtol=tolerance, atol=tolerance):
        return True, "gave the fp32 run's loss within %s rounding, in %s" % (dtype, result.dtype)
    return False, "gave a loss that differs from the fp32 run's by up to %g" % (
        result.float() - reference.float()
    ).abs().max().item()


def _finite_costs(torch, dtype, result, reference):
    """A matching cost matrix: finite, as a Hungarian assigner needs it (SciPy refuses NaN
    and -inf), and of the fp32 run's shape."""
    if result.shape != reference.shape:
        return False, "gave costs of shape %s, not the fp32 run's %s" % (tuple(result.shape), tuple(reference.shape))
    if not bool(torch.isfinite(result.float()).all()):
        return False, "gave non-finite costs, which the Hungarian assigner refuses"
    return True, "gave finite costs, in %s, shape %s" % (result.dtype, tuple(result.shape))


COMPARE = {
    "boxes": _same_boxes,
    "values": _close_values,
    "losses": _finite_losses,
    "loss": _close_loss,
    "costs": _finite_costs,
}


def _run_case(torch, case, dtype, device, boxes):
    """survived / crashed / wrong, and why, with what the call gave mmcv."""
    gave = case["gave"].format(amp=_SHORT.get(dtype, dtype), boxes=boxes)
    amp = getattr(torch, dtype)
    torch.manual_seed(0)  # a module's own weights
    generator = torch.Generator().manual_seed(0)
    if device not in case["devices"]:
        return {
            "gave": gave,
            "verdict": "skipped",
            "detail": case["skipped"] % {"device": device, "op": case["op"], "runs_on": case["devices"][0]},
        }
    try:
        target = _resolve(case["call"])
        if case["init"] is not None:
            init = case["init"]
            target = target(**init) if isinstance(init, dict) else target(*init)
            target = target.to(device) if hasattr(target, "to") else target  # a module, or a cost
        if case.get("method"):
            target = getattr(target, case["method"])
        made = [_made(torch, generator, arg, boxes, device) for arg in case["args"]]
    except Exception as error:
        return {
            "gave": gave,
            "verdict": "unavailable",
            "detail": "the case cannot be set up here (%s: %s)" % (type(error).__name__, error),
        }

    def call(cast):
        args = [
            (_each(cast, value) if amp_side else value) if amp_side is not None else copy.deepcopy(value)
            for value, amp_side in made
        ]
        return target(*args)

    def train(t):
        """What autocast gives the op: the AMP dtype; for a layer or a loss, a leaf that takes a gradient."""
        t = t.to(amp)
        return t.detach().requires_grad_() if case.get("backward") and t.is_floating_point() else t

    where = "forward"
    try:
        with _autocast(torch, device, amp):
            result = call(train)
        first = result[0] if isinstance(result, tuple) else result
        if isinstance(result, dict):  # a head's losses: training sums them
            first = sum(value.float().sum() for value in _losses(result).values())
        if case.get("backward") and torch.is_tensor(first) and first.requires_grad:
            where = "backward"
            first.float().sum().backward()
    except Exception as error:  # what the user would see under AMP
        return {
            "gave": gave,
            "verdict": "crashed",
            "detail": "%s%s: %s"
            % (
                "" if where == "forward" else "in backward: ",
                type(error).__name__,
                str(error).splitlines()[0] if str(error) else "",
            ),
        }
    with torch.no_grad():
        reference = call(lambda t: t.to(amp).float())  # the same values in fp32
    survived, detail = COMPARE[case["compare"]](torch, dtype, result, reference)
    return {"gave": gave, "verdict": "survived" if survived else "wrong", "detail": detail}


def _autocast(torch, device, amp):
    """``torch.autocast`` on ``device`` in ``amp``, as AmpOptimWrapper enters it; nothing
    where the installed torch has none for it (older than 1.10, or no such device type)."""
    try:
        return torch.autocast(device, dtype=amp)
    except (AttributeError, RuntimeError, ValueError):
        return contextlib.nullcontext() if hasattr(contextlib, "nullcontext") else _Nothing()


class _Nothing(object):
    """A context that does nothing (``contextlib.nullcontext`` came in Python 3.7)."""

    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def _ops_named(cases):
    """``a``, ``a or b``, ``a, b or c``: the ops the cases call."""
    names = list(dict.fromkeys(case["op"] for case in cases.values()))
    return names[0] if len(names) == 1 else "%s or %s" % (", ".join(names[:-1]), names[-1])


def main(argv):
    # The mmcv a program of this interpreter imports: not one in the working directory,
    # which ``-c`` puts first on sys.path (Python puts nothing there under -P, 3.11+).
    del sys.path[: 0 if getattr(sys.flags, "safe_path", False) else 1]
    asked = json.loads(argv[1])
    cases, dtypes, device, boxes = asked["cases"], asked["dtypes"], asked["device"], asked["boxes"]
    report = {"python": sys.executable, "device": device, "patches": list(cases), "dtypes": dtypes}
    torch_problem = None
    try:
        import torch
    except Exception as error:  # any import failure means: cannot check here
        torch_problem = "torch cannot be imported (%s: %s): install torch" % (type(error).__name__, error)
    # What matters first: mmcv-lite (or a build without MMCV_WITH_OPS) has no compiled ops,
    # so there is nothing to run whatever torch does. Told from the files, importing nothing.
    spec = importlib.util.find_spec("mmcv")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if (
        locations
        and os.path.isdir(locations[0])
        and not any(name.startswith("_ext") for name in os.listdir(locations[0]))
    ):
        detail = (
            "mmcv at %s has no compiled ops (mmcv-lite, or a build without MMCV_WITH_OPS=1), so there is no %s to run:"
            " install mmcv of the same version in its place (mim install mmcv==VERSION takes a wheel built for your"
            " torch and CUDA; pip install mmcv==VERSION builds the ops)" % (locations[0], _ops_named(cases))
        )
        return _finish(report, "unavailable", detail + ("; %s too" % torch_problem if torch_problem else ""))
    if torch_problem is not None:
        return _finish(report, "unavailable", torch_problem)
    report["torch"] = torch.__version__
    try:
        import mmcv
        import mmcv.ops  # noqa: F401 (its compiled ops load, or nothing can run)
    except Exception as error:
        return _finish(
            report,
            "unavailable",
            "mmcv.ops cannot be imported (%s: %s)"
            % (type(error).__name__, str(error).splitlines()[0] if str(error) else ""),
        )
    report["mmcv"] = getattr(mmcv, "__version__", None)
    report["mmcv_dir"] = os.path.dirname(os.path.abspath(mmcv.__file__))
    if device == "cuda" and not torch.cuda.is_available():
        return _finish(report, "unavailable", "torch.cuda.is_available() is False")
    report["cases"] = {}
    for dtype in dtypes:
        for id, case in cases.items():
            report["cases"].setdefault(id, {})[dtype] = _run_case(torch, case, dtype, device, boxes)
    ran = [
        (id, dtype, case)
        for id, by_dtype in report["cases"].items()
        for dtype, case in by_dtype.items()
        if case["verdict"] != "skipped"
    ]
    verdicts = [case["verdict"] for _, _, case in ran]
    survived = verdicts.count("survived")
    overall = (
        "survived"
        if verdicts and survived == len(verdicts)
        else "crashed"
        if "crashed" in verdicts
        else "wrong"
        if "wrong" in verdicts
        else "unavailable"
    )
    failed = ", ".join(
        "%s in %s %s" % (id, dtype, case["verdict"]) for id, dtype, case in ran if case["verdict"] != "survived"
    )
    skipped = sorted(
        id
        for id, by_dtype in report["cases"].items()
        if all(case["verdict"] == "skipped" for case in by_dtype.values())
    )
    detail = (
        "%d of %d cases survived" % (survived, len(verdicts))
        + ("; %s" % failed if failed else "")
        + ("; skipped on %s: %s" % (device, ", ".join(skipped)) if skipped else "")
    )
    return _finish(report, overall, detail)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
