"""rotated-feature-align-fp32-kernel: run ``rotated_feature_align``'s kernel on fp32 copies when it cannot take the inputs.

mmcv's rotated feature alignment kernels dispatch float, double and (CUDA only) half, and
need the features and the refined rotated boxes in one dtype. Under bf16 autocast R3Det's
and its variants' refinement stages fail with ``NotImplementedError:
"rotated_feature_align_forward_cpu_kernel" not implemented for 'BFloat16'`` (``'Half'`` on
the CPU); fp16 features beside fp32 boxes fail with "expected scalar type Half but found
Float". ``rotated_feature_align`` now gives the kernel fp32 copies of both in exactly those
cases, and returns the output in the features' dtype (gradients flow back in it). Every call
that works today (fp32, fp64, fp16 with fp16 boxes off the CPU) gets ``.to()`` its own
dtype, which is the tensor itself: no copy, bit-identical results.

Releases: the statement is the same in every mmcv release from 1.4.2 (when the op arrived)
to 2.2.0 and in every onedl-mmcv; none has a bf16 kernel.
"""

from mmcv_patcher.model import Affected, Case, Edit, Example, Patch, Proofs, Step, Tensor, Untouched, per_distribution

_NEEDS_FP32 = (
    "features.dtype == torch.bfloat16 or best_rbboxes.dtype != features.dtype"
    " or features.dtype == torch.float16 and features.device.type == 'cpu'"
)

_FIXED_CALL = (
    f"return RotatedFeatureAlignFunction.apply(features.to(torch.float32 if {_NEEDS_FP32} else features.dtype),"
    f" best_rbboxes.to(torch.float32 if {_NEEDS_FP32} else best_rbboxes.dtype),"
    " spatial_scale, points).to(features.dtype)"
)

PATCH = Patch(
    id="rotated-feature-align-fp32-kernel",
    summary="rotated_feature_align: fp32 copies for bf16, CPU fp16 or mixed dtypes; output in the features' dtype",
    affected=per_distribution((Affected("1.4.2", "2.2.0"),), (Affected("2.3.0", "2.3.6"),)),
    file="ops/rotated_feature_align.py",
    function="rotated_feature_align",
    edits=(
        Edit("return RotatedFeatureAlignFunction.apply(features, best_rbboxes, spatial_scale, points)", _FIXED_CALL),
    ),
    error=(
        "`NotImplementedError: \"rotated_feature_align_forward_cpu_kernel\" not implemented for 'BFloat16'` (R3Det's"
        " refinement under bf16; `'Half'` on the CPU); `RuntimeError: expected scalar type Half but found Float`"
        " (fp16 features, fp32 boxes)"
    ),
    case=Case(
        op="rotated_feature_align",
        args=(Tensor("features", (2, 16, 32, 32), amp=True), Tensor("rotated-boxes", (2, 32, 32), scale=256), 0.125, 5),
        gave="rotated_feature_align: {amp} features 2x16x32x32, fp32 rotated boxes 2x32x32, 5 points",
        compare="values",
        backward=True,
    ),
    examples=(
        Example.of(
            """
            import torch


            def rotated_feature_align(features: torch.Tensor,
                                      best_rbboxes: torch.Tensor,
                                      spatial_scale: float = 1 / 8,
                                      points: int = 1) -> torch.Tensor:
                return RotatedFeatureAlignFunction.apply(features, best_rbboxes,
                                                         spatial_scale, points)
            """,
            f"""
            import torch


            def rotated_feature_align(features: torch.Tensor,
                                      best_rbboxes: torch.Tensor,
                                      spatial_scale: float = 1 / 8,
                                      points: int = 1) -> torch.Tensor:
                return RotatedFeatureAlignFunction.apply(features.to(torch.float32 if {_NEEDS_FP32} else features.dtype), best_rbboxes.to(torch.float32 if {_NEEDS_FP32} else best_rbboxes.dtype),
                                                         spatial_scale, points).to(features.dtype)
            """,
            why="as released from 1.6.0 on",
        ),
    ),
    untouched=(
        Untouched.of(
            """
            class RotatedFeatureAlign(nn.Module):

                def forward(self, features, best_rbboxes, spatial_scale, points):
                    return RotatedFeatureAlignFunction.apply(features, best_rbboxes, spatial_scale, points)
            """,
            why="the same call in a method, not the module-level function",
        ),
    ),
    proofs=Proofs(
        steps=(Step("mmrotate::r3det/r3det-oc_r50_fpn_1x_dota.py", "mmcv/ops/rotated_feature_align.py"),),
        # its CPU case is marked as needing CUDA upstream: on a CPU build it proves nothing
        upstream=("tests/test_ops/test_rotated_feature_align.py",),
    ),
)
