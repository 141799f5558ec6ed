"""The Mamba-2 mixer (Dao & Gu 2024) as MDM's denoising block uses it (Sec 4.2.1, Eq. 10-13).

``in_proj -> (z, x, B, C, dt)``; a depthwise causal conv1d over (x, B, C); SiLU;
the SSD scan (:mod:`mdm.nn.ssd`) with ``A = -exp(A_log)``,
``dt = softplus(dt + dt_bias)`` and a D skip; a gated RMSNorm; ``out_proj``.
The widths, the ``in_proj`` split and the conv + SSD pass live in
:class:`Mamba2Base`, which the bidirectional mixer (:mod:`mdm.nn.bimamba2`) shares.

Parameter names, shapes and the ``in_proj`` split order (z, x, B, C, dt) are
those of the public Mamba-2 (``mamba_ssm.modules.mamba2.Mamba2``), so its
state dicts load with :meth:`Mamba2Mixer.load_state_dict` and give the same
output (with ``discretization="euler"``, the rule those weights were trained with).

Shape letters: ``b`` batch, ``l`` length, ``d`` d_model, ``h`` n_heads,
``p`` head_dim, ``g`` n_groups, ``n`` d_state.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mdm.nn.adaln_block import AdaLNBlock
from mdm.nn.causal_conv import causal_conv_silu
from mdm.nn.embeddings import per_position
from mdm.nn.ssd import Discretization, ssd


class MixerState(NamedTuple):
    """What a Mamba-2 mixer carries from one segment of a sequence to the next."""

    conv: Tensor  # (b, conv_dim, d_conv - 1): the last inputs of the causal convolution
    ssm: Tensor  # (b, n_heads, head_dim, d_state): the SSM state H of Eq. 10


class GatedRMSNorm(nn.Module):
    """``RMSNorm(y * silu(z)) * weight``, normalised per group of ``group_size`` channels.

    The gate is applied before the norm, as in the public Mamba-2 (its
    ``norm_before_gate=False``): that is the order its weights expect.
    """

    def __init__(self, d: int, group_size: int, eps: float = 1e-5) -> None:
        super().__init__()
        if d % group_size:
            raise ValueError(f"GatedRMSNorm: width {d} is not a multiple of group_size {group_size}")
        self.weight = nn.Parameter(torch.ones(d))
        self.group_size, self.eps = group_size, eps

    def forward(self, y: Tensor, z: Tensor) -> Tensor:
        dtype = y.dtype
        y = (y * F.silu(z)).to(torch.promote_types(dtype, torch.float32))  # at least fp32, float64 kept
        y = y.unflatten(-1, (-1, self.group_size))
        y = y * torch.rsqrt(y.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * y.flatten(-2).to(dtype)


@torch.no_grad()
def init_ssm_parameters(dt_bias: Tensor, A_log: Tensor, D: Tensor, dt_min: float = 1e-3, dt_max: float = 0.1,
                        dt_init_floor: float = 1e-4, A_init_range: tuple[float, float] = (1.0, 16.0)) -> None:
    """The public Mamba-2 init of one scan's (n_heads,) parameters, in place: dt log-uniform in
    [dt_min, dt_max] (stored as its softplus inverse), A uniform in A_init_range, D = 1."""
    n_heads = dt_bias.numel()
    dt = torch.exp(torch.rand(n_heads, dtype=torch.float64) * (math.log(dt_max) - math.log(dt_min))
                   + math.log(dt_min)).clamp(min=dt_init_floor)
    dt_bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # inverse of softplus
    A_log.copy_(torch.log(torch.empty(n_heads, dtype=torch.float64).uniform_(*A_init_range)))
    D.fill_(1.0)


class CausalScan(Protocol):
    """The parameters of one causal conv + SSD pass (:meth:`Mamba2Base.conv_ssd`)."""

    conv1d: nn.Conv1d  # depthwise over the conv_dim channels of (x, B, C)
    dt_bias: Tensor  # (n_heads,)
    A_log: Tensor  # (n_heads,): A = -exp(A_log) < 0
    D: Tensor  # (n_heads,): the skip of Eq. 11


class Mamba2Base(nn.Module):
    """What the one-way and the bidirectional Mamba-2 mixers share: their widths, the ``in_proj`` split and the
    causal conv + SSD pass. A subclass builds its own parameters, in the order (and so the random stream) of
    its public layout.

    Args:
        d_model: width of the residual stream.
        d_state: N, the size of each head's state (B, C width per group).
        d_conv: width of the causal depthwise convolution.
        expand: d_inner = expand * d_model.
        head_dim: P; n_heads = d_inner / head_dim.
        n_groups: groups of heads sharing B and C.
        chunk_size: the longest SSD chunk (64 is fastest on CPU; see ``ssd_chunked``).
        discretization: ``zoh`` (Eq. 12-13, the paper) or ``euler`` (public checkpoints).
        cpu_kernels: the causal conv + SiLU and the SSD scan by their C++ kernels on CPU
            (:mod:`mdm.nn.cpu_kernels`; same results up to rounding).
    """

    def __init__(self, d_model: int, d_state: int, d_conv: int, expand: int, head_dim: int, n_groups: int,
                 chunk_size: int, discretization: Discretization | str, cpu_kernels: bool = True) -> None:
        super().__init__()
        name = type(self).__name__
        d_inner = expand * d_model
        if d_inner % head_dim:
            raise ValueError(f"{name}: expand * d_model = {d_inner} is not a multiple of head_dim {head_dim}")
        n_heads = d_inner // head_dim
        if n_heads % n_groups:
            raise ValueError(f"{name}: n_heads = {n_heads} is not a multiple of n_groups {n_groups}")
        self.d_model, self.d_state, self.d_conv, self.d_inner = d_model, d_state, d_conv, d_inner
        self.head_dim, self.n_heads, self.n_groups = head_dim, n_heads, n_groups
        self.chunk_size, self.cpu_kernels = chunk_size, cpu_kernels
        self.discretization = Discretization(discretization)
        self.conv_dim = d_inner + 2 * n_groups * d_state  # the channels of (x, B, C)
        self.in_proj_dim = 2 * d_inner + 2 * n_groups * d_state + n_heads  # (z, x, B, C, dt)

    def _check_input(self, u: Tensor) -> None:
        """Refuse anything but a (b, l, d_model) input, naming the mixer and the width it expects."""
        if u.dim() != 3 or u.shape[-1] != self.d_model:
            raise ValueError(f"{type(self).__name__}: expected input (batch, length, {self.d_model}), "
                             f"got {tuple(u.shape)}")

    def split_projection(self, zxbcdt: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``in_proj``'s (b, l, in_proj_dim) output -> the gate z (b, l, d_inner), the conv input xBC
        (b, l, conv_dim) and the raw step dt (b, l, h), in the public Mamba-2 order."""
        z, xBC, dt = torch.split(zxbcdt, [self.d_inner, self.conv_dim, self.n_heads], dim=-1)
        return z, xBC, dt

    def conv_ssd(self, scan: CausalScan, xBC: Tensor, dt: Tensor,
                 state: MixerState | None = None) -> tuple[Tensor, MixerState]:
        """One causal pass of ``scan`` over (b, l, conv_dim) inputs ``xBC`` with raw steps ``dt`` (b, l, h).

        Returns y (b, l, d_inner), in the scan's dtype (float32 for half-precision inputs), and the state after
        the last position; ``state`` continues a sequence from its previous segment (None = its start).
        """
        b, l, _ = xBC.shape
        g, n, k = self.n_groups, self.d_state, self.d_conv
        # 1. Causal depthwise conv (Sec 4.2.1): the last d_conv - 1 inputs of the previous segment
        #    (zeros at the start) stand in for the left padding; then SiLU.
        context = xBC.new_zeros(b, self.conv_dim, k - 1) if state is None else state.conv.to(xBC.dtype)
        # a copy, not a view: a view would keep the whole in_proj output alive with the state
        next_conv = (xBC[:, l - (k - 1):].transpose(1, 2).contiguous() if l >= k - 1
                     else torch.cat([context, xBC.transpose(1, 2)], dim=-1)[..., l:])
        xBC = causal_conv_silu(xBC, scan.conv1d.weight, scan.conv1d.bias, context,
                               cpu_kernel_ok=self.cpu_kernels)
        x, B, C = torch.split(xBC, [self.d_inner, g * n, g * n], dim=-1)
        # 2. The SSM parameters of Eq. 10-13, accumulated in >= float32.
        f32 = torch.float32 if xBC.dtype in (torch.float16, torch.bfloat16) else xBC.dtype
        A = -torch.exp(scan.A_log.to(f32))
        dt = F.softplus(dt.to(f32) + scan.dt_bias.to(f32))
        # 3. The SSD scan with the D skip (Eq. 10-11).
        y, ssm = ssd(x.reshape(b, l, self.n_heads, self.head_dim).to(f32), dt, A,
                     B.reshape(b, l, g, n).to(f32), C.reshape(b, l, g, n).to(f32), scan.D.to(f32),
                     initial_state=None if state is None else state.ssm,
                     discretization=self.discretization, chunk_size=self.chunk_size,
                     cpu_kernel_ok=self.cpu_kernels)
        return y.reshape(b, l, self.d_inner), MixerState(next_conv, ssm)


