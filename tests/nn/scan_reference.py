"""The conv + SSD pass of a Mamba-2 mixer written out, the reference both mixers' tests compare against."""

import torch
import torch.nn.functional as F

from mdm.nn.mamba2 import CausalScan, Mamba2Base
from mdm.nn.ssd import ssd_ref


def conv_ssd_ref(mixer: Mamba2Base, scan: CausalScan, xBC: torch.Tensor, dt: torch.Tensor) -> torch.Tensor:
    """One causal pass written out: left-padded depthwise conv, SiLU, and the sequential scan ``ssd_ref``."""
    d_inner, g, n, h = mixer.d_inner, mixer.n_groups, mixer.d_state, mixer.n_heads
    k = scan.conv1d.weight.shape[-1]
    conv = F.conv1d(F.pad(xBC.transpose(1, 2), (k - 1, 0)), scan.conv1d.weight, scan.conv1d.bias,
                    groups=xBC.shape[-1])
    x, B, C = torch.split(F.silu(conv).transpose(1, 2), [d_inner, g * n, g * n], dim=-1)
    b, l = x.shape[:2]
    y, _ = ssd_ref(x.reshape(b, l, h, -1), F.softplus(dt + scan.dt_bias), -torch.exp(scan.A_log),
                   B.reshape(b, l, g, n), C.reshape(b, l, g, n), scan.D, discretization=mixer.discretization)
    return y.reshape(b, l, d_inner)


def ssd_inputs(length: int, dtype: torch.dtype, b: int = 2, h: int = 4, p: int = 8, g: int = 2, n: int = 6,
               seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Random (x, dt, A, B, C, D, initial_state) of an SSD scan: dt a softplus, A negative, so the decays are real."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(b, length, h, p, generator=gen, dtype=dtype)
    dt = F.softplus(torch.randn(b, length, h, generator=gen, dtype=dtype) - 1)
    A = -torch.rand(h, generator=gen, dtype=dtype) * 4 - 0.5
    B = torch.randn(b, length, g, n, generator=gen, dtype=dtype)
    C = torch.randn(b, length, g, n, generator=gen, dtype=dtype)
    D = torch.randn(h, generator=gen, dtype=dtype)
    start = torch.randn(b, h, p, n, generator=gen, dtype=dtype)
    return x, dt, A, B, C, D, start
