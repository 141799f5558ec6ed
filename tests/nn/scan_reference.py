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
