"""The Transformer baseline block (DESIGN.md §1.7): the same layout, width and depth, attention instead of SSM.

Pre-norm, bidirectional ``scaled_dot_product_attention`` then a GELU MLP, each
modulated per position like :class:`mdm.nn.mamba2.MambaBlock` (adaLN with
shift, scale, gate), as in DiT / PixArt. This is the MonoFormer-style
end-to-end Transformer the paper compares against (Table 3, Fig. 5).

Shape letters: ``b`` batch, ``l`` length, ``d`` d_model, ``h`` heads, ``p`` head_dim.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mdm.nn.embeddings import modulate, per_position


class SelfAttention(nn.Module):
    """Multi-head bidirectional self-attention, (b, l, d) -> (b, l, d)."""

    def __init__(self, d_model: int, head_dim: int = 64) -> None:
        super().__init__()
        if d_model % head_dim:
            raise ValueError(f"SelfAttention: d_model {d_model} is not a multiple of head_dim {head_dim}")
        self.n_heads, self.head_dim = d_model // head_dim, head_dim
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out_proj = nn.Linear(d_model, d_model)

    def forward(self, x: Tensor) -> Tensor:
        b, l, d = x.shape
        q, k, v = self.qkv(x).view(b, l, 3, self.n_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v)  # (b, h, l, p)
        return self.out_proj(y.transpose(1, 2).reshape(b, l, d))


class TransformerBlock(nn.Module):
    """``h += gate1 * attn(mod(norm h)); h += gate2 * mlp(mod(norm h))`` with per-position adaLN."""

    n_modulation = 6

    def __init__(self, d_model: int, head_dim: int = 64, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.norm1 = nn.RMSNorm(d_model, elementwise_affine=False, eps=1e-6)
        self.attn = SelfAttention(d_model, head_dim)
        self.norm2 = nn.RMSNorm(d_model, elementwise_affine=False, eps=1e-6)
        hidden = int(d_model * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(d_model, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, d_model))
        self.modulation_table = nn.Parameter(torch.randn(self.n_modulation, d_model) / math.sqrt(d_model))

    def forward(self, h: Tensor, modulation: Tensor, levels: Tensor) -> Tensor:
        """h: (b, l, d); modulation: (u, 6, d) per noise level; levels: (b, l) the level of each position."""
        shift1, scale1, gate1, shift2, scale2, gate2 = per_position(modulation + self.modulation_table, levels).unbind(-2)
        h = h + gate1 * self.attn(modulate(self.norm1(h), shift1, scale1))
        return h + gate2 * self.mlp(modulate(self.norm2(h), shift2, scale2))
