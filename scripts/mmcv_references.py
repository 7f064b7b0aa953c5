"""Plain PyTorch references for mmcv's kernels that have no CPU build: the focal losses,
CARAFE, deformable RoI pooling and multi-scale deformable attention (CUDA, MLU and NPU only).

Each reference takes the arguments of its op of ``mmcv._ext`` and does what that op does:
writes its results into the output tensors it is given, in their own dtypes, or returns
them. It computes on fp32 copies with autocast off, from the definitions the CUDA kernels
implement (multi-scale deformable attention: mmcv's own PyTorch path,
``multi_scale_deformable_attn_pytorch``). A backward op's reference is the gradient autograd
takes of its forward reference. Scratch buffers a CUDA kernel fills for itself and the
Python around it never reads (CARAFE's channels-last copies of the gradients, the softmax
focal loss's ``buff``) are left as given.

:class:`scripts.cuda_rules.MmcvKernels` runs them where CUDA would run its kernel; they are
checked against the CPU kernels they can be checked against (deformable RoI pooling with no
offset is RoIAlign's average) and against first principles (tests/e2e_ops/mmcv_references.py).
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Dict, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

#: the smallest normal fp32, which the CUDA kernels clamp a probability to before its log
TINY = torch.finfo(torch.float32).tiny


def _fp32(*tensors: Tensor, grad: bool = False) -> Tuple[Tensor, ...]:
    return tuple(t.detach().float().requires_grad_(grad) for t in tensors)


def _gradients(loss: Tensor, inputs: Sequence[Tensor], grad_output: Any = None) -> Tuple[Tensor, ...]:
    """d ``loss`` / d each of ``inputs`` (``grad_output``: the gradient ``loss`` receives;
    None: the sum of ``loss``), zeros for an input it does not depend on."""
    grads = torch.autograd.grad(
        loss, inputs, grad_output if grad_output is not None else torch.ones_like(loss), allow_unused=True
    )
    return tuple(torch.zeros_like(i) if g is None else g for i, g in zip(inputs, grads))


def _plain(reference: Callable[..., Any]) -> Callable[..., Any]:
    """``reference`` run with autocast off and autograd on (its backward is autograd's)."""

    @functools.wraps(reference)
    def run(*args: Any, **kwargs: Any) -> Any:
        with torch.autocast("cpu", enabled=False), torch.enable_grad():
            return reference(*args, **kwargs)

    return run


# --- focal losses --------------------------------------------------------------------------------


def sigmoid_focal_loss(logits: Tensor, target: Tensor, weight: Tensor, gamma: float, alpha: float) -> Tensor:
    """The elementwise sigmoid focal loss of ``logits`` (N x C) for labels ``target`` (N, a
    label of C is background), times ``weight[target]`` where ``weight`` is not empty."""
    p = logits.sigmoid()
    positive = F.one_hot(target, logits.size(1) + 1)[:, : logits.size(1)].to(logits.dtype)
    loss = -alpha * (1 - p) ** gamma * p.clamp_min(TINY).log() * positive
    loss = loss - (1 - alpha) * p**gamma * (1 - p).clamp_min(TINY).log() * (1 - positive)
    return loss * weight[target].unsqueeze(1) if weight.numel() else loss


@_plain
def sigmoid_focal_loss_forward(
    input: Tensor, target: Tensor, weight: Tensor, output: Tensor, gamma: float, alpha: float
) -> None:
    """``output`` := the elementwise loss."""
    logits, w = _fp32(input, weight)
    output.copy_(sigmoid_focal_loss(logits, target, w, gamma, alpha))


@_plain
def sigmoid_focal_loss_backward(
    input: Tensor, target: Tensor, weight: Tensor, grad_input: Tensor, gamma: float, alpha: float
) -> None:
    """``grad_input`` := d loss / d logits, elementwise."""
    (logits,), (w,) = _fp32(input, grad=True), _fp32(weight)
    (grad,) = _gradients(sigmoid_focal_loss(logits, target, w, gamma, alpha), [logits])
    grad_input.copy_(grad)


def softmax_focal_loss(probabilities: Tensor, target: Tensor, weight: Tensor, gamma: float, alpha: float) -> Tensor:
    """The focal loss of each row of softmax ``probabilities`` for its label in ``target`` (0
    where the label is negative), times ``weight[target]`` where ``weight`` is not empty."""
    p = probabilities.gather(1, target.clamp_min(0).unsqueeze(1)).squeeze(1)
    loss = torch.where(target >= 0, -alpha * (1 - p) ** gamma * p.clamp_min(TINY).log(), torch.zeros_like(p))
    return loss * weight[target] if weight.numel() else loss


@_plain
def softmax_focal_loss_forward(
    input: Tensor, target: Tensor, weight: Tensor, output: Tensor, gamma: float, alpha: float
) -> None:
    """``output`` := the loss of each row (``input``: softmax probabilities)."""
    probabilities, w = _fp32(input, weight)
    output.copy_(softmax_focal_loss(probabilities, target, w, gamma, alpha))


@_plain
def softmax_focal_loss_backward(
    input: Tensor, target: Tensor, weight: Tensor, buff: Tensor, grad_input: Tensor, gamma: float, alpha: float
) -> None:
    """``grad_input`` := d loss / d logits (``input``: their softmax, whose log gives them back
    up to a constant per row)."""
    (logits,), (w,) = _fp32(input.clamp_min(TINY).log(), grad=True), _fp32(weight)
    (grad,) = _gradients(softmax_focal_loss(logits.softmax(1), target, w, gamma, alpha), [logits])
    grad_input.copy_(grad)


# --- CARAFE ----------------------------------------------------------------------------------------


def carafe(features: Tensor, masks: Tensor, kernel_size: int, group_size: int, scale_factor: int) -> Tensor:
    """Content-aware reassembly: each output pixel is the sum over the ``kernel_size`` squared
    neighbourhood of its source pixel (``y // scale_factor``, zero outside) weighted by its
    group's channels of ``masks``."""
    n, c, h, w = features.shape
    k, s, r = kernel_size, scale_factor, (kernel_size - 1) // 2
    padded = F.pad(features, (r, r, r, r))
    weights = masks.view(n, group_size, k * k, h * s, w * s)
    output = features.new_zeros(n, group_size, c // group_size, h * s, w * s)
    for i in range(k):
        for j in range(k):
            tap = padded[:, :, i : i + h, j : j + w].repeat_interleave(s, 2).repeat_interleave(s, 3)
            output = output + tap.view_as(output) * weights[:, :, i * k + j].unsqueeze(2)
    return output.view(n, c, h * s, w * s)


def _channels_last(tensor: Tensor) -> Tensor:
    """A view of contiguous ``tensor`` (N x C x H x W) as the N x H x W x C array its memory
    holds once a CUDA kernel has written it channels last."""
    n, c, h, w = tensor.shape
    return tensor.view(n, h, w, c)


@_plain
def carafe_forward(
    features: Tensor,
    masks: Tensor,
    rfeatures: Tensor,
    routput: Tensor,
    rmasks: Tensor,
    output: Tensor,
    kernel_size: int,
    group_size: int,
    scale_factor: int,
) -> None:
    """``output`` := CARAFE; ``rfeatures``, ``rmasks``, ``routput``: the channels-last copies
    (``carafe_backward`` reads the features from ``rfeatures``)."""
    image, weights = _fp32(features, masks)
    result = carafe(image, weights, kernel_size, group_size, scale_factor)
    output.copy_(result)
    for given, copy in ((features, rfeatures), (masks, rmasks), (output, routput)):
        _channels_last(copy).copy_(given.permute(0, 2, 3, 1))


@_plain
def carafe_backward(
    top_grad: Tensor,
    rfeatures: Tensor,
    masks: Tensor,
    rtop_grad: Tensor,
    rbottom_grad_hs: Tensor,
    rbottom_grad: Tensor,
    rmask_grad: Tensor,
    bottom_grad: Tensor,
    mask_grad: Tensor,
    kernel_size: int,
    group_size: int,
    scale_factor: int,
) -> None:
    """``bottom_grad``, ``mask_grad`` := the gradients of CARAFE for ``top_grad``."""
    features = _channels_last(rfeatures).permute(0, 3, 1, 2)
    image, weights = _fp32(features, masks, grad=True)
    result = carafe(image, weights, kernel_size, group_size, scale_factor)
    for given, grad in zip((bottom_grad, mask_grad), _gradients(result, [image, weights], top_grad.float())):
        given.copy_(grad)


@_plain
def carafe_naive_forward(
    features: Tensor, masks: Tensor, output: Tensor, kernel_size: int, group_size: int, scale_factor: int
) -> None:
    """``output`` := CARAFE."""
    image, weights = _fp32(features, masks)
    output.copy_(carafe(image, weights, kernel_size, group_size, scale_factor))


@_plain
def carafe_naive_backward(
    top_grad: Tensor,
    features: Tensor,
    masks: Tensor,
    bottom_grad: Tensor,
    mask_grad: Tensor,
    kernel_size: int,
    group_size: int,
    scale_factor: int,
) -> None:
    """``bottom_grad``, ``mask_grad`` := the gradients of CARAFE for ``top_grad``."""
    image, weights = _fp32(features, masks, grad=True)
    result = carafe(image, weights, kernel_size, group_size, scale_factor)
    for given, grad in zip((bottom_grad, mask_grad), _gradients(result, [image, weights], top_grad.float())):
        given.copy_(grad)


# --- deformable RoI pooling ------------------------------------------------------------------------


def bilinear(image: Tensor, batch: Tensor, y: Tensor, x: Tensor) -> Tensor:
    """``image`` (N x H x W x C) sampled at (``y``, ``x``) of image ``batch`` as mmcv's RoI
    kernels sample: 0 beyond one pixel outside, clamped to the edge pixels within it; the
    result has the points' shape and C last."""
    height, width = image.shape[1:3]
    inside = ((y >= -1) & (y <= height) & (x >= -1) & (x <= width)).unsqueeze(-1)
    y, x = y.clamp_min(0), x.clamp_min(0)
    y_low = y.detach().floor().long().clamp_max(height - 1)
    x_low = x.detach().floor().long().clamp_max(width - 1)
    y = torch.where(y_low >= height - 1, y_low.to(y.dtype), y)
    x = torch.where(x_low >= width - 1, x_low.to(x.dtype), x)
    y_high, x_high = (y_low + 1).clamp_max(height - 1), (x_low + 1).clamp_max(width - 1)
    ly, lx = (y - y_low).unsqueeze(-1), (x - x_low).unsqueeze(-1)
    value = (1 - ly) * (1 - lx) * image[batch, y_low, x_low] + (1 - ly) * lx * image[batch, y_low, x_high]
    value = value + ly * (1 - lx) * image[batch, y_high, x_low] + ly * lx * image[batch, y_high, x_high]
    return value * inside


#: RoIs pooled at once (bounds the memory of their samples)
CHUNK = 64


def deform_roi_pool(
    input: Tensor,
    rois: Tensor,
    offset: Tensor,
    pooled_height: int,
    pooled_width: int,
    spatial_scale: float,
    sampling_ratio: int,
    gamma: float,
) -> Tensor:
    """Deformable RoI pooling: each bin of each RoI (batch index, x1, y1, x2, y2) is the mean of
    a grid of bilinear samples (``sampling_ratio`` a side, or as many as the bin is pixels
    tall and wide), the bin moved by ``gamma`` times the RoI's size times its ``offset``
    (R x 2 x PH x PW: x, then y; empty: not moved)."""
    image = input.permute(0, 2, 3, 1)
    start = rois[:, 1:3] * spatial_scale - 0.5
    size = rois[:, 3:5] * spatial_scale - 0.5 - start
    bins = size / size.new_tensor([pooled_width, pooled_height])
    moved = torch.zeros(len(rois), pooled_height, pooled_width, 2, dtype=input.dtype)
    if offset.numel():
        moved = gamma * size[:, None, None, :] * offset.permute(0, 2, 3, 1)
    grids = (
        torch.full((len(rois), 2), sampling_ratio)
        if sampling_ratio > 0
        else (bins.detach().ceil().long().clamp_min(0) if len(rois) else torch.zeros(0, 2, dtype=torch.long))
    )
    output = input.new_zeros(len(rois), pooled_height, pooled_width, input.size(1))
    for grid in torch.unique(grids, dim=0).tolist():
        (chosen,) = torch.nonzero((grids == grids.new_tensor(grid)).all(1), as_tuple=True)
        for part in chosen.split(CHUNK):
            output = output.index_put((part,), _pooled(image, rois[part], start[part], bins[part], moved[part], grid))
    return output.permute(0, 3, 1, 2)


def _pooled(image: Tensor, rois: Tensor, start: Tensor, bins: Tensor, moved: Tensor, grid: Sequence[int]) -> Tensor:
    """The bins of ``rois`` (one sampling ``grid``: x, y samples a side), R x PH x PW x C."""
    pooled_height, pooled_width = moved.shape[1:3]
    steps = [(torch.arange(n, dtype=image.dtype) + 0.5) / max(n, 1) for n in grid]
    x = start[:, 0, None, None, None, None] + moved[..., 0, None, None]
    x = (
        x
        + (
            torch.arange(pooled_width, dtype=image.dtype)[None, None, :, None, None]
            + steps[0][None, None, None, None, :]
        )
        * bins[:, 0, None, None, None, None]
    )
    y = start[:, 1, None, None, None, None] + moved[..., 1, None, None]
    y = (
        y
        + (
            torch.arange(pooled_height, dtype=image.dtype)[None, :, None, None, None]
            + steps[1][None, None, None, :, None]
        )
        * bins[:, 1, None, None, None, None]
    )
    x, y = torch.broadcast_tensors(x, y)
    batch = rois[:, 0].long()[:, None, None, None, None].expand_as(x)
    return bilinear(image, batch, y, x).sum((3, 4)) / max(grid[0] * grid[1], 1)


@_plain
def deform_roi_pool_forward(
    input: Tensor,
    rois: Tensor,
    offset: Tensor,
    output: Tensor,
    pooled_height: int,
    pooled_width: int,
    spatial_scale: float,
    sampling_ratio: int,
    gamma: float,
) -> None:
    """``output`` := deformable RoI pooling."""
    image, boxes, moves = _fp32(input, rois, offset)
    output.copy_(
        deform_roi_pool(image, boxes, moves, pooled_height, pooled_width, spatial_scale, sampling_ratio, gamma)
    )


@_plain
def deform_roi_pool_backward(
    grad_output: Tensor,
    input: Tensor,
    rois: Tensor,
    offset: Tensor,
    grad_input: Tensor,
    grad_offset: Tensor,
    pooled_height: int,
    pooled_width: int,
    spatial_scale: float,
    sampling_ratio: int,
    gamma: float,
) -> None:
    """``grad_input``, ``grad_offset`` := the gradients of deformable RoI pooling for ``grad_output``."""
    (image, moves), (boxes,) = _fp32(input, offset, grad=True), _fp32(rois)
    result = deform_roi_pool(image, boxes, moves, pooled_height, pooled_width, spatial_scale, sampling_ratio, gamma)
    for given, grad in zip((grad_input, grad_offset), _gradients(result, [image, moves], grad_output.float())):
        given.copy_(grad)


# --- multi-scale deformable attention --------------------------------------------------------------


@_plain
def ms_deform_attn_forward(
    value: Tensor,
    value_spatial_shapes: Tensor,
    value_level_start_index: Tensor,
    sampling_locations: Tensor,
    attention_weights: Tensor,
    im2col_step: int,
) -> Tensor:
    """Multi-scale deformable attention, by mmcv's own PyTorch path, in ``value``'s dtype."""
    from mmcv.ops.multi_scale_deform_attn import multi_scale_deformable_attn_pytorch

    inputs = _fp32(value, sampling_locations, attention_weights)
    result = multi_scale_deformable_attn_pytorch(inputs[0], value_spatial_shapes, *inputs[1:])
    return result.detach().to(value.dtype)


@_plain
def ms_deform_attn_backward(
    value: Tensor,
    value_spatial_shapes: Tensor,
    value_level_start_index: Tensor,
    sampling_locations: Tensor,
    attention_weights: Tensor,
    grad_output: Tensor,
    grad_value: Tensor,
    grad_sampling_loc: Tensor,
    grad_attn_weight: Tensor,
    im2col_step: int,
) -> None:
    """``grad_value``, ``grad_sampling_loc``, ``grad_attn_weight`` := the gradients of
    mmcv's PyTorch path for ``grad_output``."""
    from mmcv.ops.multi_scale_deform_attn import multi_scale_deformable_attn_pytorch

    inputs = _fp32(value, sampling_locations, attention_weights, grad=True)
    result = multi_scale_deformable_attn_pytorch(inputs[0], value_spatial_shapes, *inputs[1:])
    for given, grad in zip(
        (grad_value, grad_sampling_loc, grad_attn_weight), _gradients(result, inputs, grad_output.float())
    ):
        given.copy_(grad)


#: each op of ``mmcv._ext`` that has no CPU kernel, by name: its reference
REFERENCES: Dict[str, Callable[..., Any]] = {
    kernel.__name__: kernel
    for kernel in (
        sigmoid_focal_loss_forward,
        sigmoid_focal_loss_backward,
        softmax_focal_loss_forward,
        softmax_focal_loss_backward,
        carafe_forward,
        carafe_backward,
        carafe_naive_forward,
        carafe_naive_backward,
        deform_roi_pool_forward,
        deform_roi_pool_backward,
        ms_deform_attn_forward,
        ms_deform_attn_backward,
    )
}
