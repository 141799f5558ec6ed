"""Parameter and FLOP counts of a backbone, from its config alone (no allocation).

FLOPs count multiply-adds of matrix products as 2 (the usual convention, the
one ``torch.utils.flop_counter`` uses); element-wise work (exp, masks, norms) is
left out, which is why the SSD reaches a small share of matmul peak even when
it is fast (DESIGN.md §1.5). A test ties these formulas to FlopCounterMode.
"""

from __future__ import annotations

import torch

from mdm.config import BackboneConfig, BackboneKind
from mdm.nn.ssd import balanced_chunk


def ssd_flops_per_token(n_heads: int, head_dim: int, n_groups: int, d_state: int, chunk_size: int) -> int:
    """Matmul FLOPs per position of the chunked SSD (see ``ssd._ssd_chunks`` steps 1-4)."""
    s, p, n = chunk_size, head_dim, d_state
    cb = 2 * s * n * n_groups  # 1. C B^T, once per group
    intra = 2 * s * p * n_heads  # 1. (CB * L) @ x
    states = 2 * p * n * n_heads  # 2. chunk states
    readout = 2 * p * n * n_heads  # 4. C @ state
    return cb + intra + states + readout


def ssd_flops(length: int, n_heads: int, head_dim: int, n_groups: int, d_state: int, chunk_size: int,
              segment_len: int, ssd_segment_len: int = 2048) -> int:
    """Matmul FLOPs the chunked SSD really computes for ``length`` inputs: a block runs
    segments of ``segment_len``, the scan splits those into segments of ``ssd_segment_len``
    (rounded down to whole chunks) and cuts each into balanced chunks (``ssd.balanced_chunk``),
    padding included."""
    inner = max(ssd_segment_len - ssd_segment_len % chunk_size, chunk_size)
    total = 0
    for start in range(0, length, segment_len):
        outer = min(segment_len, length - start)
        for s in range(0, outer, inner):
            n = min(inner, outer - s)
            chunk = balanced_chunk(n, chunk_size)
            total += -(-n // chunk) * chunk * ssd_flops_per_token(n_heads, head_dim, n_groups, d_state, chunk)
    return total


def block_flops_per_token(config: BackboneConfig, seq_len: int) -> float:
    """Matmul (and convolution) FLOPs of one block per position, at sequence length ``seq_len``
    (the SSD's chunk padding included, so it may be fractional)."""
    d = config.d_model
    if config.kind.scans:  # a bidirectional block has one in/out projection and two convs and scans
        scans = 2 if config.kind is BackboneKind.BIMAMBA2 else 1
        d_inner = config.expand * d
        n_heads = d_inner // config.head_dim
        in_proj = d * (2 * d_inner + 2 * config.n_groups * config.d_state + n_heads)
        conv = (d_inner + 2 * config.n_groups * config.d_state) * config.d_conv
        block_segment = config.segment_len if config.kind is BackboneKind.MAMBA2 else max(seq_len, 1)
        ssd = ssd_flops(seq_len, n_heads, config.head_dim, config.n_groups, config.d_state, config.chunk_size,
                        block_segment)
        return 2 * (in_proj + d_inner * d + scans * conv) + scans * ssd / seq_len
    hidden = int(d * config.mlp_ratio)
    linear = 3 * d * d + d * d + 2 * d * hidden
    attention = 4 * seq_len * d  # Q K^T and A V
    return 2 * linear + attention


def backbone_flops_per_token(config: BackboneConfig, seq_len: int) -> float:
    """All blocks plus the long-skip projections, per position (embeddings and adaLN excluded)."""
    skips = (config.n_layers // 2) * 2 * (2 * config.d_model * config.d_model) if config.long_skips else 0
    return config.n_layers * block_flops_per_token(config, seq_len) + skips


def count_parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
