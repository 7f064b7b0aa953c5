"""roi-align-rotated-fp32-kernel: run ``RoIAlignRotated``'s kernel on fp32 copies when it cannot take the inputs.

mmcv's rotated RoIAlign kernels (CPU and CUDA) dispatch float, double and half only, and
need the features and the RoIs in one dtype. Under bf16 autocast mmrotate's rotated RoI
extractors fail with ``NotImplementedError: "ROIAlignRotated_forward" not implemented for
'BFloat16'``; fp16 features with the fp32 RoIs of an fp32 box head fail with "expected
scalar type Half but found Float". ``RoIAlignRotated.forward`` now gives the kernel fp32
copies of both in exactly those cases, and returns the output in the features' dtype
(gradients flow back in it). Every call that works today (fp32, fp64, fp16 with fp16 RoIs)
gets ``.to()`` its own dtype, which is the tensor itself: no copy, bit-identical results.

Releases: the statement is the same from mmcv 1.4.6 to 2.2.0 and in every onedl-mmcv, but
the file imports torch, which the fix names, only from 1.6.0 on: 1.3.3 to 1.5.3 have the
same kernels and are left as they are (``status`` says they are older than 1.6.0, the first
release the patch covers, and calls them not affected).
"""

from mmcv_patcher.model import Affected, Case, Edit, Example, Patch, Tensor, Untouched, per_distribution

_NEEDS_FP32 = "input.dtype == torch.bfloat16 or rois.dtype != input.dtype"

_FIXED_CALL = (
    f"return RoIAlignRotatedFunction.apply(input.to(torch.float32 if {_NEEDS_FP32} else input.dtype),"
    f" rois.to(torch.float32 if {_NEEDS_FP32} else rois.dtype),"
    " self.output_size, self.spatial_scale, self.sampling_ratio, self.aligned, self.clockwise).to(input.dtype)"
)

PATCH = Patch(
    id="roi-align-rotated-fp32-kernel",
    summary="RoIAlignRotated: fp32 kernel copies for bf16 or mixed-dtype inputs; output in the features' dtype",
    affected=per_distribution((Affected("1.6.0", "2.2.0"),), (Affected("2.3.0", "2.3.6"),)),
    file="ops/roi_align_rotated.py",
    function="RoIAlignRotated.forward",
    edits=(
        Edit(
            "return RoIAlignRotatedFunction.apply(input, rois, self.output_size, self.spatial_scale,"
            " self.sampling_ratio, self.aligned, self.clockwise)",
            _FIXED_CALL,
        ),
    ),
    error=(
        "`NotImplementedError: \"ROIAlignRotated_forward\" not implemented for 'BFloat16'` (mmrotate's RoI extractors"
        " under bf16); `RuntimeError: expected scalar type Half but found Float` (fp16 features, fp32 RoIs)"
    ),
    case=Case(
        op="RoIAlignRotated",
        init=((7, 7), 0.125, 2),
        args=(Tensor("features", (2, 16, 64, 64), amp=True), Tensor("rotated-rois", 200, scale=400, images=2)),
        gave="RoIAlignRotated 7x7: {amp} features 2x16x64x64, 200 fp32 rotated RoIs",
        compare="values",
    ),
    examples=(
        Example.of(
            """
            import torch


            class RoIAlignRotated(nn.Module):

                def forward(self, input: torch.Tensor, rois: torch.Tensor) -> torch.Tensor:
                    return RoIAlignRotatedFunction.apply(input, rois, self.output_size,
                                                         self.spatial_scale,
                                                         self.sampling_ratio, self.aligned,
                                                         self.clockwise)
            """,
            f"""
            import torch


            class RoIAlignRotated(nn.Module):

                def forward(self, input: torch.Tensor, rois: torch.Tensor) -> torch.Tensor:
                    return RoIAlignRotatedFunction.apply(input.to(torch.float32 if {_NEEDS_FP32} else input.dtype), rois.to(torch.float32 if {_NEEDS_FP32} else rois.dtype), self.output_size,
                                                         self.spatial_scale,
                                                         self.sampling_ratio, self.aligned,
                                                         self.clockwise).to(input.dtype)
            """,
            why="as released: the module's forward",
        ),
    ),
    untouched=(
        Untouched.of(
            """
            class RiRoIAlignRotated(nn.Module):

                def forward(self, input, rois):
                    return RoIAlignRotatedFunction.apply(input, rois, self.output_size, self.spatial_scale, self.sampling_ratio, self.aligned, self.clockwise)
            """,
            why="the same call in another module's forward",
        ),
    ),
)
