"""deform-roi-pool-fp32-kernel: run deformable RoI pooling's CUDA kernel in fp32 for bf16 or mixed-dtype inputs.

mmcv's deformable RoI pooling has CUDA (and NPU, MLU) kernels only, built for float, double
and half, with the features, the RoIs and the offsets in one dtype. Under bf16 autocast on
a GPU, mmdet's ``DeformRoIPoolPack`` and ``ModulatedDeformRoIPoolPack`` (the ``dpool`` and
``mdpool`` configs) fail with ``NotImplementedError: "deform_roi_pool_forward_cuda_kernel"
not implemented for 'BFloat16'``; a call with fp16 features beside fp32 RoIs fails with
``RuntimeError: expected scalar type Half but found Float``.
``DeformRoIPoolFunction.forward`` now gives the kernel fp32 copies of the three in exactly
those cases and returns the output in the features' dtype; its ``backward``
takes the gradient to the saved features' dtype for the kernel, and autograd hands the
features and the offsets their gradients in their own dtypes. Every call that works today
(fp32, fp64, fp16 throughout) keeps its tensors and gets ``.to()`` and ``.type_as()`` its
own dtype, which are the tensors themselves: no copy, bit-identical.

Not run on a GPU here: the tests run a model's step under CUDA's rules, simulated
(``scripts/cuda_rules.py``: the kernel held to its CUDA launcher's dtypes, a PyTorch
reference in its place); ``verify --device cuda`` runs the case on a CUDA build.

Releases: the statements are the same in every mmcv release from 1.0.0 to 2.2.0 and in
every onedl-mmcv; none has a bf16 kernel. The module imports no ``torch``: the fix adds
``bfloat16`` to its import from torch, which reads ``from torch import nn`` up to 1.5.2 and
``from torch import Tensor, nn`` from 1.5.3 on.
"""

from mmcv_patcher.model import Affected, Case, Edit, Example, Patch, Proofs, Step, Tensor, Untouched, per_distribution

_FUNCTION = "DeformRoIPoolFunction"
_NEEDS_FP32 = "input.dtype == bfloat16 or rois.dtype != input.dtype or offset.dtype != input.dtype"

