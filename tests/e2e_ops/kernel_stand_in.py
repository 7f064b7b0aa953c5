"""The real mmcv's Python around a CUDA-only kernel, run on the CPU with a stand-in for the
kernel (none of these kernels is built for the CPU, and no GPU is here). The stand-in checks
dtypes as the CUDA kernels' dispatch does (float, double and half, every float tensor in the
dispatched one), records them, and computes the op in PyTorch. So it claims what the patch
changes, the dtypes the kernel gets and what comes back, and nothing about the kernels
themselves (``verify --device cuda`` runs those).

The stand-in is as strict as the kernels' launchers: contiguous tensors, int64 targets and
level starts, a batch that ``im2col_step`` divides. The op runs under one rule of CUDA's
autocast, simulated on the CPU (:class:`CudaAutocastSum`): ``sum`` runs in fp32, so a focal
loss's reduction gives an fp32 loss for fp16 logits as it does on a GPU.

``run(op, dtype, weighted, reduction)``: the op on logits or values in ``dtype`` (class
weights in fp32 when ``weighted``) with that reduction (the focal losses). Answers the dtypes
the kernel got (``kernel``), the output's and the gradient's dtypes, digests and differences
from the same values in fp32, and the copies."""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

import torch
from mmcv.ops import focal_loss, multi_scale_deform_attn
from torch.overrides import TorchFunctionMode

from tests.e2e_ops.prelude import DTYPES, Copies, answer, difference, digest

NAMES = {torch.bfloat16: "BFloat16", torch.float16: "Half", torch.float32: "Float", torch.float64: "Double"}


class CudaAutocastSum(TorchFunctionMode):  # type: ignore[misc]
    """One rule of CUDA's autocast, simulated on the CPU: ``sum`` of fp16 or bf16 runs in fp32
    (CUDA's autocast lists ``sum`` among the ops it runs in fp32; CPU autocast has no such
    rule). A simulation of that one rule, not of autocast."""

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        if (
            func in (torch.sum, torch.Tensor.sum)
            and "dtype" not in kwargs
            and args[0].dtype in (torch.float16, torch.bfloat16)
        ):
            return func(args[0].float(), *args[1:], **kwargs)
        return func(*args, **kwargs)


class StandIn:
    """mmcv's CUDA kernels' dtype rules, recorded, over a PyTorch computation: a stand-in, not mmcv's kernel."""

    seen: List[List[str]] = []

    def _dispatch(self, name: str, tensors: List[Any], indices: Tuple[Any, ...] = ()) -> None:
        self.seen.append([str(t.dtype) for t in tensors])
        for t in (*tensors, *indices):
            if not t.is_contiguous():
                raise RuntimeError("%s: every tensor must be contiguous" % name)
        for t in indices:
            if t.dtype != torch.long:
                raise RuntimeError("expected scalar type Long but found %s" % NAMES.get(t.dtype, t.dtype))
        if tensors[0].dtype not in (torch.float32, torch.float64, torch.float16):
            raise NotImplementedError("\"%s\" not implemented for '%s'" % (name, NAMES[tensors[0].dtype]))
        for t in tensors[1:]:
            if t.dtype != tensors[0].dtype:
                raise RuntimeError("expected scalar type %s but found %s" % (NAMES[tensors[0].dtype], NAMES[t.dtype]))

    def _sigmoid(self, input: Any, target: Any, weight: Any, gamma: float, alpha: float) -> Any:
        p = input.sigmoid()
        hit = torch.nn.functional.one_hot(target, input.size(1) + 1)[:, :-1].to(input.dtype)
        loss = -(alpha * hit * (1 - p) ** gamma * p.log() + (1 - alpha) * (1 - hit) * p**gamma * (1 - p).log())
        return loss * weight[target].unsqueeze(1) if weight.numel() else loss

    def _softmax(self, p: Any, target: Any, weight: Any, gamma: float, alpha: float) -> Any:
        p_t = p.gather(1, target.unsqueeze(1)).squeeze(1)
        loss = -alpha * (1 - p_t) ** gamma * p_t.log()
        return loss * weight[target] if weight.numel() else loss

    def _grad(self, function: Any, leaf: Any, *args: Any) -> Any:
        with torch.enable_grad():
            leaf = leaf.detach().double().requires_grad_()
            return torch.autograd.grad(function(leaf, *args).sum(), leaf)[0]

    def sigmoid_focal_loss_forward(
        self, input: Any, target: Any, weight: Any, output: Any, gamma: float, alpha: float
    ) -> None:
        self._dispatch("sigmoid_focal_loss_forward_cuda_kernel", [input, weight, output], (target,))
        output.copy_(self._sigmoid(input.double(), target, weight.double(), gamma, alpha))

    def sigmoid_focal_loss_backward(
        self, input: Any, target: Any, weight: Any, grad_input: Any, gamma: float, alpha: float
    ) -> None:
        self._dispatch("sigmoid_focal_loss_backward_cuda_kernel", [input, weight, grad_input], (target,))
        grad_input.copy_(self._grad(self._sigmoid, input, target, weight.double(), gamma, alpha))

    def softmax_focal_loss_forward(
        self, input_softmax: Any, target: Any, weight: Any, output: Any, gamma: float, alpha: float
    ) -> None:
        self._dispatch("softmax_focal_loss_forward_cuda_kernel", [input_softmax, weight, output], (target,))
        output.copy_(self._softmax(input_softmax.double(), target, weight.double(), gamma, alpha))

    def softmax_focal_loss_backward(
        self, input_softmax: Any, target: Any, weight: Any, buff: Any, grad_input: Any, gamma: float, alpha: float
    ) -> None:
        self._dispatch("softmax_focal_loss_backward_cuda_kernel", [input_softmax, weight, buff, grad_input], (target,))
        p = input_softmax.double()
        g = self._grad(self._softmax, p, target, weight.double(), gamma, alpha)
        grad_input.copy_(p * (g - (g * p).sum(1, keepdim=True)))  # through the softmax, to the logits

    def _im2col(self, value: Any, im2col_step: int) -> None:
        batch = value.size(0)
        if batch % min(batch, im2col_step):
            raise RuntimeError("batch(%d) must divide im2col_step(%d)" % (batch, im2col_step))

    def _attention(self, value: Any, shapes: Any, locations: Any, weights: Any) -> Any:
        return multi_scale_deform_attn.multi_scale_deformable_attn_pytorch(value, shapes, locations, weights)

    def ms_deform_attn_forward(
        self, value: Any, shapes: Any, starts: Any, locations: Any, weights: Any, im2col_step: int
    ) -> Any:
        self._dispatch("ms_deform_attn_forward_cuda", [value, locations, weights], (shapes, starts))
        self._im2col(value, im2col_step)
        return self._attention(value.double(), shapes, locations.double(), weights.double()).to(value.dtype)

    def ms_deform_attn_backward(
        self,
        value: Any,
        shapes: Any,
        starts: Any,
        locations: Any,
        weights: Any,
        grad_output: Any,
        grad_value: Any,
        grad_locations: Any,
        grad_weights: Any,
        im2col_step: int,
    ) -> None:
        self._dispatch(
            "ms_deform_attn_backward_cuda",
            [value, locations, weights, grad_output, grad_value, grad_locations, grad_weights],
            (shapes, starts),
        )
        self._im2col(value, im2col_step)
        with torch.enable_grad():
            leaves = [t.detach().double().requires_grad_() for t in (value, locations, weights)]
            out = self._attention(leaves[0], shapes, leaves[1], leaves[2])
            grads = torch.autograd.grad(out, leaves, grad_output.double())
        for into, grad in zip((grad_value, grad_locations, grad_weights), grads):
            into.copy_(grad)


