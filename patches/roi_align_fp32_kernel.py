"""roi-align-fp32-kernel: run ``RoIAlign``'s kernel on fp32 copies when it cannot take the inputs.

mmcv's RoIAlign kernels (CPU and CUDA) dispatch float, double and half only, and need the
features and the RoIs in one dtype. Under bf16 autocast (mmengine's
``AmpOptimWrapper(dtype='bfloat16')``, the only dtype mmengine's CPU autocast takes) mmdet's RoI
extractors fail with ``RuntimeError: "ROIAlign_forward" not implemented for 'BFloat16'``;
fp16 features with the fp32 RoIs of an fp32 box head fail with "expected scalar type Half
but found Float". ``RoIAlign.forward`` now gives the kernel fp32 copies of both in exactly
those cases, and returns the output in the features' dtype (gradients flow back in it, as
with torchvision's autocast kernels). Every call that works today (fp32, fp64, fp16 with fp16
RoIs) gets ``.to()`` its own dtype, which is the tensor itself: no copy, bit-identical results.

Releases: the statement is byte for byte the same in every mmcv release from 1.0.0 to 2.2.0
and in every onedl-mmcv; none has a bf16 kernel.
"""

from mmcv_patcher.model import Affected, Case, Edit, Example, Patch, Proofs, Tensor, Untouched, per_distribution

from ._grids import roi_align_grid

_NEEDS_FP32 = "input.dtype == torch.bfloat16 or rois.dtype != input.dtype"

_FIXED_CALL = (
    f"return roi_align(input.to(torch.float32 if {_NEEDS_FP32} else input.dtype), rois.to(torch.float32 if {_NEEDS_FP32} else rois.dtype),"
    " self.output_size, self.spatial_scale, self.sampling_ratio, self.pool_mode, self.aligned).to(input.dtype)"
)

PATCH = Patch(
    id="roi-align-fp32-kernel",
    summary="RoIAlign: fp32 kernel copies for bf16 or mixed-dtype inputs; output in the features' dtype",
    affected=per_distribution((Affected("1.0.0", "2.2.0"),), (Affected("2.3.0", "2.3.6"),)),
    file="ops/roi_align.py",
    function="RoIAlign.forward",
    edits=(
        Edit(
            "return roi_align(input, rois, self.output_size, self.spatial_scale, self.sampling_ratio, self.pool_mode, self.aligned)",
            _FIXED_CALL,
        ),
    ),
    error=(
        "`NotImplementedError: \"ROIAlign_forward\" not implemented for 'BFloat16'` (mmdet's RoI extractors under bf16);"
        " `RuntimeError: expected scalar type Half but found Float` (fp16 features, fp32 RoIs)"
    ),
    case=Case(
        op="RoIAlign",
        init=((7, 7), 0.125, 2),
        args=(Tensor("features", (2, 16, 64, 64), amp=True), Tensor("rois", 200, scale=400, images=2)),
        gave="RoIAlign 7x7: {amp} features 2x16x64x64, 200 fp32 RoIs",
        compare="values",
        backward=True,
    ),
    examples=(
        Example.of(
            """
            import torch


            class RoIAlign(nn.Module):

                def forward(self, input, rois):
                    if self.use_torchvision:
                        from torchvision.ops import roi_align as tv_roi_align
                        return tv_roi_align(input, rois, self.output_size,
                                            self.spatial_scale, self.sampling_ratio)
                    else:
                        return roi_align(input, rois, self.output_size, self.spatial_scale,
                                         self.sampling_ratio, self.pool_mode, self.aligned)
            """,
            f"""
            import torch


            class RoIAlign(nn.Module):

                def forward(self, input, rois):
                    if self.use_torchvision:
                        from torchvision.ops import roi_align as tv_roi_align
                        return tv_roi_align(input, rois, self.output_size,
                                            self.spatial_scale, self.sampling_ratio)
                    else:
                        return roi_align(input.to(torch.float32 if {_NEEDS_FP32} else input.dtype), rois.to(torch.float32 if {_NEEDS_FP32} else rois.dtype), self.output_size, self.spatial_scale,
                                         self.sampling_ratio, self.pool_mode, self.aligned).to(input.dtype)
            """,
            why="as released: the mmcv branch of the module's forward",
        ),
    ),
    untouched=(
        Untouched.of(
            """
            class RoIAlignFunction(Function):

                def forward(ctx, input, rois):
                    return roi_align(input, rois, self.output_size, self.spatial_scale, self.sampling_ratio, self.pool_mode, self.aligned)
            """,
            why="the same call in the autograd Function's own forward, not the module's",
        ),
        Untouched.of(
            """
            def forward(self, input, rois):
                return roi_align(input, rois, self.output_size, self.spatial_scale, self.sampling_ratio, self.pool_mode, self.aligned)
            """,
            why="a module-level function of the method's name",
        ),
    ),
    proofs=Proofs(
        grids=(roi_align_grid("RoIAlign", "ROIAlign_forward"),),
        upstream=("tests/test_ops/test_roi_align.py",),
    ),
)
