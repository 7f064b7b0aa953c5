"""The fix the focal loss patches share (a helper, not a patch: the registry skips modules
whose name starts with ``_``).

mmcv's ``SigmoidFocalLossFunction`` and ``SoftmaxFocalLossFunction`` set up their kernel
call with the same statements, and neither kernel has bf16. Under bf16 logits the fix gives
the kernel fp32 logits and class weights and returns the loss in bf16; ``backward``
computes the gradient from the saved fp32 logits, and autograd hands it back in bf16. Class
weights in another dtype than fp16 logits go to the logits' dtype, which the kernel needs;
any other call goes through ``.type_as()`` its own dtype, which is the tensor itself. The
loss is cast back only where the fix cast the logits (bf16): every other call returns the
very tensor it returned as released, also where CUDA's autocast runs the reduction's
``sum`` in fp32 and so returns an fp32 loss for fp16 logits.
"""

from mmcv_patcher.model import Edit

FP32_KERNEL_EDITS = (
    Edit(
        "ctx.alpha = float(alpha)",
        "ctx.alpha, ctx.output_dtype, input, weight = float(alpha),"
        " input.dtype if input.dtype == torch.bfloat16 else None,"
        " input.float() if input.dtype == torch.bfloat16 else input,"
        " weight.float() if input.dtype == torch.bfloat16 else weight.type_as(input)",
        was=(
            "ctx.alpha, ctx.output_dtype, input, weight = float(alpha), input.dtype,"
            " input.float() if input.dtype == torch.bfloat16 else input,"
            " weight.float() if input.dtype == torch.bfloat16 else weight.type_as(input)",
        ),
    ),
    Edit(
        "return output",
        "return output if ctx.output_dtype is None else output.to(ctx.output_dtype)",
        was=("return output.to(ctx.output_dtype)",),
    ),
)
