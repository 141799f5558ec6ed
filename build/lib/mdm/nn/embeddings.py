"""Embeddings of noise level and position, and the per-position modulation (DESIGN.md §1.3).

A single TIME token is weak conditioning for a causal scan (positions before it
never see it), so, as DiM does after PixArt-alpha's adaLN-single, every position
is also modulated (shift, scale, gate) by the embedding of its own noise level.
One shared MLP maps the noise level to ``k * d_model`` numbers; each block adds
its own learned ``(k, d_model)`` table (PixArt's ``scale_shift_table``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def sinusoidal_embedding(t: Tensor, dim: int, max_period: float = 10_000.0) -> Tensor:
    """(...,) -> (..., dim): the transformer sinusoid of a (possibly fractional) timestep.

    Timesteps are in the scheduler's units (0 .. num_train_timesteps), as in DDPM/DiT.
    Computed in float32 at least: float16 loses the high frequencies.
    """
    half = dim // 2
    dtype = torch.float64 if t.dtype == torch.float64 else torch.float32
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=dtype, device=t.device) / half)
    args = t.to(dtype)[..., None] * freqs
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.nn.functional.pad(emb, (0, 1))
    return emb


class TimestepEmbedder(nn.Module):
    """Noise level -> d_model vector: sinusoid then a SiLU MLP (DiT)."""

    def __init__(self, d_model: int, frequency_dim: int = 256) -> None:
        super().__init__()
        self.frequency_dim = frequency_dim
        self.mlp = nn.Sequential(nn.Linear(frequency_dim, d_model), nn.SiLU(), nn.Linear(d_model, d_model))

    def forward(self, t: Tensor) -> Tensor:
        return self.mlp(sinusoidal_embedding(t, self.frequency_dim).to(self.mlp[0].weight.dtype))


def sincos_position_embedding(length: int, dim: int, device: torch.device | str | None = None) -> Tensor:
    """(length, dim) fixed 1-D sin/cos embedding of canonical positions.

    The attention baseline needs it (attention is blind to order); the Mamba
    backbone gets it too so that the two differ only in the block.
    """
    return sinusoidal_embedding(torch.arange(length, device=device, dtype=torch.float32), dim)


def grid_position_embedding(coords: Tensor, dim: int) -> Tensor:
    """(L, 3) (frame, row, col), -1 off the grid -> (L, dim): where a token sits in its image or clip.

    Half the channels embed the row and half the column (the 2-D sin/cos of
    DiT/MAE), and a 1-D sin/cos of the frame is added over all of them (Latte's
    spatial plus temporal embedding). Positions off the grid get zeros. A scan
    reads a frame as one line, so without this a block has to count tokens to
    know that two of them are the same place one frame apart, or one row apart.
    """
    on = (coords >= 0).all(-1, keepdim=True)
    c = coords.clamp(min=0).float()
    half = dim // 2
    spatial = torch.cat([sinusoidal_embedding(c[:, 1], half), sinusoidal_embedding(c[:, 2], dim - half)], dim=-1)
    return (spatial + sinusoidal_embedding(c[:, 0], dim)) * on


class AdaLNSingle(nn.Module):
    """Shared map from a time embedding to ``n_params`` modulation vectors per position.

    The output layer starts at zero, so every block's modulation starts as its
    own table, and the network at initialisation does not depend on t.
    """

    def __init__(self, d_model: int, n_params: int) -> None:
        super().__init__()
        self.n_params = n_params
        self.linear = nn.Linear(d_model, n_params * d_model)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, t_emb: Tensor) -> Tensor:
        """(..., d) -> (..., n_params, d)."""
        return self.linear(nn.functional.silu(t_emb)).unflatten(-1, (self.n_params, -1))


def per_position(table: Tensor, levels: Tensor) -> Tensor:
    """``table[levels]`` for a (u, ...) table and (b, l) indices, as an embedding lookup.

    Same values as advanced indexing; the backward is an embedding gradient
    instead of an accumulating ``index_put``, which is several times slower on CPU.
    """
    return F.embedding(levels, table.flatten(1)).unflatten(-1, table.shape[1:])


def modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    """adaLN: ``x * (1 + scale) + shift``."""
    return torch.addcmul(shift, x, 1 + scale)
