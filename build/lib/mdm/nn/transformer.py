"""The Transformer baseline block (DESIGN.md §1.7): the same layout, width and depth, attention instead of SSM.

Pre-norm, bidirectional ``scaled_dot_product_attention`` then a GELU MLP, each a
residual step of the adaLN wrapper the Mamba blocks use too
(:class:`mdm.nn.adaln_block.AdaLNBlock`: shift, scale, gate), as in DiT / PixArt.
This is the MonoFormer-style end-to-end Transformer the paper compares against
(Table 3, Fig. 5).

Shape letters: ``b`` batch, ``l`` length, ``d`` d_model, ``h`` heads, ``p`` head_dim.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from mdm.nn.adaln_block import AdaLNBlock


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


class TransformerBlock(AdaLNBlock):
    """``h += gate1 * attn(mod(norm h)); h += gate2 * mlp(mod(norm h))`` with per-position adaLN (6 vectors)."""

    def __init__(self, d_model: int, head_dim: int = 64, mlp_ratio: float = 4.0) -> None:
        hidden = int(d_model * mlp_ratio)
        super().__init__(d_model, {
            "attn": SelfAttention(d_model, head_dim),
            "mlp": nn.Sequential(nn.Linear(d_model, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, d_model)),
        }, fused_residual=False)
