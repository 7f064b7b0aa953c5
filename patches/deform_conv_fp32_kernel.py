"""deform-conv-fp32-kernel: run ``DeformConv2d``'s kernel in fp32 under bf16.

mmcv's deformable convolution kernels (CPU and CUDA) are built for float, double and half
only. Under bf16 autocast (mmengine's ``AmpOptimWrapper(dtype='bfloat16')``) the offsets a
``conv_offset`` layer computes come in bf16, ``DeformConv2dFunction.forward`` casts the
features and the weight to them, and every DCN head and backbone fails with
``NotImplementedError: "deformable_im2col_cpu" not implemented for 'BFloat16'`` (VFNet, TOOD,
DDOD, RepPoints, FoveaBox, Guided Anchoring, CentripetalNet; DCN, DetectoRS and Empirical
Attention backbones). The function now gives the kernel fp32 features, offsets and weight
when the offsets are bf16, returns the output in bf16, and its ``backward`` takes the bf16
gradient back to fp32 for the kernel; autograd hands each input its gradient in its own
dtype. Every call that works today (fp32, fp64, fp16, mixed) gets ``.to()`` and
``.type_as()`` its own dtype, which are the tensors themselves: no copy, bit-identical.

Releases: ``forward`` casts with these statements in every mmcv release from 1.3.5 on
(``return output`` twice from 1.7.2 on, where an NPU branch returns early) and in every
onedl-mmcv; none has a bf16 kernel. Releases before 1.3.5 cast nothing (the weight stays fp32
whatever the features are), a different failure this fix does not take on: they are not
affected by it.
"""

from mmcv_patcher.model import Affected, Case, Example, Patch, Proofs, Step, Tensor, Untouched, per_distribution

from ._bf16_offsets import fp32_kernel_edits
from ._grids import deform_grids

_FUNCTION = "DeformConv2dFunction"

PATCH = Patch(
    id="deform-conv-fp32-kernel",
    summary="DeformConv2d: fp32 kernel when the offsets are bf16; output and gradients in bf16",
    affected=per_distribution(
        (Affected("1.3.5", "1.7.1", counts=(1, 1, 1, 1)), Affected("1.7.2", "2.2.0", counts=(1, 1, 2, 1))),
        (Affected("2.3.0", "2.3.6", counts=(1, 1, 2, 1)),),
    ),
    file="ops/deform_conv.py",
    function=f"{_FUNCTION}.forward",
    edits=fp32_kernel_edits(_FUNCTION),
    error="`NotImplementedError: \"deformable_im2col_cpu\" not implemented for 'BFloat16'` (DCN heads and backbones under bf16)",
    case=Case(
        op="DeformConv2d",
        init=(16, 16, 3, 1, 1),
        args=(Tensor("features", (2, 16, 32, 32), amp=True), Tensor("features", (2, 18, 32, 32), amp=True)),
        gave="DeformConv2d 3x3: {amp} features 2x16x32x32 and offsets",
        compare="values",
        cpu_kernel_takes=("float16",),
        backward=True,
    ),
    examples=(
        Example.of(
            """
            import torch
            from torch.autograd import Function


            class DeformConv2dFunction(Function):

                @staticmethod
                def forward(ctx, input, offset, weight, stride=1, padding=0, dilation=1, groups=1, deform_groups=1, bias=False, im2col_step=32):
                    ctx.device = input.device.type
                    input = input.type_as(offset)
                    weight = weight.type_as(input)
                    if ctx.device == 'npu':
                        output = _npu_forward(ctx, input, offset, weight)
                        return output
                    ctx.save_for_backward(input, offset, weight)
                    output = input.new_empty(_output_size(ctx, input, weight))
                    ext_module.deform_conv_forward(input, weight, offset, output)
                    return output

                @staticmethod
                def backward(ctx, grad_output):
                    input, offset, weight = ctx.saved_tensors
                    grad_output = grad_output.contiguous()
                    return _backward(input, offset, weight, grad_output)
            """,
            """
            import torch
            from torch.autograd import Function


            class DeformConv2dFunction(Function):

                @staticmethod
                def forward(ctx, input, offset, weight, stride=1, padding=0, dilation=1, groups=1, deform_groups=1, bias=False, im2col_step=32):
                    ctx.device = input.device.type
                    input = input.type_as(offset) if offset.dtype != torch.bfloat16 else input.float()
                    weight, offset, ctx.output_dtype = weight.type_as(input), offset.type_as(input), offset.dtype
                    if ctx.device == 'npu':
                        output = _npu_forward(ctx, input, offset, weight)
                        return output.to(ctx.output_dtype)
                    ctx.save_for_backward(input, offset, weight)
                    output = input.new_empty(_output_size(ctx, input, weight))
                    ext_module.deform_conv_forward(input, weight, offset, output)
                    return output.to(ctx.output_dtype)

                @staticmethod
                def backward(ctx, grad_output):
                    input, offset, weight = ctx.saved_tensors
                    grad_output = grad_output.contiguous().type_as(input)
                    return _backward(input, offset, weight, grad_output)
            """,
            why="as released from 1.7.2 on: forward with its NPU branch, and backward",
        ),
    ),
    untouched=(
        Untouched.of(
            """
            class ModulatedDeformConv2dFunction(Function):

                @staticmethod
                def forward(ctx, input, offset, mask, weight):
                    input = input.type_as(offset)
                    weight = weight.type_as(input)
                    return output

                @staticmethod
                def backward(ctx, grad_output):
                    grad_output = grad_output.contiguous()
                    return grad_output
            """,
            why="the same statements in another autograd function",
        ),
    ),
    proofs=Proofs(
        grids=deform_grids("DeformConv2dPack", "deform_conv2d", "deformable_im2col_cpu"),
        steps=(Step("tood/tood_r50_fpn_1x_coco.py", "mmcv/ops/deform_conv.py"),),
        upstream=("tests/test_ops/test_deform_conv.py",),
    ),
)
