"""The Mamba-2 block's causal depthwise conv1d + SiLU (Sec 4.2.1), with a CPU kernel beside the reference.

``pre[t] = bias + sum_j w[j] * xpad[t + j]`` per channel, ``out = silu(pre)``, where ``xpad`` is the ``k - 1``
context positions (the previous segment's last inputs, zeros at a sequence's start) followed by the input.

* :func:`causal_conv_silu_ref` -- ``F.conv1d`` + ``F.silu``; any device and dtype; the reference.
* ``csrc/causal_conv_silu.cpp`` -- the same in one C++ loop a pass, channel-last, its backward recomputing
  ``pre``; built with ``torch.utils.cpp_extension`` on first use (about a minute, cached per machine).
  Why: at the ~100 tokens of the presets, oneDNN's depthwise conv and its weight gradient, the
  transposes and SiLU's saved input cost about a sixth of a CPU training step for a few million
  multiply-adds (``mdm bench train-step``).

:func:`causal_conv_silu` takes the kernel for float32/float64 CPU tensors outside ``torch.compile`` (inductor
fuses the reference itself), and the reference otherwise; when the kernel cannot be built it warns once with
the compiler's message and keeps the reference. Tests tie the two together, outputs and gradients.
"""

from __future__ import annotations

import functools
import sys
import warnings
from pathlib import Path
from types import ModuleType

import torch
import torch.nn.functional as F
from torch import Tensor

KERNEL_NAME = "mdm_causal_conv_silu"
_SOURCE = Path(__file__).with_name("csrc") / "causal_conv_silu.cpp"


def causal_conv_silu_ref(x: Tensor, weight: Tensor, bias: Tensor | None, context: Tensor) -> Tensor:
    """The reference. x: (b, l, c);  weight: (c, 1, k) (``nn.Conv1d``'s, depthwise);  bias: (c,) or None;
    context: (b, c, k - 1), the inputs before ``x[:, 0]``.  Returns silu(conv) as (b, l, c)."""
    padded = torch.cat([context.to(x.dtype), x.transpose(1, 2)], dim=-1)  # (b, c, k - 1 + l)
    return F.silu(F.conv1d(padded, weight, bias, groups=x.shape[-1])).transpose(1, 2)


@functools.cache
def cpu_kernel() -> ModuleType | None:
    """The compiled kernel module, built on the first call of a process (cached on disk after the first
    build), or None with one warning naming the build error."""
    from torch.utils import cpp_extension

    try:
        name, flags = KERNEL_NAME, ["-O3"]
        if torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512"):
            # ATen's AVX2 vectors (its Sleef exp) and auto-vectorised multiply-adds; the name keeps this
            # build apart from one made for a CPU without AVX2.
            name, flags = f"{KERNEL_NAME}_avx2", flags + ["-mavx2", "-mfma", "-DCPU_CAPABILITY_AVX2",
                                                          "-DCPU_CAPABILITY=AVX2"]
        build_dir = Path(cpp_extension._get_build_directory(name, verbose=False))
        if not any(build_dir.glob("*.so")):
            print("mdm: compiling the CPU causal-conv kernel (once per machine, about a minute)", file=sys.stderr,
                  flush=True)
        return cpp_extension.load(name, sources=[str(_SOURCE)], extra_cflags=flags, verbose=False)
    except Exception as error:  # a missing compiler or ninja, a failed build: the reference still works
        message = " ".join(str(error).split())[-600:]
        warnings.warn(f"mdm: the CPU causal-conv kernel could not be built ({type(error).__name__}: {message}); "
                      f"using the PyTorch reference (F.conv1d + SiLU), which gives the same results more slowly",
                      RuntimeWarning, stacklevel=2)
        return None


class _CausalConvSiLU(torch.autograd.Function):
    """The kernel's forward and backward; saves the inputs, not the pre-activation."""

    @staticmethod
    def forward(ctx, x: Tensor, weight_kc: Tensor, bias: Tensor, context_kc: Tensor, kernel: ModuleType) -> Tensor:
        ctx.save_for_backward(x, weight_kc, bias, context_kc)
        ctx.kernel = kernel
        return kernel.forward(x, context_kc, weight_kc, bias)

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        x, weight_kc, bias, context_kc = ctx.saved_tensors
        dx, dcontext, dweight, dbias = ctx.kernel.backward(grad_out.contiguous(), x, context_kc, weight_kc, bias)
        return dx, dweight, dbias, dcontext, None


def kernel_applies(x: Tensor) -> bool:
    """Whether :func:`causal_conv_silu` may take the CPU kernel for ``x`` (before trying to build it)."""
    return (x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64)
            and not torch.compiler.is_compiling())


def causal_conv_silu(x: Tensor, weight: Tensor, bias: Tensor | None, context: Tensor,
                     use_kernel: bool = True) -> Tensor:
    """silu(causal depthwise conv1d) of x (b, l, c), as :func:`causal_conv_silu_ref`, by the CPU kernel when
    ``use_kernel`` and it applies (:func:`kernel_applies`) and builds, else by the reference."""
    kernel = cpu_kernel() if use_kernel and kernel_applies(x) else None
    if kernel is None:
        return causal_conv_silu_ref(x, weight, bias, context)
    c, k = weight.shape[0], weight.shape[-1]
    if x.stride(-1) != 1:
        x = x.contiguous()
    weight_kc = weight.reshape(c, k).t().contiguous()
    bias = weight.new_zeros(c) if bias is None else bias
    context_kc = context.to(x.dtype).transpose(1, 2).contiguous()
    return _CausalConvSiLU.apply(x, weight_kc, bias.contiguous(), context_kc, kernel)
