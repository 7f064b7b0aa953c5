"""modulated-deform-conv-fp32-kernel: run ``ModulatedDeformConv2d``'s kernel in fp32 under bf16.

The modulated (DCNv2) kernels are built for float, double and half only, like those of
:mod:`deform_conv_fp32_kernel`. Under bf16 autocast ``ModulatedDeformConv2dFunction.forward``
casts the features, weight, bias and mask to the bf16 offsets, and CenterNet, DyHead,
NAS-FCOS and the DCNv2 backbones fail with ``NotImplementedError:
"modulated_deformable_im2col_cpu" not implemented for 'BFloat16'``. The function now gives
the kernel fp32 tensors when the offsets are bf16 (the mask and bias follow the features, as
released), returns the output in bf16, and its ``backward`` takes the bf16 gradient back to
fp32; autograd hands each input its gradient in its own dtype. Every call that works today
gets ``.to()`` and ``.type_as()`` its own dtype: no copy, bit-identical.

Releases: ``forward`` casts with these statements in every mmcv release from 1.3.5 on
(``return output`` twice from 1.7.1 on, where an NPU branch returns early) and in every
onedl-mmcv; none has a bf16 kernel. Releases before 1.3.5 cast nothing (the weight stays fp32
whatever the features are), a different failure this fix does not take on: they are not
affected by it.
"""

from mmcv_patcher.model import Affected, Case, Example, Patch, Proofs, Step, Tensor, Untouched, per_distribution

from ._bf16_offsets import fp32_kernel_edits
from ._grids import deform_grids

_FUNCTION = "ModulatedDeformConv2dFunction"

PATCH = Patch(
    id="modulated-deform-conv-fp32-kernel",
    summary="ModulatedDeformConv2d: fp32 kernel when the offsets are bf16; output and gradients in bf16",
    affected=per_distribution(
        (Affected("1.3.5", "1.7.0", counts=(1, 1, 1, 1)), Affected("1.7.1", "2.2.0", counts=(1, 1, 2, 1))),
        (Affected("2.3.0", "2.3.6", counts=(1, 1, 2, 1)),),
    ),
    file="ops/modulated_deform_conv.py",
    function=f"{_FUNCTION}.forward",
    edits=fp32_kernel_edits(_FUNCTION),
    error=(
        "`NotImplementedError: \"modulated_deformable_im2col_cpu\" not implemented for 'BFloat16'`"
        " (DCNv2 heads and backbones under bf16)"
    ),
    case=Case(
        op="ModulatedDeformConv2d",
        init=(16, 16, 3, 1, 1),
        args=(
            Tensor("features", (2, 16, 32, 32), amp=True),
            Tensor("features", (2, 18, 32, 32), amp=True),
            Tensor("features", (2, 9, 32, 32), amp=True),
        ),
        gave="ModulatedDeformConv2d 3x3: {amp} features 2x16x32x32, offsets and mask",
        compare="values",
        cpu_kernel_takes=("float16",),
        backward=True,
    ),
    examples=(
        Example.of(
            """
            import torch
            from torch.autograd import Function


            class ModulatedDeformConv2dFunction(Function):

                @staticmethod
                def forward(ctx, input, offset, mask, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, deform_groups=1):
                    ctx.device = input.device.type
                    if not ctx.with_bias:
                        bias = input.new_empty(0)
                    input = input.type_as(offset)
                    weight = weight.type_as(input)
                    bias = bias.type_as(input)
                    mask = mask.type_as(input)
                    if ctx.device == 'npu':
                        output = ModulatedDeformConv2dFunction._npu_forward(ctx, input, offset, mask, weight, bias)
                        return output
                    ctx.save_for_backward(input, offset, mask, weight, bias)
                    output = input.new_empty(_output_size(ctx, input, weight))
                    ext_module.modulated_deform_conv_forward(input, weight, bias, offset, mask, output)
                    return output

                @staticmethod
                def backward(ctx, grad_output):
                    input, offset, mask, weight, bias = ctx.saved_tensors
                    grad_output = grad_output.contiguous()
                    return _backward(input, offset, mask, weight, bias, grad_output)
            """,
            """
            import torch
            from torch.autograd import Function


            class ModulatedDeformConv2dFunction(Function):

                @staticmethod
                def forward(ctx, input, offset, mask, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, deform_groups=1):
                    ctx.device = input.device.type
                    if not ctx.with_bias:
                        bias = input.new_empty(0)
                    input = input.type_as(offset) if offset.dtype != torch.bfloat16 else input.float()
                    weight, offset, ctx.output_dtype = weight.type_as(input), offset.type_as(input), offset.dtype
                    bias = bias.type_as(input)
                    mask = mask.type_as(input)
                    if ctx.device == 'npu':
                        output = ModulatedDeformConv2dFunction._npu_forward(ctx, input, offset, mask, weight, bias)
                        return output.to(ctx.output_dtype)
                    ctx.save_for_backward(input, offset, mask, weight, bias)
                    output = input.new_empty(_output_size(ctx, input, weight))
                    ext_module.modulated_deform_conv_forward(input, weight, bias, offset, mask, output)
                    return output.to(ctx.output_dtype)

                @staticmethod
                def backward(ctx, grad_output):
                    input, offset, mask, weight, bias = ctx.saved_tensors
                    grad_output = grad_output.contiguous().type_as(input)
                    return _backward(input, offset, mask, weight, bias, grad_output)
            """,
            why="as released from 1.7.1 on: forward with its NPU branch, and backward",
        ),
    ),
    untouched=(
        Untouched.of(
            """
            class ModulatedDeformConv2dFunction(Function):

                @staticmethod
                def _npu_forward(ctx, input, offset, mask, weight, bias):
                    output = npu_deformable_conv2d(input, weight, offset, bias)
                    return output
            """,
            why="the NPU helper's own return, which forward's NPU branch returns through",
        ),
    ),
    proofs=Proofs(
        grids=deform_grids("ModulatedDeformConv2dPack", "modulated_deform_conv2d", "modulated_deformable_im2col_cpu"),
        steps=(Step("centernet/centernet_r18-dcnv2_8xb16-crop512-140e_coco.py", "mmcv/ops/modulated_deform_conv.py"),),
        upstream=("tests/test_ops/test_modulated_deform_conv.py",),
    ),
)
