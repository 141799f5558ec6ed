"""DiM's bidirectional Mamba-2 block (DESIGN.md §5; seed: "Scaling Diffusion Mamba with Bidirectional SSMs").

A causal scan sees only what comes before a position. Diffusion denoises a whole
image or clip at once, so DiM runs the SSD scan both ways in every block:

    (z, xBC, dt) = in_proj(u)                         shared by the two directions
    y_fwd = SSD_fwd(silu(conv_fwd(xBC)), dt)          left -> right
    y_bwd = flip(SSD_bwd(silu(conv_bwd(flip(xBC))), flip(dt)))   right -> left
    out   = out_proj(GatedRMSNorm((y_fwd + y_bwd) / 2, z))

The input projection (and the gate ``z``) is shared, and each direction has its
own depthwise conv, ``dt_bias``, ``A_log`` and ``D``, as the common
bidirectional-Mamba block does (Vision Mamba's "v2" block); the two outputs are
averaged before the gated norm and the output projection, so one block costs one
``in_proj``/``out_proj`` and two scans. Why average rather than sum: at init the
two scans are identically distributed, and the mean keeps the block's output
scale that of a one-way Mamba-2 block, so the adaLN gates need no retuning.

The same residual adaLN wrapper as every block type (:class:`mdm.nn.adaln_block.AdaLNBlock`).
The whole sequence is scanned at once: ``backbone.segment_len`` does not apply
here (the backward scan would have to take its pieces from the end), which
forgoes :class:`MambaBlock`'s piecewise speed-up on sequences of 16K+ tokens.

Shape letters as in :mod:`mdm.nn.mamba2`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mdm.nn.adaln_block import AdaLNBlock
from mdm.nn.mamba2 import GatedRMSNorm, init_ssm_parameters
from mdm.nn.ssd import Discretization, ssd


class _Direction(nn.Module):
    """What one scan direction owns: its depthwise causal conv and its SSM parameters (dt bias, A, D)."""

    def __init__(self, conv_dim: int, n_heads: int, d_conv: int, dt_min: float, dt_max: float,
                 dt_init_floor: float, A_init_range: tuple[float, float]) -> None:
        super().__init__()
        self.conv1d = nn.Conv1d(conv_dim, conv_dim, d_conv, groups=conv_dim, padding=d_conv - 1, bias=True)
        self.dt_bias = nn.Parameter(torch.empty(n_heads))
        self.A_log = nn.Parameter(torch.empty(n_heads))
        self.D = nn.Parameter(torch.empty(n_heads))
        init_ssm_parameters(self.dt_bias, self.A_log, self.D, dt_min, dt_max, dt_init_floor, A_init_range)


class BidirectionalMamba2Mixer(nn.Module):
    """(b, l, d_model) -> (b, l, d_model); every output position depends on every input position.

    Args: as :class:`mdm.nn.mamba2.Mamba2Mixer` (``d_state``, ``d_conv``, ``expand``,
    ``head_dim``, ``n_groups``, ``chunk_size``, ``discretization``, the dt/A init ranges).
    """

    def __init__(self, d_model: int, d_state: int = 64, d_conv: int = 4, expand: int = 2, head_dim: int = 64,
                 n_groups: int = 1, chunk_size: int = 64, discretization: Discretization | str = Discretization.ZOH,
                 dt_min: float = 1e-3, dt_max: float = 0.1, dt_init_floor: float = 1e-4,
                 A_init_range: tuple[float, float] = (1.0, 16.0), norm_eps: float = 1e-5) -> None:
        super().__init__()
        d_inner = expand * d_model
        if d_inner % head_dim:
            raise ValueError(f"BidirectionalMamba2Mixer: expand * d_model = {d_inner} is not a multiple of "
                             f"head_dim {head_dim}")
        n_heads = d_inner // head_dim
        if n_heads % n_groups:
            raise ValueError(f"BidirectionalMamba2Mixer: n_heads = {n_heads} is not a multiple of n_groups {n_groups}")
        self.d_model, self.d_state, self.d_conv, self.d_inner = d_model, d_state, d_conv, d_inner
        self.head_dim, self.n_heads, self.n_groups, self.chunk_size = head_dim, n_heads, n_groups, chunk_size
        self.discretization = Discretization(discretization)
        conv_dim = d_inner + 2 * n_groups * d_state
        self.in_proj = nn.Linear(d_model, 2 * d_inner + 2 * n_groups * d_state + n_heads, bias=False)
        self.forward_scan = _Direction(conv_dim, n_heads, d_conv, dt_min, dt_max, dt_init_floor, A_init_range)
        self.backward_scan = _Direction(conv_dim, n_heads, d_conv, dt_min, dt_max, dt_init_floor, A_init_range)
        self.norm = GatedRMSNorm(d_inner, group_size=d_inner // n_groups, eps=norm_eps)
        self.out_proj = nn.Linear(d_inner, d_model, bias=False)

    def _scan(self, direction: _Direction, xBC: Tensor, dt: Tensor, f32: torch.dtype) -> Tensor:
        """One causal pass over (b, l, conv_dim) inputs -> (b, l, d_inner)."""
        b, l, _ = xBC.shape
        g, n = self.n_groups, self.d_state
        # Left padding only: the causal outputs, without the d_conv - 1 the layer's symmetric padding adds at the end.
        conv = direction.conv1d
        xBC = F.pad(xBC.transpose(1, 2), (self.d_conv - 1, 0))
        xBC = F.silu(F.conv1d(xBC, conv.weight, conv.bias, groups=conv.groups).transpose(1, 2))
        x, B, C = torch.split(xBC, [self.d_inner, g * n, g * n], dim=-1)
        A = -torch.exp(direction.A_log.to(f32))
        dt = F.softplus(dt.to(f32) + direction.dt_bias.to(f32))
        y, _ = ssd(x.reshape(b, l, self.n_heads, self.head_dim).to(f32), dt, A, B.reshape(b, l, g, n).to(f32),
                   C.reshape(b, l, g, n).to(f32), direction.D.to(f32), discretization=self.discretization,
                   chunk_size=self.chunk_size)
        return y.reshape(b, l, self.d_inner)

    def forward(self, u: Tensor) -> Tensor:
        if u.dim() != 3 or u.shape[-1] != self.d_model:
            raise ValueError(f"BidirectionalMamba2Mixer: expected input (batch, length, {self.d_model}), "
                             f"got {tuple(u.shape)}")
        if u.shape[1] == 0:
            return u.new_zeros(u.shape)
        z, xBC, dt = torch.split(self.in_proj(u), [self.d_inner, self.d_inner + 2 * self.n_groups * self.d_state,
                                                   self.n_heads], dim=-1)
        f32 = torch.float32 if u.dtype in (torch.float16, torch.bfloat16) else u.dtype  # scans accumulate in >= fp32
        y_fwd = self._scan(self.forward_scan, xBC, dt, f32)
        y_bwd = self._scan(self.backward_scan, xBC.flip(1), dt.flip(1), f32).flip(1)
        return self.out_proj(self.norm((0.5 * (y_fwd + y_bwd)).to(u.dtype), z))


class BiMambaBlock(AdaLNBlock):
    """Pre-norm residual bidirectional block with per-position adaLN (the interface of
    :class:`mdm.nn.mamba2.MambaBlock`, without its segments)."""

    def __init__(self, d_model: int, **mixer_kwargs) -> None:
        super().__init__(d_model, {"mixer": BidirectionalMamba2Mixer(d_model, **mixer_kwargs)})
