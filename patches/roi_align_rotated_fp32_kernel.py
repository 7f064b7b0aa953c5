"""roi-align-rotated-fp32-kernel: run ``RoIAlignRotated``'s kernel on fp32 copies when it cannot take the inputs.

mmcv's rotated RoIAlign kernels (CPU and CUDA) dispatch float, double and half only, and
need the features and the RoIs in one dtype. Under bf16 autocast mmrotate's rotated RoI
extractors fail with ``NotImplementedError: "ROIAlignRotated_forward" not implemented for
'BFloat16'``; fp16 features with the fp32 RoIs of an fp32 box head fail with "expected
scalar type Half but found Float". ``RoIAlignRotated.forward`` now gives the kernel fp32
copies of both in exactly those cases, and returns the output in the features' dtype
(gradients flow back in it). Every call that works today (fp32, fp64, fp16 with fp16 RoIs)
gets ``.to()`` its own dtype, which is the tensor itself: no copy, bit-identical results.

Releases: the call has one form from mmcv 1.4.6 to 2.2.0 and in every onedl-mmcv, and
another (``features``, ``out_size``, ``sample_num``) from 1.3.3, the first release with the
op, to 1.4.5; the kernels are the same throughout. Until 1.5.3 the file binds only
``torch.nn`` (``import torch.nn as nn``), so there the fix also makes that import
``import torch.nn as nn, torch``, for the name ``torch`` the fix uses.
"""

from mmcv_patcher.model import Affected, Case, Edit, Example, Patch, Proofs, Step, Tensor, Untouched, per_distribution

from ._grids import roi_align_grid


def _needs_fp32(features: str) -> str:
    """When the kernel cannot take the features and the RoIs as they come."""
    return f"{features}.dtype == torch.bfloat16 or rois.dtype != {features}.dtype"


def _call(features: str, output_size: str, sampling_ratio: str) -> Edit:
    """The forward's call, with its features and the module's attributes named as a release names them."""
    needs_fp32 = _needs_fp32(features)
    rest = f"self.{output_size}, self.spatial_scale, self.{sampling_ratio}, self.aligned, self.clockwise"
    return Edit(
        f"return RoIAlignRotatedFunction.apply({features}, rois, {rest})",
        f"return RoIAlignRotatedFunction.apply({features}.to(torch.float32 if {needs_fp32} else {features}.dtype),"
        f" rois.to(torch.float32 if {needs_fp32} else rois.dtype), {rest}).to({features}.dtype)",
    )


_CALL = _call("input", "output_size", "sampling_ratio")
_OLD_CALL = _call("features", "out_size", "sample_num")
_IMPORT = Edit("import torch.nn as nn", "import torch.nn as nn, torch", binds="torch")

PATCH = Patch(
    id="roi-align-rotated-fp32-kernel",
    summary="RoIAlignRotated: fp32 kernel copies for bf16 or mixed-dtype inputs; output in the features' dtype",
    affected=per_distribution(
        (
            Affected("1.3.3", "1.4.5", counts=(0, 1, 1)),
            Affected("1.4.6", "1.5.3", counts=(1, 0, 1)),
            Affected("1.6.0", "2.2.0", counts=(1, 0, 0)),
        ),
        (Affected("2.3.0", "2.3.6", counts=(1, 0, 0)),),
    ),
    file="ops/roi_align_rotated.py",
    function="RoIAlignRotated.forward",
    edits=(_CALL, _OLD_CALL, _IMPORT),
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
        backward=True,
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
                    return RoIAlignRotatedFunction.apply(input.to(torch.float32 if {_needs_fp32("input")} else input.dtype), rois.to(torch.float32 if {_needs_fp32("input")} else rois.dtype), self.output_size,
                                                         self.spatial_scale,
                                                         self.sampling_ratio, self.aligned,
                                                         self.clockwise).to(input.dtype)
            """,
            why="as released: the module's forward",
        ),
        Example.of(
            """
            import torch.nn as nn
            from torch.autograd import Function


            class RoIAlignRotated(nn.Module):

                def forward(self, input, rois):
                    return RoIAlignRotatedFunction.apply(input, rois, self.output_size,
                                                         self.spatial_scale,
                                                         self.sampling_ratio, self.aligned,
                                                         self.clockwise)
            """,
            f"""
            import torch.nn as nn, torch
            from torch.autograd import Function


            class RoIAlignRotated(nn.Module):

                def forward(self, input, rois):
                    return RoIAlignRotatedFunction.apply(input.to(torch.float32 if {_needs_fp32("input")} else input.dtype), rois.to(torch.float32 if {_needs_fp32("input")} else rois.dtype), self.output_size,
                                                         self.spatial_scale,
                                                         self.sampling_ratio, self.aligned,
                                                         self.clockwise).to(input.dtype)
            """,
            why="mmcv 1.4.6 to 1.5.3: the file binds torch only as nn, so its import binds torch too",
        ),
        Example.of(
            """
            import torch.nn as nn
            from torch.autograd import Function


            class RoIAlignRotated(nn.Module):

                def forward(self, features, rois):
                    return RoIAlignRotatedFunction.apply(features, rois, self.out_size,
                                                         self.spatial_scale,
                                                         self.sample_num, self.aligned,
                                                         self.clockwise)
            """,
            f"""
            import torch.nn as nn, torch
            from torch.autograd import Function


            class RoIAlignRotated(nn.Module):

                def forward(self, features, rois):
                    return RoIAlignRotatedFunction.apply(features.to(torch.float32 if {_needs_fp32("features")} else features.dtype), rois.to(torch.float32 if {_needs_fp32("features")} else rois.dtype), self.out_size,
                                                         self.spatial_scale,
                                                         self.sample_num, self.aligned,
                                                         self.clockwise).to(features.dtype)
            """,
            why="mmcv 1.3.3 to 1.4.5: features, out_size and sample_num",
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
        Untouched.of(
            """
            import torch.nn as nn


            class RoIAlign(nn.Module):

                def forward(self, input, rois):
                    return RoIAlignFunction.apply(input, rois, self.output_size)
            """,
            why="the import in a file without the forward that needs torch",
        ),
    ),
    proofs=Proofs(
        grids=(roi_align_grid("RoIAlignRotated", "ROIAlignRotated_forward"),),
        # RoI Trans meets NMS in its RPN and RoIAlign in its first, horizontal stage first
        steps=(
            Step(
                "mmrotate::roi_trans/roi-trans-le90_r50_fpn_1x_dota.py",
                "mmcv/ops/roi_align_rotated.py",
                after=("nms-fp32-kernel", "roi-align-fp32-kernel"),
            ),
        ),
        upstream=("tests/test_ops/test_roi_align_rotated.py",),
    ),
)
