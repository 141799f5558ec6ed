"""The Mamba-2 block's depthwise causal convolution and its SiLU (Sec 4.2.1 of arXiv 2510.13253; Mamba-2,
arXiv 2405.21060, Sec 7.1), with a backward pass written for the CPU.

    out = silu(conv1d(x_padded, weight, bias, groups=channels))

``x_padded`` (b, c, l + k - 1) already holds the ``k - 1`` positions of left context
(zeros at the start of a sequence), so the convolution is causal and unpadded.

Two implementations, tied by tests (outputs and gradients):

* :func:`causal_conv_silu_ref` -- ``F.conv1d`` and ``F.silu`` under autograd; the reference.
* :func:`causal_conv_silu` -- the same forward (bit for bit: it calls the same two ops),
  with a hand-written backward: the gradient of a depthwise convolution is ``k`` shifted
  multiply-adds and ``k`` multiply-sums, which on this project's CPU costs about a quarter
  of the depthwise ``convolution_backward`` of oneDNN (measured 12 ms a call at
  b=32, c=320, l=99, one thread). The forward must stay that of ``F.conv1d``:
  checkpoints replay bit-identically only through it (a shifted-sum forward differs in
  the last bits).

Shape letters: ``b`` batch, ``c`` channels, ``l`` length, ``k`` kernel width.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def causal_conv_silu_ref(x_padded: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """``silu(conv1d(x_padded))``, depthwise: (b, c, l + k - 1), weight (c, 1, k), bias (c,) -> (b, c, l)."""
    return F.silu(F.conv1d(x_padded, weight, bias, groups=weight.shape[0]))


class _CausalConvSiLU(torch.autograd.Function):
    """Forward as :func:`causal_conv_silu_ref`; backward by hand, saving the input and the pre-activation.

    With ``g = d out * silu'(pre)`` (b, c, l):
    ``d x_padded[..., j:j+l] += weight[:, 0, j] * g``, ``d weight[:, 0, j] = sum_{b,t} g * x_padded[..., j:j+l]``,
    ``d bias = sum_{b,t} g``.
    """

    @staticmethod
    def forward(ctx, x_padded: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        pre = F.conv1d(x_padded, weight, bias, groups=weight.shape[0])
        ctx.save_for_backward(x_padded, weight, pre)
        ctx.has_bias = bias is not None
        return F.silu(pre)

    @staticmethod
    def backward(ctx, grad_out: Tensor) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
        x_padded, weight, pre = ctx.saved_tensors
        g = torch.ops.aten.silu_backward(grad_out, pre)  # d out * silu'(pre), one fused kernel
        l, k = g.shape[-1], weight.shape[-1]
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = x_padded.new_zeros(x_padded.shape)
            for j in range(k):
                grad_x[..., j:j + l].addcmul_(g, weight[:, 0, j, None])
        if ctx.needs_input_grad[1]:
            product = torch.empty_like(g)  # one buffer for the k products
            grad_w = torch.stack([torch.mul(g, x_padded[..., j:j + l], out=product).sum((0, 2))
                                  for j in range(k)], dim=-1)[:, None]
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = g.sum((0, 2))
        return grad_x, grad_w, grad_b


def causal_conv_silu(x_padded: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """:func:`causal_conv_silu_ref` with the hand-written backward on a CPU (elsewhere the reference itself:
    the GPU's convolution backward is not the bottleneck this replaces)."""
    if x_padded.device.type != "cpu" or x_padded.dim() != 3 or weight.shape[1] != 1:
        return causal_conv_silu_ref(x_padded, weight, bias)
    return _CausalConvSiLU.apply(x_padded, weight, bias)