PATCH = Patch(
    id="deform-roi-pool-fp32-kernel",
    summary="deform_roi_pool (CUDA only): fp32 kernel for bf16 or mixed-dtype inputs; output in their dtype",
    affected=per_distribution(
        (Affected("1.0.0", "1.5.2", counts=(1, 1, 1, 1, 0)), Affected("1.5.3", "2.2.0", counts=(1, 1, 1, 0, 1))),
        (Affected("2.3.0", "2.3.6", counts=(1, 1, 1, 0, 1)),),
    ),
    file="ops/deform_roi_pool.py",
    function=f"{_FUNCTION}.forward",
    edits=(
        Edit(
            "ctx.gamma = float(gamma)",
            "ctx.gamma, ctx.output_dtype, input, rois, offset = float(gamma), input.dtype,"
            f" *((input.float(), rois.float(), offset.float()) if {_NEEDS_FP32} else (input, rois, offset))",
        ),
        Edit("return output", "return output.to(ctx.output_dtype)"),
        Edit(
            "input, rois, offset = ctx.saved_tensors",
            "input, rois, offset, grad_output = *ctx.saved_tensors, grad_output.type_as(ctx.saved_tensors[0])",
            function=f"{_FUNCTION}.backward",
        ),
        Edit("from torch import nn", "from torch import nn, bfloat16", binds="bfloat16"),
        Edit("from torch import Tensor, nn", "from torch import Tensor, nn, bfloat16", binds="bfloat16"),
    ),
    error=(
        "`NotImplementedError: \"deform_roi_pool_forward_cuda_kernel\" not implemented for 'BFloat16'` (mmdet's"
        " deformable RoI pooling under bf16 on a GPU); `RuntimeError: expected scalar type Half but found Float`"
        " (fp16 features, fp32 RoIs)"
    ),
    case=Case(
        op="DeformRoIPoolPack",
        init={"output_size": (7, 7), "output_channels": 16, "spatial_scale": 0.125, "sampling_ratio": 2},
        args=(Tensor("features", (2, 16, 64, 64), amp=True), Tensor("rois", 200, scale=400, images=2)),
        gave="DeformRoIPoolPack 7x7: {amp} features 2x16x64x64, 200 fp32 RoIs (a CUDA-only kernel)",
        compare="values",
        devices=("cuda",),
        backward=True,
    ),
    examples=(
        Example.of(
            """
            from torch import Tensor, nn
            from torch.autograd import Function


            class DeformRoIPoolFunction(Function):

                @staticmethod
                def forward(ctx, input, rois, offset, output_size, spatial_scale=1.0, sampling_ratio=0, gamma=0.1):
                    if offset is None:
                        offset = input.new_zeros(0)
                    ctx.gamma = float(gamma)
                    output = input.new_zeros((rois.size(0), input.size(1)) + ctx.output_size)
                    ext_module.deform_roi_pool_forward(input, rois, offset, output, gamma=ctx.gamma)
                    ctx.save_for_backward(input, rois, offset)
                    return output

                @staticmethod
                def backward(ctx, grad_output):
                    input, rois, offset = ctx.saved_tensors
                    grad_input = grad_output.new_zeros(input.shape)
                    grad_offset = grad_output.new_zeros(offset.shape)
                    ext_module.deform_roi_pool_backward(grad_output, input, rois, offset, grad_input, grad_offset)
                    return grad_input, None, grad_offset, None, None, None, None
            """,
            f"""
            from torch import Tensor, nn, bfloat16
            from torch.autograd import Function


            class DeformRoIPoolFunction(Function):

                @staticmethod
                def forward(ctx, input, rois, offset, output_size, spatial_scale=1.0, sampling_ratio=0, gamma=0.1):
                    if offset is None:
                        offset = input.new_zeros(0)
                    ctx.gamma, ctx.output_dtype, input, rois, offset = float(gamma), input.dtype, *((input.float(), rois.float(), offset.float()) if {_NEEDS_FP32} else (input, rois, offset))
                    output = input.new_zeros((rois.size(0), input.size(1)) + ctx.output_size)
                    ext_module.deform_roi_pool_forward(input, rois, offset, output, gamma=ctx.gamma)
                    ctx.save_for_backward(input, rois, offset)
                    return output.to(ctx.output_dtype)

                @staticmethod
                def backward(ctx, grad_output):
                    input, rois, offset, grad_output = *ctx.saved_tensors, grad_output.type_as(ctx.saved_tensors[0])
                    grad_input = grad_output.new_zeros(input.shape)
                    grad_offset = grad_output.new_zeros(offset.shape)
                    ext_module.deform_roi_pool_backward(grad_output, input, rois, offset, grad_input, grad_offset)
                    return grad_input, None, grad_offset, None, None, None, None
            """,
            why="as released from 1.5.3 on: forward, backward and the import from torch",
        ),
        Example.of(
            """
            from torch import nn
            from torch.autograd import Function


            class DeformRoIPoolFunction(Function):

                @staticmethod
                def forward(ctx, input, rois, offset, output_size, spatial_scale=1.0, sampling_ratio=0, gamma=0.1):
                    ctx.gamma = float(gamma)
                    return output

                @staticmethod
                def backward(ctx, grad_output):
                    input, rois, offset = ctx.saved_tensors
            """,
            f"""
            from torch import nn, bfloat16
            from torch.autograd import Function


            class DeformRoIPoolFunction(Function):

                @staticmethod
                def forward(ctx, input, rois, offset, output_size, spatial_scale=1.0, sampling_ratio=0, gamma=0.1):
                    ctx.gamma, ctx.output_dtype, input, rois, offset = float(gamma), input.dtype, *((input.float(), rois.float(), offset.float()) if {_NEEDS_FP32} else (input, rois, offset))
                    return output.to(ctx.output_dtype)

                @staticmethod
                def backward(ctx, grad_output):
                    input, rois, offset, grad_output = *ctx.saved_tensors, grad_output.type_as(ctx.saved_tensors[0])
            """,
            why="as released up to 1.5.2, whose import from torch names nn alone",
        ),
    ),
    untouched=(
        Untouched.of(
            """
            class DeformRoIPool(nn.Module):

                def forward(self, input, rois, offset=None):
                    return output
            """,
            why="a return of the same name in the module beside the function",
        ),
    ),
    proofs=Proofs(
        # mmcv builds deformable RoI pooling for CUDA only: CUDA's rules, simulated
        steps=(
            Step(
                "dcn/faster-rcnn_r50_fpn_dpool_1x_coco.py",
                "mmcv/ops/deform_roi_pool.py",
                size="128x128",
                rules="cuda",
            ),
        ),
        upstream=("tests/test_ops/test_deform_roi_pool.py",),
    ),
)
