"""ms-deform-attn-fp32-kernel: run ``MultiScaleDeformableAttention``'s CUDA kernel in fp32 under bf16.

mmcv's multi-scale deformable attention has CUDA (and MLU) kernels only, built for float,
double and half; on the CPU the module takes its PyTorch fallback. Under bf16 autocast on a
GPU the value projection comes in bf16 and Deformable DETR, DINO and Mask2Former fail in
``MultiScaleDeformableAttnFunction`` with ``NotImplementedError:
"ms_deform_attn_forward_cuda" not implemented for 'BFloat16'`` (mmcv #2878). The function
now gives the fast kernel fp32 values (the sampling locations and attention weights follow
them, as the release casts them) rather than taking the slow PyTorch fallback (what
onedl-mmcv 2.3.5 chose in the module), returns the output in bf16, and its ``backward``
takes the bf16 gradient back to fp32 for the kernel; autograd hands each input its gradient
in its own dtype. Every call that works today gets ``.to()`` and ``.type_as()`` its own
dtype, which are the tensors themselves: no copy, bit-identical.

Not run on a GPU here: the tests run the op and a model's step under CUDA's rules, simulated
(``scripts/cuda_rules.py``: the kernel held to its CUDA launcher's dtypes, a PyTorch
reference in its place, CUDA's autocast); ``verify --device cuda`` runs the case on a CUDA
build.

Releases: the fix covers mmcv 1.7.2 to 2.2.0 and every onedl-mmcv (from 2.3.5 its module
sends bf16 to the fallback instead, so there the fix serves direct calls of the function).
The function has these statements from 1.3.5 on, but until 1.7.1 it does not cast the
sampling locations and attention weights to the values' dtype, so bf16 locations beside the
fp32 values the fix gives the kernel would still fail there ("expected scalar type Float but
found BFloat16"): those releases are older than the first this fix covers. 1.3.3 and 1.3.4
had another ``backward``.
"""

from mmcv_patcher.model import Affected, Case, Edit, Example, Patch, Proofs, Step, Tensor, Untouched, per_distribution

from ._grids import cuda_grid

_FUNCTION = "MultiScaleDeformableAttnFunction"
_LEVELS = ((16, 16), (8, 8))

