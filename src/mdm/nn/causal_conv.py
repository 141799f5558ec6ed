"""The Mamba-2 block's causal depthwise conv1d + SiLU (Sec 4.2.1), with a CPU kernel beside the reference.

``pre[t] = bias + sum_j w[j] * xpad[t + j]`` per channel, ``out = silu(pre)``, where ``xpad`` is the ``k - 1``
context positions (the previous segment's last inputs, zeros at a sequence's start) followed by the input.

* :func:`causal_conv_silu_ref` -- ``F.conv1d`` + ``F.silu``; any device and dtype; the reference.
* ``csrc/causal_conv_silu.cpp`` -- the same in one C++ loop a pass, channel-last, its backward recomputing
  ``pre``; built on first use (:mod:`mdm.nn.cpu_kernels`).
  Why: at the ~100 tokens of the presets, oneDNN's depthwise conv and its weight gradient, the
  transposes and SiLU's saved input cost about a sixth of a CPU training step for a few million
  multiply-adds (``mdm bench train-step``).

:func:`causal_conv_silu` takes the kernel for float32/float64 CPU tensors outside ``torch.compile`` (inductor
fuses the reference itself), and the reference otherwise, also when the kernel cannot be built. Tests tie
the two together, outputs and gradients.
"""

from __future__ import annotations

from types import ModuleType

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from mdm.nn.cpu_kernels import cpu_kernel, kernel_applies


def causal_conv_silu_ref(x: Tensor, weight: Tensor, bias: Tensor | None, context: Tensor) -> Tensor:
    """The reference. x: (b, l, c);  weight: (c, 1, k) (``nn.Conv1d``'s, depthwise);  bias: (c,) or None;
    context: (b, c, k - 1), the inputs before ``x[:, 0]``.  Returns silu(conv) as (b, l, c)."""
    padded = torch.cat([context.to(x.dtype), x.transpose(1, 2)], dim=-1)  # (b, c, k - 1 + l)
    return F.silu(F.conv1d(padded, weight, bias, groups=x.shape[-1])).transpose(1, 2)


class _CausalConvSiLU(torch.autograd.Function):
    """The kernel's forward and backward; saves the inputs, not the pre-activation."""

    @staticmethod
    def forward(ctx, x: Tensor, weight_kc: Tensor, bias: Tensor, context_kc: Tensor, kernel: ModuleType) -> Tensor:
        ctx.save_for_backward(x, weight_kc, bias, context_kc)
        ctx.kernel = kernel
        return kernel.forward(x, context_kc, weight_kc, bias)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: Tensor):
        x, weight_kc, bias, context_kc = ctx.saved_tensors
        dx, dcontext, dweight, dbias = ctx.kernel.backward(grad_out.contiguous(), x, context_kc, weight_kc, bias)
        return dx, dweight, dbias, dcontext, None


def causal_conv_silu(x: Tensor, weight: Tensor, bias: Tensor | None, context: Tensor,
                     cpu_kernel_ok: bool = True) -> Tensor:
    """silu(causal depthwise conv1d) of x (b, l, c), as :func:`causal_conv_silu_ref`, by the CPU kernel when
    ``cpu_kernel_ok`` and it applies (:func:`kernel_applies`) and builds, else by the reference."""
    kernel = cpu_kernel("causal_conv_silu") if cpu_kernel_ok and kernel_applies(x) else None
    if kernel is None:
        return causal_conv_silu_ref(x, weight, bias, context)
    c, k = weight.shape[0], weight.shape[-1]
    if x.stride(-1) != 1:  # the kernel reads channels contiguously (a width-1 view may be "contiguous" without)
        x = x.clone(memory_format=torch.contiguous_format)
    weight_kc = weight.reshape(c, k).t().contiguous()
    bias = weight.new_zeros(c) if bias is None else bias
    context_kc = context.to(x.dtype).transpose(1, 2).contiguous()
    return _CausalConvSiLU.apply(x, weight_kc, bias.contiguous(), context_kc, kernel)
