"""The SSD scan as its plain recurrence in C++ (``csrc/ssd_recurrent.cpp``), forward and backward: the CPU
training path of :func:`mdm.nn.ssd.ssd_chunked`.

Per (batch, head) the kernel runs ``H_t = exp(a_t) H_{t-1} + (step_t x_t) B_t^T``, ``y_t = H_t C_t + D x_t``
position by position with the (head_dim x d_state) state in L1, and its backward in two sweeps of the same size
(see the kernel's header). ``a = dt A`` and ``step = dt_eff`` (:func:`mdm.nn.ssd.input_step`) are computed by the
caller, so autograd carries their gradients back to ``dt`` and ``A``; ``x * step`` and the D skip are inside the
kernel, which saves four elementwise passes over (b, l, h, p) tensors and their gradients a call.
"""

from __future__ import annotations

from types import ModuleType

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable


def _last_contiguous(t: Tensor) -> Tensor:
    """``t`` itself when its last stride is 1 (the kernel takes any other strides), else a contiguous copy. Not
    ``t.contiguous()``: torch counts a last dimension of size 1 contiguous whatever its stride, and returns it."""
    return t if t.stride(-1) == 1 else t.clone(memory_format=torch.contiguous_format)


class _RecurrentScan(torch.autograd.Function):
    """``kernel.forward`` / ``kernel.backward`` as one autograd node; first-order only, like the other kernels."""

    @staticmethod
    def forward(ctx, x: Tensor, step: Tensor, a: Tensor, B: Tensor, C: Tensor, D: Tensor | None,
                initial_state: Tensor | None, kernel: ModuleType) -> tuple[Tensor, Tensor]:
        empty = x.new_empty(0)
        inputs = (_last_contiguous(x), step.contiguous(), a.contiguous(), _last_contiguous(B), _last_contiguous(C),
                  empty if D is None else D.contiguous(),
                  empty if initial_state is None else initial_state.contiguous())
        y, final_state = kernel.forward(*inputs)
        ctx.save_for_backward(*inputs)
        ctx.kernel, ctx.has_D, ctx.has_state = kernel, D is not None, initial_state is not None
        ctx.set_materialize_grads(False)  # an unused final state sends no gradient: the kernel starts from zeros
        return y, final_state

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_y: Tensor | None, grad_state: Tensor | None):
        inputs = ctx.saved_tensors
        x = inputs[0]
        grad_y = torch.zeros_like(x, memory_format=torch.contiguous_format) if grad_y is None else grad_y.contiguous()
        grad_state = x.new_empty(0) if grad_state is None else grad_state.contiguous()
        dx, dstep, da, dB, dC, dD, d_state = ctx.kernel.backward(grad_y, grad_state, *inputs)
        return (dx, dstep, da, dB, dC, dD if ctx.has_D else None, d_state if ctx.has_state else None, None)


def ssd_recurrent(kernel: ModuleType, x: Tensor, step: Tensor, a: Tensor, B: Tensor, C: Tensor, D: Tensor | None,
                  initial_state: Tensor | None) -> tuple[Tensor, Tensor]:
    """The scan by ``kernel`` (the built ``ssd_recurrent`` module), differentiable in every input.

    x: (b, l, h, p);  step: (b, l, h) the input step dt_eff;  a: (b, l, h) the log-decays dt * A;
    B, C: (b, l, g, n);  D: (h,) or None;  initial_state: (b, h, p, n) or None (zeros). All one float dtype
    on CPU (:func:`mdm.nn.cpu_kernels.kernel_applies`). Returns y (b, l, h, p) with the D skip and the state
    after the last position, as :func:`mdm.nn.ssd.ssd_ref`.
    """
    return _RecurrentScan.apply(x, step, a, B, C, D, initial_state, kernel)
