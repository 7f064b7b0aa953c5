"""carafe-fp32-kernel: run ``CARAFE``'s CUDA kernel in fp32 for bf16 or mixed-dtype inputs.

mmcv's CARAFE has CUDA (and NPU, MLU) kernels only, built for float, double and half, with the
features and the reassembly masks in one dtype. Under bf16 autocast on a GPU, ``CARAFEPack``
(mmdet's ``FPN_CARAFE``, the CARAFE configs) fails with ``NotImplementedError:
"NCHW2NHWC_Feature" not implemented for 'BFloat16'``; a call with fp16 features beside fp32
masks fails with ``RuntimeError: expected scalar type Half but found Float`` (``CARAFEPack``
itself computes its masks in the features' dtype, so fp16 runs).
``CARAFEFunction.forward`` now gives the kernel fp32 copies of both in exactly those cases
(still requiring their gradients), and returns the output in the features' dtype; its
``backward`` takes the gradient to the saved features' dtype for the kernel, and autograd
hands each input its gradient in its own dtype. Every call that works today (fp32, fp64, fp16
features and masks) keeps its tensors and gets ``.to()`` and ``.type_as()`` its own dtype,
which are the tensors themselves: no copy, bit-identical.

Not run on a GPU here: the tests run a model's step under CUDA's rules, simulated
(``scripts/cuda_rules.py``: the kernel held to its CUDA launcher's dtypes, a PyTorch
reference in its place); ``verify --device cuda`` runs the case on a CUDA build.

Releases: the statements are the same in every mmcv release from 1.0.0 to 2.2.0 and in
every onedl-mmcv; none has a bf16 kernel.
"""

from mmcv_patcher.model import Affected, Case, Edit, Example, Patch, Proofs, Step, Tensor, Untouched, per_distribution

_FUNCTION = "CARAFEFunction"
_NEEDS_FP32 = "features.dtype == torch.bfloat16 or masks.dtype != features.dtype"

PATCH = Patch(
    id="carafe-fp32-kernel",
    summary="CARAFE (CUDA only): fp32 kernel for bf16 or mixed-dtype features and masks; output in their dtype",
    affected=per_distribution((Affected("1.0.0", "2.2.0"),), (Affected("2.3.0", "2.3.6"),)),
    file="ops/carafe.py",
    function=f"{_FUNCTION}.forward",
    edits=(
        Edit(
            "ctx.mask_size = masks.size()",
            "ctx.mask_size, ctx.output_dtype, features, masks = masks.size(), features.dtype,"
            f" features.float().requires_grad_(features.requires_grad) if {_NEEDS_FP32} else features,"
            f" masks.float().requires_grad_(masks.requires_grad) if {_NEEDS_FP32} else masks",
        ),
        Edit("return output", "return output.to(ctx.output_dtype)"),
        Edit(
            "features, masks, rfeatures = ctx.saved_tensors",
            "features, masks, rfeatures, grad_output = *ctx.saved_tensors, grad_output.type_as(ctx.saved_tensors[0])",
            function=f"{_FUNCTION}.backward",
        ),
    ),
    error=(
        "`NotImplementedError: \"NCHW2NHWC_Feature\" not implemented for 'BFloat16'` (mmdet's FPN_CARAFE under"
        " bf16 on a GPU); `RuntimeError: expected scalar type Half but found Float` (fp16 features, fp32 masks)"
    ),
    case=Case(
        op="carafe",
        args=(Tensor("features", (2, 16, 32, 32), amp=True), Tensor("features", (2, 25, 64, 64)), 5, 1, 2),
        gave="carafe 5x5, x2: {amp} features 2x16x32x32, fp32 masks (a CUDA-only kernel)",
        compare="values",
        devices=("cuda",),
        backward=True,
    ),
    examples=(
        Example.of(
            """
            import torch
            from torch.autograd import Function


            class CARAFEFunction(Function):

                @staticmethod
                def forward(ctx, features, masks, kernel_size, group_size, scale_factor):
                    ctx.feature_size = features.size()
                    ctx.mask_size = masks.size()
                    output = features.new_zeros(features.size())
                    ext_module.carafe_forward(features, masks, output, kernel_size=kernel_size)
                    if features.requires_grad or masks.requires_grad:
                        ctx.save_for_backward(features, masks, output)
                    return output

                @staticmethod
                def backward(ctx, grad_output):
                    features, masks, rfeatures = ctx.saved_tensors
                    grad_input = torch.zeros_like(features, requires_grad=False)
                    ext_module.carafe_backward(grad_output.contiguous(), rfeatures, masks, grad_input)
                    return grad_input, None, None, None, None
            """,
            f"""
            import torch
            from torch.autograd import Function


            class CARAFEFunction(Function):

                @staticmethod
                def forward(ctx, features, masks, kernel_size, group_size, scale_factor):
                    ctx.feature_size = features.size()
                    ctx.mask_size, ctx.output_dtype, features, masks = masks.size(), features.dtype, features.float().requires_grad_(features.requires_grad) if {_NEEDS_FP32} else features, masks.float().requires_grad_(masks.requires_grad) if {_NEEDS_FP32} else masks
                    output = features.new_zeros(features.size())
                    ext_module.carafe_forward(features, masks, output, kernel_size=kernel_size)
                    if features.requires_grad or masks.requires_grad:
                        ctx.save_for_backward(features, masks, output)
                    return output.to(ctx.output_dtype)

                @staticmethod
                def backward(ctx, grad_output):
                    features, masks, rfeatures, grad_output = *ctx.saved_tensors, grad_output.type_as(ctx.saved_tensors[0])
                    grad_input = torch.zeros_like(features, requires_grad=False)
                    ext_module.carafe_backward(grad_output.contiguous(), rfeatures, masks, grad_input)
                    return grad_input, None, None, None, None
            """,
            why="as released: forward and backward",
        ),
    ),
    untouched=(
        Untouched.of(
            """
            class CARAFENaiveFunction(Function):

                @staticmethod
                def forward(ctx, features, masks, kernel_size, group_size, scale_factor):
                    ctx.mask_size = masks.size()
                    return output

                @staticmethod
                def backward(ctx, grad_output):
                    features, masks, rfeatures = ctx.saved_tensors
            """,
            why="the same statements in the naive implementation beside it, which mmdet does not use",
        ),
    ),
    proofs=Proofs(
        # mmcv builds CARAFE for CUDA only: CUDA's rules, simulated
        steps=(
            Step(
                "carafe/faster-rcnn_r50_fpn-carafe_1x_coco.py",
                "mmcv/ops/carafe.py",
                size="128x128",
                after=("roi-align-fp32-kernel",),  # its RoI head's, which crashes next
                rules="cuda",
            ),
        ),
        upstream=("tests/test_ops/test_carafe.py",),
    ),
)
