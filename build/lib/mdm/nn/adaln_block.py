"""The residual adaLN wrapper every backbone block is built on.

A block holds one or more sublayers ``f_i`` (a Mamba-2 mixer; attention then an
MLP) and applies each as a pre-norm residual step modulated per position: DiT's
adaLN (arXiv 2212.09748) with PixArt-alpha's adaLN-single table (arXiv 2310.00426),
as DiM conditions its Mamba blocks::

    h <- h + gate_i * f_i(norm(h) * (1 + scale_i) + shift_i)

``(shift_i, scale_i, gate_i)`` of every position is the row of its own noise
level in the shared modulation (:class:`mdm.nn.embeddings.AdaLNSingle`) plus the
block's learned ``modulation_table``. The shared map starts at zero, so at
initialisation a block's modulation is its table, the same at every noise level.

Shape letters: ``b`` batch, ``l`` length, ``d`` d_model, ``k`` modulation vectors
(3 a sublayer), ``u`` distinct noise levels in a batch.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from mdm.nn.embeddings import modulate, per_position


class AdaLNBlock(nn.Module):
    """Pre-norm residual sublayers with per-position adaLN: ``(b, l, d) -> (b, l, d)``.

    Args:
        d_model: width of the residual stream.
        sublayers: ``name -> (b, l, d) -> (b, l, d)`` module, applied in order; each is registered under its
            name, so the block's parameters are ``<name>.*`` and ``modulation_table``.
        fused_residual: add ``gate * y`` to ``h`` in one rounding (``torch.addcmul``), as the Mamba blocks do;
            False rounds the product first (``h + gate * y``), as the Transformer block and DiT write it. The
            two differ in the last bit, and each block type keeps the arithmetic its checkpoints were trained with.
    """

    def __init__(self, d_model: int, sublayers: dict[str, nn.Module], fused_residual: bool = True) -> None:
        super().__init__()
        if not sublayers:
            raise ValueError("AdaLNBlock: a block needs at least one sublayer")
        # One norm serves every sublayer: without affine weights it has no parameters of its own.
        self.norm = nn.RMSNorm(d_model, elementwise_affine=False, eps=1e-6)
        for name, sublayer in sublayers.items():
            self.add_module(name, sublayer)
        self.sublayer_names = tuple(sublayers)
        self.fused_residual = fused_residual
        self.n_modulation = 3 * len(sublayers)  # (shift, scale, gate) a sublayer
        # Drawn after the sublayers' own init, so the random stream of a block is theirs then the table's.
        self.modulation_table = nn.Parameter(torch.randn(self.n_modulation, d_model) / math.sqrt(d_model))

    def modulated_input(self, h: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
        """What a sublayer reads: ``norm(h) * (1 + scale) + shift``, all (b, l, d)."""
        return modulate(self.norm(h), shift, scale)

    def gated_residual(self, h: Tensor, gate: Tensor, y: Tensor) -> Tensor:
        """The residual update ``h + gate * y`` of a sublayer's output ``y``, all (b, l, d)."""
        return torch.addcmul(h, gate, y) if self.fused_residual else h + gate * y

    def position_modulation(self, modulation: Tensor, levels: Tensor) -> tuple[Tensor, ...]:
        """The ``k`` (b, l, d) modulation vectors of every position: its level's row of ``modulation`` (u, k, d)
        plus the block's table; ``levels`` (b, l) in the order the block reads the sequence."""
        return per_position(modulation + self.modulation_table, levels).unbind(-2)

    def forward(self, h: Tensor, modulation: Tensor, levels: Tensor) -> Tensor:
        """h: (b, l, d); modulation: (u, k, d) per noise level; levels: (b, l) the level of each position."""
        params = self.position_modulation(modulation, levels)
        for i, name in enumerate(self.sublayer_names):
            shift, scale, gate = params[3 * i:3 * i + 3]
            h = self.gated_residual(h, gate, getattr(self, name)(self.modulated_input(h, shift, scale)))
        return h
