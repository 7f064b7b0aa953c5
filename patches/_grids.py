"""The e2e grids that patches of one kind share (a helper, not a patch: the registry skips
modules whose name starts with ``_``): each says which dtypes crash the op as released, what
the patched op gives for them, and which calls work today and must stay bit-identical."""

from typing import List, Optional, Tuple

from mmcv_patcher.model import AMP_DTYPES, Fails, Grid


def nms_grid(
    calls: Tuple[str, ...], error: Optional[str], dets: Optional[str] = None, after: Tuple[str, ...] = ()
) -> Grid:
    """NMS ops as AMP calls them (``tests/e2e_ops/nms_ops.py``, ``calls`` its names): each works
    in fp32 and fails in each AMP dtype with ``error`` (``{name}``: the dtype as torch's
    messages name it; None: it runs but keeps other boxes than fp32 keeps); once patched it
    keeps exactly the boxes the same values keep in fp32, its dets in ``dets`` (None: the AMP
    dtype)."""
    return Grid(
        "nms_ops",
        works=tuple((call, "float32") for call in calls),
        fails=tuple(
            Fails((call, dtype), error and error.format(name=name), (f"torch.{dets or dtype}",), 0.0)
            for call in calls
            for dtype, name in AMP_DTYPES
        ),
        after=after,
    )


def roi_align_grid(layer: str, kernel: str) -> Grid:
    """RoIAlign or RoIAlignRotated (``tests/e2e_ops/roi_align.py``): bf16 is no kernel's dtype,
    and fp16 features beside fp32 RoIs mix dtypes; once patched, the output and the features'
    gradient come in the features' dtype, within a few roundings of it (11 and 8 bits)."""
    bf16 = f"NotImplementedError: \"{kernel}\" not implemented for 'BFloat16'"
    return Grid(
        "roi_align",
        works=tuple((layer, dtype, dtype) for dtype in ("float32", "float64", "float16")),
        fails=(
            Fails((layer, "bfloat16", "float32"), bf16, ("torch.bfloat16",) * 2, 2**-6),
            Fails((layer, "bfloat16", "bfloat16"), bf16, ("torch.bfloat16",) * 2, 2**-6),
            Fails(
                (layer, "float16", "float32"),
                "RuntimeError: expected scalar type Half but found Float",
                ("torch.float16",) * 2,
                2**-9,
            ),
        ),
    )


def deform_grids(layer: str, op: str, kernel: str) -> Tuple[Grid, Grid]:
    """A deformable convolution: its layer with its own offset conv under autocast
    (``tests/e2e_ops/deform_pack.py``), and the op called with features, offsets and mask in
    different dtypes (``tests/e2e_ops/deform_call.py``). The kernels lack bf16, and the release
    casts the features to the offsets' dtype, so bf16 offsets fail whatever the features are.
    Once patched the output comes in the offsets' dtype and each gradient in its input's."""
    error = f"NotImplementedError: \"{kernel}\" not implemented for '{dict(AMP_DTYPES)['bfloat16']}'"
    modulated = op == "modulated_deform_conv2d"
    # (features, offsets[, mask]) dtypes of direct calls that work as released (all cast to the
    # offsets' dtype), and of those that fail
    works: List[Tuple[str, ...]] = [("float16", "float32"), ("bfloat16", "float32")]
    fails: List[Tuple[str, ...]] = [("float32", "bfloat16")]
    if modulated:
        works = [(*each, "float32") for each in works] + [("float16", "float16", "float32")]
        fails = [("float32", "bfloat16", "bfloat16"), ("bfloat16", "bfloat16", "float32")]
    gradients = ("features", "offsets", "mask")[: 3 if modulated else 2]
    return (
        # the gradient through the offsets differs from the fp32 step's by about 0.12 in fp16
        # on the release too (the offset conv runs in the low dtype): the tolerance is the step's
        Grid(
            "deform_pack",
            works=((layer, "float32"), (layer, "float16")),
            fails=(Fails((layer, "bfloat16"), error, ("torch.bfloat16", "torch.bfloat16", "torch.float32"), 2**-2),),
        ),
        # the kernel runs in fp32 on the same values: one rounding to bf16 (8 bits) at most
        Grid(
            "deform_call",
            works=tuple((op, *dtypes) for dtypes in works),
            fails=tuple(
                Fails(
                    (op, *dtypes),
                    error,
                    ("torch.bfloat16", *(f"torch.{dtype}" for dtype in dtypes[: len(gradients)]), "torch.float32"),
                    2**-7,
                )
                for dtypes in fails
            ),
        ),
    )


def cuda_grid(op: str, kernel: str, *, reductions: Tuple[str, ...] = ("none",), weighted: bool = True) -> Grid:
    """An op mmcv builds for CUDA only, under CUDA's rules, simulated
    (``tests/e2e_ops/cuda_kernels.py``), with each of ``reductions``: no bf16, and fp32 class
    weights beside fp16 logits mix dtypes. Once patched the kernel gets fp32 under bf16 and
    the caller's dtype comes back, forward and back, within a few roundings of it; every call
    that works as released (fp32, fp16, whose reduced loss CUDA's ``sum`` gives in fp32)
    returns exactly what it returned."""
    bf16 = f"NotImplementedError: \"{kernel}\" not implemented for 'BFloat16'"
    weights = ("unweighted", "weighted") if weighted else ("unweighted",)
    fails = [
        Fails((op, "bfloat16", each, reduction), bf16, ("torch.bfloat16",) * 2, 2**-6, kernel="torch.float32")
        for each in weights
        for reduction in reductions
    ]
    if weighted:
        mixed = "RuntimeError: expected scalar type Half but found Float"
        fails += [
            Fails(
                (op, "float16", "weighted", reduction),
                mixed,
                (f"torch.{_fp16_loss(reduction)}", "torch.float16"),
                2**-9,
                kernel="torch.float16",
            )
            for reduction in reductions
        ]
    works = [
        (op, dtype, each, reduction)
        for dtype in ("float32", "float16")
        for each in weights[:1]
        for reduction in reductions
    ]
    works += [(op, "float32", "weighted", reduction) for reduction in reductions if weighted]
    return Grid("cuda_kernels", works=tuple(works), fails=tuple(fails))


def _fp16_loss(reduction: str) -> str:
    """The dtype of fp16 logits' loss under CUDA's autocast: its ``sum`` runs in fp32."""
    return "float16" if reduction == "none" else "float32"
