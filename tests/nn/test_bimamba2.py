"""DiM's bidirectional Mamba-2 block (mdm.nn.bimamba2): both sides seen, equal to a slow reference, a backbone."""

import pytest
import torch

from mdm.config import BackboneConfig
from mdm.nn.backbone import Backbone
from mdm.nn.bimamba2 import BiMambaBlock, BidirectionalMamba2Mixer
from mdm.nn.layout import SegmentSpec
from mdm.nn.mamba2 import Mamba2Mixer
from scan_reference import conv_ssd_ref

F64 = torch.float64
KW = {"d_state": 8, "d_conv": 4, "expand": 2, "head_dim": 8, "chunk_size": 8}


def _input_gradient(mixer, length: int = 24, position: int = 12) -> torch.Tensor:
    """|d out[position] / d u[j]| summed over channels, for every j."""
    u = torch.randn(2, length, 16, dtype=F64, requires_grad=True)
    mixer(u)[:, position].sum().backward()
    return u.grad.abs().sum((0, 2))


def test_every_output_depends_on_tokens_before_and_after_it():
    grad = _input_gradient(BidirectionalMamba2Mixer(16, **KW).double())
    assert grad[:12].min() > 0 and grad[13:].min() > 0  # first and last tokens included
    # The same measurement on the one-way mixer sees nothing after the position: the test can fail.
    causal = _input_gradient(Mamba2Mixer(16, **KW).double())
    assert causal[:12].min() > 0 and causal[13:].max() == 0


def _reference(mixer: BidirectionalMamba2Mixer, u: torch.Tensor) -> torch.Tensor:
    """The block written out: one projection, two scans by the sequential SSD reference, averaged."""
    d_inner, g, n, h = mixer.d_inner, mixer.n_groups, mixer.d_state, mixer.n_heads
    z, xBC, dt = torch.split(mixer.in_proj(u), [d_inner, d_inner + 2 * g * n, h], dim=-1)
    outs = []
    for direction, flip in ((mixer.forward_scan, False), (mixer.backward_scan, True)):
        seq, dts = (xBC.flip(1), dt.flip(1)) if flip else (xBC, dt)
        y = conv_ssd_ref(mixer, direction, seq, dts)
        outs.append(y.flip(1) if flip else y)
    return mixer.out_proj(mixer.norm((outs[0] + outs[1]) / 2, z))


@pytest.mark.parametrize("length", [5, 24, 37])  # shorter than, a multiple of, and not a multiple of the chunk
def test_mixer_equals_the_sequential_reference(length):
    mixer = BidirectionalMamba2Mixer(16, **KW).double()
    u = torch.randn(2, length, 16, dtype=F64)
    torch.testing.assert_close(mixer(u), _reference(mixer, u), rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("length", [5, 37])
def test_mixer_without_a_gradient_equals_the_sequential_reference(length):
    """Sampling's path: no gradient, so on CPU both scans take the fused kernel where it builds."""
    mixer = BidirectionalMamba2Mixer(16, **KW).double()
    u = torch.randn(2, length, 16, dtype=F64)
    with torch.no_grad():
        out, ref = mixer(u), _reference(mixer, u)
    torch.testing.assert_close(out, ref, rtol=1e-9, atol=1e-10)


def test_mixer_gradients_equal_the_sequential_reference():
    mixer = BidirectionalMamba2Mixer(16, **KW).double()
    u = torch.randn(2, 29, 16, dtype=F64, requires_grad=True)
    out, ref = mixer(u), _reference(mixer, u)
    leaves = [u, *mixer.parameters()]
    cotangent = torch.randn_like(out)  # one shared random cotangent
    for g, g_ref in zip(torch.autograd.grad(out, leaves, cotangent), torch.autograd.grad(ref, leaves, cotangent)):
        torch.testing.assert_close(g, g_ref, rtol=1e-8, atol=1e-9)  # 10x the output tolerance


def test_reversing_the_input_and_swapping_the_directions_reverses_the_output():
    mixer = BidirectionalMamba2Mixer(16, **KW).double()
    swapped = BidirectionalMamba2Mixer(16, **KW).double()
    swapped.load_state_dict(mixer.state_dict())
    swapped.forward_scan.load_state_dict(mixer.backward_scan.state_dict())
    swapped.backward_scan.load_state_dict(mixer.forward_scan.state_dict())
    u = torch.randn(1, 19, 16, dtype=F64)
    torch.testing.assert_close(swapped(u.flip(1)), mixer(u).flip(1), rtol=1e-9, atol=1e-10)


def test_block_trains_both_directions_and_refuses_bad_input():
    block = BiMambaBlock(16, **KW)
    h = torch.randn(2, 10, 16)
    modulation, levels = torch.randn(1, 3, 16), torch.zeros(2, 10, dtype=torch.long)
    block(h, modulation, levels).square().sum().backward()
    params = dict(block.named_parameters())
    for name in ("mixer.forward_scan.conv1d.weight", "mixer.backward_scan.conv1d.weight", "mixer.forward_scan.A_log",
                 "mixer.backward_scan.A_log", "mixer.in_proj.weight"):
        param = params[name]
        assert param.grad is not None and param.grad.abs().sum() > 0, name
    with pytest.raises(ValueError, match="expected input"):
        block.mixer(torch.randn(2, 10, 8))


def test_backbone_kind_bimamba2_builds_bidirectional_blocks_with_scan_switches():
    config = BackboneConfig(kind="bimamba2", d_model=16, n_layers=2, d_state=8, head_dim=8, chunk_size=8,
                            scan_patterns="13/1", n_classes=3)
    model = Backbone(config)
    assert all(isinstance(b, BiMambaBlock) for b in model.blocks)
    layout = model.make_layout([SegmentSpec.video(2, 3, 3), SegmentSpec.text(4)])
    assert model.scan_switch(layout, torch.device("cpu")) is not None
    content = torch.randn(2, layout.n_content, 16, requires_grad=True)
    t, seg_t = torch.full((2, layout.n_content), 500.0), torch.full((2, 2), 500.0)
    out = model(content, t, seg_t, layout, torch.tensor([0, 2]))
    assert out.shape == (2, layout.n_content, 16)
    out[:, 0].sum().backward()  # the first video token hears the text at the end of the sequence
    assert content.grad[:, -4:].abs().sum() > 0
