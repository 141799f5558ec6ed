"""The residual adaLN wrapper (mdm.nn.adaln_block) under all three block types: the written-out step, its
gradients, the zero gate, the parameter names and the random stream of the init."""

import math

import pytest
import torch

from mdm.nn.adaln_block import AdaLNBlock
from mdm.nn.bimamba2 import BiMambaBlock, BidirectionalMamba2Mixer
from mdm.nn.mamba2 import Mamba2Mixer, MambaBlock
from mdm.nn.transformer import SelfAttention, TransformerBlock

F64 = torch.float64
D = 16
SSM = {"d_state": 8, "head_dim": 8, "chunk_size": 8}
BLOCKS = {
    "mamba2": lambda: MambaBlock(D, **SSM),
    "mamba2-segments": lambda: MambaBlock(D, segment_len=4, **SSM),  # 13 positions in four pieces
    "bimamba2": lambda: BiMambaBlock(D, **SSM),
    "transformer": lambda: TransformerBlock(D, head_dim=8),
}


def _inputs(block: AdaLNBlock, length: int = 13, n_levels: int = 3):
    g = torch.Generator().manual_seed(3)
    h = torch.randn(2, length, D, generator=g, dtype=F64, requires_grad=True)
    modulation = (0.5 * torch.randn(n_levels, block.n_modulation, D, generator=g, dtype=F64)).requires_grad_()
    levels = torch.randint(0, n_levels, (2, length), generator=g)
    return h, modulation, levels


def _reference(block: AdaLNBlock, h: torch.Tensor, modulation: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
    """``h <- h + gate_i * f_i(norm(h) * (1 + scale_i) + shift_i)`` written out, with advanced indexing for the
    per-position lookup and the RMS norm by hand."""
    params = (modulation + block.modulation_table)[levels]  # (b, l, k, d)
    for i, name in enumerate(block.sublayer_names):
        shift, scale, gate = params[..., 3 * i, :], params[..., 3 * i + 1, :], params[..., 3 * i + 2, :]
        normed = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + 1e-6)
        h = h + gate * getattr(block, name)(normed * (1 + scale) + shift)
    return h


@pytest.mark.parametrize("kind", list(BLOCKS))
def test_block_equals_the_written_out_residual_steps_with_gradients(kind):
    torch.manual_seed(0)
    block = BLOCKS[kind]().double()
    h, modulation, levels = _inputs(block)
    out = block(h, modulation, levels)
    ref = _reference(block, h, modulation, levels)
    torch.testing.assert_close(out, ref, rtol=1e-9, atol=1e-10)

    leaves = [h, modulation, block.modulation_table]
    cotangent = torch.randn_like(out)  # one shared random cotangent
    grads = torch.autograd.grad(out, leaves, cotangent)
    grads_ref = torch.autograd.grad(ref, leaves, cotangent)
    for g, g_ref in zip(grads, grads_ref):
        torch.testing.assert_close(g, g_ref, rtol=1e-8, atol=1e-9)  # 10x the output tolerance


@pytest.mark.parametrize("kind", list(BLOCKS))
def test_a_zero_gate_makes_every_block_the_identity(kind):
    torch.manual_seed(0)
    block = BLOCKS[kind]().double()
    h, modulation, levels = _inputs(block)
    with torch.no_grad():
        gates = list(range(2, block.n_modulation, 3))
        modulation[:, gates] = -block.modulation_table[gates]
        assert torch.equal(block(h, modulation, levels), h)
        modulation[1, gates[-1]] += 1.0  # open the last gate at level 1 only: positions at that level move
        moved = (block(h, modulation, levels) - h).abs().amax(-1) > 0
    assert torch.equal(moved, levels == 1)


def test_parameters_are_the_sublayers_and_one_table_drawn_after_them():
    """The wrapper adds only ``modulation_table`` to its sublayers' parameters, and draws it from the random
    stream after them: the names and the init of the blocks' public state dicts."""
    cases = [
        (lambda: MambaBlock(D, **SSM), lambda: {"mixer": Mamba2Mixer(D, **SSM)}, 3),
        (lambda: BiMambaBlock(D, **SSM), lambda: {"mixer": BidirectionalMamba2Mixer(D, **SSM)}, 3),
        (lambda: TransformerBlock(D, head_dim=8),
         lambda: {"attn": SelfAttention(D, 8), "mlp": torch.nn.Sequential(
             torch.nn.Linear(D, 4 * D), torch.nn.GELU(approximate="tanh"), torch.nn.Linear(4 * D, D))}, 6),
    ]
    for make_block, make_sublayers, k in cases:
        torch.manual_seed(0)
        block = make_block()
        torch.manual_seed(0)
        sublayers = make_sublayers()
        table = torch.randn(k, D) / math.sqrt(D)
        expected = {"modulation_table": table} | {f"{name}.{key}": value for name, layer in sublayers.items()
                                                  for key, value in layer.state_dict().items()}
        state = block.state_dict()
        assert list(state)[0] == "modulation_table" and block.n_modulation == k
        assert state.keys() == expected.keys()
        for key, value in expected.items():
            assert torch.equal(state[key], value), key


def test_fused_and_rounded_residuals_differ_only_in_rounding():
    torch.manual_seed(0)
    fused = AdaLNBlock(D, {"mlp": torch.nn.Linear(D, D)})
    rounded = AdaLNBlock(D, {"mlp": torch.nn.Linear(D, D)}, fused_residual=False)
    rounded.load_state_dict(fused.state_dict())
    h, modulation, levels = torch.randn(2, 9, D), torch.randn(2, 3, D), torch.randint(0, 2, (2, 9))
    with torch.no_grad():
        torch.testing.assert_close(fused(h, modulation, levels), rounded(h, modulation, levels))  # float32 default


def test_a_block_needs_a_sublayer():
    with pytest.raises(ValueError, match="at least one sublayer"):
        AdaLNBlock(D, {})