focal_loss.ext_module = multi_scale_deform_attn.ext_module = StandIn()

g = torch.Generator().manual_seed(5)
logits, targets = torch.randn(64, 10, generator=g) * 2, torch.randint(0, 10, (64,), generator=g)
class_weights = torch.rand(10, generator=g) + 0.5
levels, starts = torch.tensor([[8, 8], [4, 4]]), torch.tensor([0, 64])
value = torch.rand(2, 80, 4, 8, generator=g)
locations = torch.rand(2, 30, 4, 2, 4, 2, generator=g)
attention = torch.rand(2, 30, 4, 2, 4, generator=g).softmax(-1)


def call(op: str, dtype: Any, weights: Optional[Any], reduction: str) -> Tuple[Any, Any]:
    """The op on inputs as autocast gives them (the logits or values in ``dtype``, the rest
    in fp32), forward under CUDA's ``sum`` rule, then backward."""
    x = (logits if op != "ms_deform_attn" else value).to(dtype).detach().requires_grad_()
    with CudaAutocastSum():
        if op == "sigmoid_focal_loss":
            out = focal_loss.sigmoid_focal_loss(x, targets, 2.0, 0.25, weights, reduction)
        elif op == "softmax_focal_loss":
            out = focal_loss.softmax_focal_loss(x, targets, 2.0, 0.25, weights, reduction)
        else:
            out = multi_scale_deform_attn.MultiScaleDeformableAttnFunction.apply(
                x, levels, starts, locations, attention, 64
            )
    out.float().sum().backward()
    return x, out


def run(op: str, dtype_name: str, weighted: str, reduction: str = "none") -> Dict[str, Any]:
    dtype, weights = DTYPES[dtype_name], class_weights if weighted == "weighted" else None
    StandIn.seen.clear()
    x, out = call(op, dtype, weights, reduction)
    kernel = sorted({each for dtypes in StandIn.seen for each in dtypes})
    Copies.count = 0
    with Copies():
        call(op, dtype, weights, reduction)
    reference_x, reference = call(op, torch.float32, weights, reduction)
    return {
        "kernel": kernel,
        "dtypes": [str(out.dtype), str(x.grad.dtype)],
        "differences": [difference(out, reference), difference(x.grad, reference_x.grad)],
        "digests": [digest(out), digest(x.grad)],
        "copies": Copies.count,
    }


answer(run)
