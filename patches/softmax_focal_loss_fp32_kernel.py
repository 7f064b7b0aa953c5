"""softmax-focal-loss-fp32-kernel: run ``softmax_focal_loss``'s CUDA kernel in fp32 under bf16.

mmcv's softmax focal loss has CUDA (and NPU, MLU) kernels only, built for float, double and
half. Under bf16 autocast on a GPU it fails with ``NotImplementedError:
"softmax_focal_loss_forward_cuda_kernel" not implemented for 'BFloat16'`` (mmcv #3061). The
function now takes the softmax and runs the kernel in fp32 and returns the loss in bf16;
its gradient comes back in bf16. Every call that works today returns what it returned (the
loss is cast back only under bf16): no copy, bit-identical. See ``patches/_focal_loss.py``.

Not run on a GPU here: the tests run the op under CUDA's rules, simulated
(``scripts/cuda_rules.py``: the kernel held to its CUDA launcher's dtypes, a PyTorch
reference in its place, CUDA's autocast); ``verify --device cuda`` runs the case on a CUDA
build.

Releases: the statements are the same in every mmcv release from 1.0.0 to 2.2.0 and in
every onedl-mmcv; none has a bf16 kernel.
"""

from mmcv_patcher.model import Affected, Case, Example, Patch, Proofs, Tensor, Untouched, per_distribution

from ._focal_loss import FP32_KERNEL_EDITS
from ._grids import cuda_grid

PATCH = Patch(
    id="softmax-focal-loss-fp32-kernel",
    summary="softmax_focal_loss (CUDA only): fp32 kernel for bf16 logits; the loss in bf16",
    affected=per_distribution((Affected("1.0.0", "2.2.0"),), (Affected("2.3.0", "2.3.6"),)),
    file="ops/focal_loss.py",
    function="SoftmaxFocalLossFunction.forward",
    edits=FP32_KERNEL_EDITS,
    error="`NotImplementedError: \"softmax_focal_loss_forward_cuda_kernel\" not implemented for 'BFloat16'` (bf16 on a GPU)",
    case=Case(
        op="softmax_focal_loss",
        args=(Tensor("features", (500, 80), amp=True), Tensor("labels", 500, scale=80), 2.0, 0.25, None, "mean"),
        gave="softmax_focal_loss: {amp} logits 500x80 (a CUDA-only kernel)",
        compare="values",
        devices=("cuda",),
        backward=True,
    ),
    examples=(
        Example.of(
            """
            import torch


            class SoftmaxFocalLossFunction(Function):

                @staticmethod
                def forward(ctx, input, target, gamma=2.0, alpha=0.25, weight=None, reduction='mean'):
                    ctx.gamma = float(gamma)
                    ctx.alpha = float(alpha)
                    channel_stats, _ = torch.max(input, dim=1)
                    input_softmax = input - channel_stats.unsqueeze(1).expand_as(input)
                    output = input.new_zeros(input.size(0))
                    ext_module.softmax_focal_loss_forward(input_softmax, target, weight, output, gamma=ctx.gamma, alpha=ctx.alpha)
                    return output
            """,
            """
            import torch


            class SoftmaxFocalLossFunction(Function):

                @staticmethod
                def forward(ctx, input, target, gamma=2.0, alpha=0.25, weight=None, reduction='mean'):
                    ctx.gamma = float(gamma)
                    ctx.alpha, ctx.output_dtype, input, weight = float(alpha), input.dtype if input.dtype == torch.bfloat16 else None, input.float() if input.dtype == torch.bfloat16 else input, weight.float() if input.dtype == torch.bfloat16 else weight.type_as(input)
                    channel_stats, _ = torch.max(input, dim=1)
                    input_softmax = input - channel_stats.unsqueeze(1).expand_as(input)
                    output = input.new_zeros(input.size(0))
                    ext_module.softmax_focal_loss_forward(input_softmax, target, weight, output, gamma=ctx.gamma, alpha=ctx.alpha)
                    return output if ctx.output_dtype is None else output.to(ctx.output_dtype)
            """,
            why="as released: forward",
        ),
    ),
    untouched=(
        Untouched.of(
            """
            class SigmoidFocalLossFunction(Function):

                @staticmethod
                def forward(ctx, input, target, gamma=2.0, alpha=0.25, weight=None, reduction='mean'):
                    ctx.alpha = float(alpha)
                    return output
            """,
            why="the same statements in the sigmoid loss beside it",
        ),
    ),
    proofs=Proofs(
        grids=(cuda_grid("softmax_focal_loss", "softmax_focal_loss_forward_cuda_kernel", reductions=("mean", "sum")),),
        upstream=("tests/test_ops/test_focal_loss.py",),
    ),
)
