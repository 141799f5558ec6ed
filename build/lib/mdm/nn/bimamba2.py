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

Each direction runs the one-way mixer's conv + SSD pass
(:meth:`mdm.nn.mamba2.Mamba2Base.conv_ssd`), and the block is the residual adaLN
wrapper of every block type (:class:`mdm.nn.adaln_block.AdaLNBlock`). The whole
sequence is scanned at once: ``backbone.segment_len`` does not apply here (the
backward scan would have to take its pieces from the end), which forgoes
:class:`MambaBlock`'s piecewise speed-up on sequences of 16K+ tokens.

Shape letters as in :mod:`mdm.nn.mamba2`.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from mdm.nn.adaln_block import AdaLNBlock
from mdm.nn.mamba2 import GatedRMSNorm, Mamba2Base, init_ssm_parameters
from mdm.nn.ssd import Discretization


class ScanDirection(nn.Module):
    """What one scan direction owns (a :class:`mdm.nn.mamba2.CausalScan`): its depthwise causal conv and its
    SSM parameters (dt bias, A, D), initialised as the public Mamba-2's."""

    def __init__(self, conv_dim: int, n_heads: int, d_conv: int, dt_min: float, dt_max: float,
                 dt_init_floor: float, A_init_range: tuple[float, float]) -> None:
        super().__init__()
        self.conv1d = nn.Conv1d(conv_dim, conv_dim, d_conv, groups=conv_dim, padding=d_conv - 1, bias=True)
        self.dt_bias = nn.Parameter(torch.empty(n_heads))
        self.A_log = nn.Parameter(torch.empty(n_heads))
        self.D = nn.Parameter(torch.empty(n_heads))
        init_ssm_parameters(self.dt_bias, self.A_log, self.D, dt_min, dt_max, dt_init_floor, A_init_range)


class BidirectionalMamba2Mixer(Mamba2Base):
    """(b, l, d_model) -> (b, l, d_model); every output position depends on every input position.

    Args: as :class:`mdm.nn.mamba2.Mamba2Mixer` (``d_state``, ``d_conv``, ``expand``,
    ``head_dim``, ``n_groups``, ``chunk_size``, ``discretization``, the dt/A init ranges, ``cpu_kernels``).
    """

    def __init__(self, d_model: int, d_state: int = 64, d_conv: int = 4, expand: int = 2, head_dim: int = 64,
                 n_groups: int = 1, chunk_size: int = 64, discretization: Discretization | str = Discretization.ZOH,
                 dt_min: float = 1e-3, dt_max: float = 0.1, dt_init_floor: float = 1e-4,
                 A_init_range: tuple[float, float] = (1.0, 16.0), norm_eps: float = 1e-5,
                 cpu_kernels: bool = True) -> None:
        super().__init__(d_model, d_state, d_conv, expand, head_dim, n_groups, chunk_size, discretization,
                         cpu_kernels)
        direction = (self.conv_dim, self.n_heads, d_conv, dt_min, dt_max, dt_init_floor, A_init_range)
        self.in_proj = nn.Linear(d_model, self.in_proj_dim, bias=False)
        self.forward_scan = ScanDirection(*direction)
        self.backward_scan = ScanDirection(*direction)
        self.norm = GatedRMSNorm(self.d_inner, group_size=self.d_inner // n_groups, eps=norm_eps)
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=False)

    def forward(self, u: Tensor) -> Tensor:
        self._check_input(u)
        if u.shape[1] == 0:
            return u.new_zeros(u.shape)
        z, xBC, dt = self.split_projection(self.in_proj(u))
        y_fwd, _ = self.conv_ssd(self.forward_scan, xBC, dt)  # left -> right
        y_bwd, _ = self.conv_ssd(self.backward_scan, xBC.flip(1), dt.flip(1))  # right -> left, in flipped order
        return self.out_proj(self.norm((0.5 * (y_fwd + y_bwd.flip(1))).to(u.dtype), z))


class BiMambaBlock(AdaLNBlock):
    """Pre-norm residual bidirectional block with per-position adaLN (the interface of
    :class:`mdm.nn.mamba2.MambaBlock`, without its segments)."""

    def __init__(self, d_model: int, **mixer_kwargs) -> None:
        super().__init__(d_model, {"mixer": BidirectionalMamba2Mixer(d_model, **mixer_kwargs)})
