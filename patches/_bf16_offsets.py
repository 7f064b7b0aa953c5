"""The fix the deformable convolution patches share (a helper, not a patch: the registry
skips modules whose name starts with ``_``).

mmcv's ``DeformConv2dFunction`` and ``ModulatedDeformConv2dFunction`` cast their inputs to
the dtype of the offsets with the same statements, and both kernels lack bf16. Under bf16
offsets the fix gives the kernel fp32 tensors, returns the output in bf16 and, in
``backward``, takes the bf16 gradient back to fp32 for the kernel; any other dtype goes
through ``.to()`` and ``.type_as()`` its own dtype, which are the tensors themselves.
"""

from typing import Tuple

from mmcv_patcher.model import Edit


def fp32_kernel_edits(function: str) -> Tuple[Edit, ...]:
    """The edits of autograd function ``function``'s ``forward`` (the patch's definition)
    and ``backward``."""
    return (
        Edit(
            "input = input.type_as(offset)",
            "input = input.type_as(offset) if offset.dtype != torch.bfloat16 else input.float()",
        ),
        Edit(
            "weight = weight.type_as(input)",
            "weight, offset, ctx.output_dtype = weight.type_as(input), offset.type_as(input), offset.dtype",
        ),
        Edit("return output", "return output.to(ctx.output_dtype)"),
        Edit(
            "grad_output = grad_output.contiguous()",
            "grad_output = grad_output.contiguous().type_as(input)",
            function=f"{function}.backward",
        ),
    )