PATCH = Patch(
    id="ms-deform-attn-fp32-kernel",
    summary="MultiScaleDeformableAttention (CUDA only): fp32 kernel for bf16 values; output and gradients in bf16",
    affected=per_distribution((Affected("1.7.2", "2.2.0"),), (Affected("2.3.0", "2.3.6"),)),
    file="ops/multi_scale_deform_attn.py",
    function=f"{_FUNCTION}.forward",
    edits=(
        Edit(
            "ctx.im2col_step = im2col_step",
            "ctx.im2col_step, ctx.output_dtype, value = im2col_step, value.dtype,"
            " value.float() if value.dtype == torch.bfloat16 else value",
        ),
        Edit("return output", "return output.to(ctx.output_dtype)"),
        Edit(
            "grad_value = torch.zeros_like(value)",
            "grad_value, grad_output = torch.zeros_like(value), grad_output.type_as(value)",
            function=f"{_FUNCTION}.backward",
        ),
    ),
    error=(
        "`NotImplementedError: \"ms_deform_attn_forward_cuda\" not implemented for 'BFloat16'` (Deformable DETR, DINO,"
        " Mask2Former under bf16 on a GPU)"
    ),
    case=Case(
        op="MultiScaleDeformableAttention",
        call=f"multi_scale_deform_attn.{_FUNCTION}.apply",
        args=(
            Tensor("features", (2, sum(h * w for h, w in _LEVELS), 8, 32), amp=True),
            Tensor("shapes", _LEVELS),
            Tensor("starts", _LEVELS),
            Tensor("features", (2, 100, 8, len(_LEVELS), 4, 2)),
            Tensor("features", (2, 100, 8, len(_LEVELS), 4)),
            64,
        ),
        gave="MultiScaleDeformableAttnFunction: {amp} values, fp32 sampling locations and weights (a CUDA-only kernel)",
        compare="values",
        devices=("cuda",),
        backward=True,
    ),
    examples=(
        Example.of(
            """
            import torch
            from torch.autograd import Function


            class MultiScaleDeformableAttnFunction(Function):

                @staticmethod
                def forward(ctx, value, value_spatial_shapes, value_level_start_index, sampling_locations, attention_weights, im2col_step):
                    ctx.im2col_step = im2col_step
                    sampling_locations = sampling_locations.type_as(value)
                    attention_weights = attention_weights.type_as(value)
                    output = ext_module.ms_deform_attn_forward(value, value_spatial_shapes, value_level_start_index, sampling_locations, attention_weights, im2col_step=ctx.im2col_step)
                    ctx.save_for_backward(value, value_spatial_shapes, value_level_start_index, sampling_locations, attention_weights)
                    return output

                @staticmethod
                @once_differentiable
                def backward(ctx, grad_output):
                    value, value_spatial_shapes, value_level_start_index, sampling_locations, attention_weights = ctx.saved_tensors
                    grad_value = torch.zeros_like(value)
                    grad_sampling_loc = torch.zeros_like(sampling_locations)
                    ext_module.ms_deform_attn_backward(value, value_spatial_shapes, value_level_start_index, sampling_locations, attention_weights, grad_output.contiguous(), grad_value, grad_sampling_loc, grad_attn_weight, im2col_step=ctx.im2col_step)
                    return grad_value, None, None, grad_sampling_loc, grad_attn_weight, None
            """,
            """
            import torch
            from torch.autograd import Function


            class MultiScaleDeformableAttnFunction(Function):

                @staticmethod
                def forward(ctx, value, value_spatial_shapes, value_level_start_index, sampling_locations, attention_weights, im2col_step):
                    ctx.im2col_step, ctx.output_dtype, value = im2col_step, value.dtype, value.float() if value.dtype == torch.bfloat16 else value
                    sampling_locations = sampling_locations.type_as(value)
                    attention_weights = attention_weights.type_as(value)
                    output = ext_module.ms_deform_attn_forward(value, value_spatial_shapes, value_level_start_index, sampling_locations, attention_weights, im2col_step=ctx.im2col_step)
                    ctx.save_for_backward(value, value_spatial_shapes, value_level_start_index, sampling_locations, attention_weights)
                    return output.to(ctx.output_dtype)

                @staticmethod
                @once_differentiable
                def backward(ctx, grad_output):
                    value, value_spatial_shapes, value_level_start_index, sampling_locations, attention_weights = ctx.saved_tensors
                    grad_value, grad_output = torch.zeros_like(value), grad_output.type_as(value)
                    grad_sampling_loc = torch.zeros_like(sampling_locations)
                    ext_module.ms_deform_attn_backward(value, value_spatial_shapes, value_level_start_index, sampling_locations, attention_weights, grad_output.contiguous(), grad_value, grad_sampling_loc, grad_attn_weight, im2col_step=ctx.im2col_step)
                    return grad_value, None, None, grad_sampling_loc, grad_attn_weight, None
            """,
            why="as released from 2.0.0 on: forward and backward",
        ),
    ),
    untouched=(
        Untouched.of(
            """
            def multi_scale_deformable_attn_pytorch(value, value_spatial_shapes, sampling_locations, attention_weights):
                ctx.im2col_step = im2col_step
                return output
            """,
            why="the PyTorch fallback beside it",
        ),
    ),
    proofs=Proofs(
        grids=(cuda_grid("ms_deform_attn", "ms_deform_attn_forward_cuda", weighted=False),),
        # its module takes the kernel on CUDA only: CUDA's rules, simulated
        steps=(
            Step(
                "deformable_detr/deformable-detr_r50_16xb2-50e_coco.py",
                "mmcv/ops/multi_scale_deform_attn.py",
                size="128x128",
                after=("sigmoid-focal-loss-fp32-kernel",),  # its classification loss, which crashes next
                rules="cuda",
            ),
        ),
        upstream=("tests/test_ops/test_ms_deformable_attn.py",),
    ),
)