class Mamba2Mixer(Mamba2Base):
    """One Mamba-2 mixer: (b, l, d_model) -> (b, l, d_model), causal along l.

    Args: those of :class:`Mamba2Base`, and
        dt_min, dt_max, dt_init_floor, A_init_range: the public Mamba-2 initialisation.
        norm_eps: epsilon of the gated RMSNorm.
        device, dtype: where and how the parameters are made (``meta`` skips the SSM init).
    """

    def __init__(self, d_model: int, d_state: int = 64, d_conv: int = 4, expand: int = 2,
                 head_dim: int = 64, n_groups: int = 1, chunk_size: int = 64,
                 discretization: Discretization | str = Discretization.ZOH,
                 dt_min: float = 1e-3, dt_max: float = 0.1, dt_init_floor: float = 1e-4,
                 A_init_range: tuple[float, float] = (1.0, 16.0), norm_eps: float = 1e-5, cpu_kernels: bool = True,
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> None:
        super().__init__(d_model, d_state, d_conv, expand, head_dim, n_groups, chunk_size, discretization,
                         cpu_kernels)
        kw = {"device": device, "dtype": dtype}
        d_inner, conv_dim, n_heads = self.d_inner, self.conv_dim, self.n_heads
        self.in_proj = nn.Linear(d_model, self.in_proj_dim, bias=False, **kw)
        self.conv1d = nn.Conv1d(conv_dim, conv_dim, d_conv, groups=conv_dim, padding=d_conv - 1, bias=True, **kw)
        self.dt_bias = nn.Parameter(torch.empty(n_heads, **kw))
        self.A_log = nn.Parameter(torch.empty(n_heads, **kw))
        self.D = nn.Parameter(torch.empty(n_heads, **kw))
        self.norm = GatedRMSNorm(d_inner, group_size=d_inner // n_groups, eps=norm_eps)
        self.out_proj = nn.Linear(d_inner, d_model, bias=False, **kw)
        if self.A_log.device.type != "meta":
            self.reset_ssm_parameters(dt_min, dt_max, dt_init_floor, A_init_range)
        self.norm.to(**kw)

    def reset_ssm_parameters(self, dt_min: float = 1e-3, dt_max: float = 0.1, dt_init_floor: float = 1e-4,
                             A_init_range: tuple[float, float] = (1.0, 16.0)) -> None:
        """Public Mamba-2 init: dt log-uniform in [dt_min, dt_max], A uniform in A_init_range, D = 1."""
        init_ssm_parameters(self.dt_bias, self.A_log, self.D, dt_min, dt_max, dt_init_floor, A_init_range)

    def forward(self, u: Tensor, state: MixerState | None = None,
                return_state: bool = False) -> Tensor | tuple[Tensor, MixerState]:
        """u: (b, l, d_model) -> (b, l, d_model), continuing from ``state`` (None = start of sequence).

        With ``return_state`` also returns the state after the last position, so a
        long sequence can be processed in segments with exactly the same result.
        """
        self._check_input(u)
        b, l, _ = u.shape
        if l == 0:  # nothing to scan: the state passes through unchanged
            if state is None:
                state = MixerState(u.new_zeros(b, self.conv_dim, self.d_conv - 1),
                                   u.new_zeros(b, self.n_heads, self.head_dim, self.d_state))
            out = u.new_zeros(b, 0, self.d_model)
            return (out, state) if return_state else out
        z, xBC, dt = self.split_projection(self.in_proj(u))
        y, state = self.conv_ssd(self, xBC, dt, state)
        out = self.out_proj(self.norm(y.to(u.dtype), z))
        return (out, state) if return_state else out


class MambaBlock(AdaLNBlock):
    """Pre-norm residual Mamba-2 block with per-position adaLN (:class:`AdaLNBlock`):
    ``h + gate * mixer(modulate(norm(h), shift, scale))``.

    ``modulation`` (u, 3, d) holds (shift, scale, gate) for each of ``u`` noise
    levels and ``levels`` (b, l) the level of each position, in the order the block
    reads the sequence; the block adds its own table to the modulation.

    Sequences longer than ``segment_len`` are processed ``segment_len`` positions
    at a time with the mixer's state carried: exact (the block is causal), and
    every temporary stays small. Temporaries above ~32 MB are freshly mmapped by
    glibc and page-fault on every call, which made a whole-sequence pass about
    2x slower at 16-64K tokens on this project's CPU (DESIGN.md §1.5).
    """

    def __init__(self, d_model: int, segment_len: int = 2048, **mixer_kwargs) -> None:
        if segment_len < 1:
            raise ValueError(f"MambaBlock: segment_len must be >= 1, got {segment_len}")
        super().__init__(d_model, {"mixer": Mamba2Mixer(d_model, **mixer_kwargs)})
        self.segment_len = segment_len

    def forward(self, h: Tensor, modulation: Tensor, levels: Tensor) -> Tensor:
        if h.shape[1] <= self.segment_len:
            return super().forward(h, modulation, levels)
        modulation = modulation + self.modulation_table  # added once: the table's gradient is one sum
        out, state = [], None
        for start in range(0, h.shape[1], self.segment_len):
            h_piece = h[:, start:start + self.segment_len]  # one view: its two gradients sum before reaching h
            shift, scale, gate = per_position(modulation, levels[:, start:start + self.segment_len]).unbind(-2)
            y, state = self.mixer(self.modulated_input(h_piece, shift, scale), state, return_state=True)
            out.append(self.gated_residual(h_piece, gate, y))
        return torch.cat(out, dim=1)
