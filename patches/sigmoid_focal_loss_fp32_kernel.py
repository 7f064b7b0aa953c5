"""sigmoid-focal-loss-fp32-kernel: run ``sigmoid_focal_loss``'s CUDA kernel in fp32 under bf16.

mmcv's sigmoid focal loss has CUDA (and NPU, MLU) kernels only, built for float, double and
half. Under bf16 autocast on a GPU, mmdet's ``FocalLoss`` (RetinaNet, FCOS, ATSS, GFL...)
calls it with bf16 logits and fails with ``NotImplementedError:
"sigmoid_focal_loss_forward_cuda_kernel" not implemented for 'BFloat16'`` (mmcv #3061). The
function now gives the kernel fp32 logits and class weights and returns the loss in bf16;
its gradient comes back in bf16. Every call that works today returns what it returned (the
loss is cast back only under bf16): no copy, bit-identical. See ``patches/_focal_loss.py``.

Not run on a GPU here: the tests run the op and a model's step under CUDA's rules, simulated
(``scripts/cuda_rules.py``: the kernel held to its CUDA launcher's dtypes, a PyTorch
reference in its place, CUDA's autocast); ``verify --device cuda`` runs the case on a CUDA
build.

Releases: the statements are the same in every mmcv release from 1.0.0 to 2.2.0 and in
every onedl-mmcv; none has a bf16 kernel.
"""

from mmcv_patcher.model import Affected, Case, Example, Patch, Proofs, Step, Tensor, Untouched, per_distribution

from ._focal_loss import FP32_KERNEL_EDITS
from ._grids import cuda_grid

PATCH = Patch(
    id="sigmoid-focal-loss-fp32-kernel",
    summary="sigmoid_focal_loss (CUDA only): fp32 kernel for bf16 logits; the loss in bf16",
    affected=per_distribution((Affected("1.0.0", "2.2.0"),), (Affected("2.3.0", "2.3.6"),)),
    file="ops/focal_loss.py",
    function="SigmoidFocalLossFunction.forward",
    edits=FP32_KERNEL_EDITS,
    error="`NotImplementedError: \"sigmoid_focal_loss_forward_cuda_kernel\" not implemented for 'BFloat16'` (mmdet's FocalLoss under bf16 on a GPU)",
    case=Case(
        op="sigmoid_focal_loss",
        args=(Tensor("features", (500, 80), amp=True), Tensor("labels", 500, scale=81), 2.0, 0.25, None, "mean"),
        gave="sigmoid_focal_loss: {amp} logits 500x80 (a CUDA-only kernel)",
        compare="values",
        devices=("cuda",),
        backward=True,
    ),
    examples=(
        Example.of(
            """
            import torch


            class SigmoidFocalLossFunction(Function):

                @staticmethod
                def forward(ctx, input, target, gamma=2.0, alpha=0.25, weight=None, reduction='mean'):
                    if weight is None:
                        weight = input.new_empty(0)
                    ctx.gamma = float(gamma)
                    ctx.alpha = float(alpha)
                    ctx.reduction = ctx.reduction_dict[reduction]
                    output = input.new_zeros(input.size())
                    ext_module.sigmoid_focal_loss_forward(input, target, weight, output, gamma=ctx.gamma, alpha=ctx.alpha)
                    ctx.save_for_backward(input, target, weight)
                    return output
            """,
            """
            import torch


            class SigmoidFocalLossFunction(Function):

                @staticmethod
                def forward(ctx, input, target, gamma=2.0, alpha=0.25, weight=None, reduction='mean'):
                    if weight is None:
                        weight = input.new_empty(0)
                    ctx.gamma = float(gamma)
                    ctx.alpha, ctx.output_dtype, input, weight = float(alpha), input.dtype if input.dtype == torch.bfloat16 else None, input.float() if input.dtype == torch.bfloat16 else input, weight.float() if input.dtype == torch.bfloat16 else weight.type_as(input)
                    ctx.reduction = ctx.reduction_dict[reduction]
                    output = input.new_zeros(input.size())
                    ext_module.sigmoid_focal_loss_forward(input, target, weight, output, gamma=ctx.gamma, alpha=ctx.alpha)
                    ctx.save_for_backward(input, target, weight)
                    return output if ctx.output_dtype is None else output.to(ctx.output_dtype)
            """,
            why="as released: forward",
        ),
    ),
    untouched=(
        Untouched.of(
            """
            class SoftmaxFocalLossFunction(Function):

                @staticmethod
                def forward(ctx, input, target, gamma=2.0, alpha=0.25, weight=None, reduction='mean'):
                    ctx.alpha = float(alpha)
                    return output
            """,
            why="the same statements in the softmax loss beside it",
        ),
    ),
    proofs=Proofs(
        grids=(
            cuda_grid(
                "sigmoid_focal_loss", "sigmoid_focal_loss_forward_cuda_kernel", reductions=("none", "mean", "sum")
            ),
        ),
        # mmdet's FocalLoss takes mmcv's kernel on CUDA only: CUDA's rules, simulated
        steps=(Step("retinanet/retinanet_r50_fpn_1x_coco.py", "mmcv/ops/focal_loss.py", size="128x128", rules="cuda"),),
        upstream=("tests/test_ops/test_focal_loss.py",),
    ),
)
