"""The Mamba-2 mixer and block (mdm.nn.mamba2): public parameter layout, reference equality, causality."""

import re

import pytest
import torch
import torch.nn.functional as F

import mdm.nn.mamba2 as mamba2
from mdm.nn.bimamba2 import BidirectionalMamba2Mixer
from mdm.nn.mamba2 import CausalScan, GatedRMSNorm, Mamba2Base, Mamba2Mixer, MambaBlock, MixerState
from mdm.nn.ssd import ssd_ref
from scan_reference import conv_ssd_ref

F64 = torch.float64
D_MODEL, D_STATE, HEAD_DIM, D_CONV, EXPAND = 32, 16, 8, 4, 2


def rel_err(actual: torch.Tensor, ref: torch.Tensor) -> float:
    return ((actual.to(F64) - ref.to(F64)).abs().max() / ref.to(F64).abs().max()).item()


def make_mixer(n_groups=1, **kw) -> Mamba2Mixer:
    kw = {"d_state": D_STATE, "d_conv": D_CONV, "expand": EXPAND, "head_dim": HEAD_DIM, "n_groups": n_groups,
          "chunk_size": 16, **kw}
    return Mamba2Mixer(D_MODEL, **kw)


# --------------------------------------------------------------------------- parameter layout

@pytest.mark.parametrize("n_groups", [1, 2])
def test_state_dict_has_the_public_mamba2_layout(n_groups):
    mixer = make_mixer(n_groups)
    d_inner = EXPAND * D_MODEL
    n_heads = d_inner // HEAD_DIM
    conv_dim = d_inner + 2 * n_groups * D_STATE
    expected = {
        "in_proj.weight": (2 * d_inner + 2 * n_groups * D_STATE + n_heads, D_MODEL),
        "conv1d.weight": (conv_dim, 1, D_CONV),
        "conv1d.bias": (conv_dim,),
        "dt_bias": (n_heads,),
        "A_log": (n_heads,),
        "D": (n_heads,),
        "norm.weight": (d_inner,),
        "out_proj.weight": (D_MODEL, d_inner),
    }
    shapes = {k: tuple(v.shape) for k, v in mixer.state_dict().items()}
    assert shapes == expected


def test_ssm_initialisation_follows_public_mamba2():
    mixer = Mamba2Mixer(64, d_state=8, head_dim=4, dt_min=1e-3, dt_max=0.1, A_init_range=(1.0, 16.0))
    dt = F.softplus(mixer.dt_bias.double())
    assert dt.min() >= 1e-3 * (1 - 1e-6) and dt.max() <= 0.1 * (1 + 1e-6)  # float32 storage rounding
    A = mixer.A_log.double().exp()
    assert A.min() >= 1.0 * (1 - 1e-6) and A.max() <= 16.0 * (1 + 1e-6)
    assert torch.equal(mixer.D, torch.ones_like(mixer.D))
    assert dt.std() > 0 and A.std() > 0  # random, not constant


def test_safetensors_round_trip(tmp_path):
    safetensors_torch = pytest.importorskip("safetensors.torch")
    mixer = make_mixer(2)
    with torch.no_grad():  # move every parameter off its init so that nothing matches by accident
        for p in mixer.parameters():
            p.add_(0.1 * torch.randn_like(p))
    path = tmp_path / "mixer.safetensors"
    safetensors_torch.save_file(mixer.state_dict(), str(path))

    torch.manual_seed(1)
    fresh = make_mixer(2)
    u = torch.randn(2, 21, D_MODEL)
    with torch.no_grad():
        assert not torch.allclose(fresh(u), mixer(u))
        fresh.load_state_dict(safetensors_torch.load_file(str(path)), strict=True)
        assert torch.equal(fresh(u), mixer(u))


def test_load_state_dict_strict_names_missing_and_extra_keys():
    mixer = make_mixer()
    state = mixer.state_dict()
    missing = dict(state)
    del missing["A_log"]
    with pytest.raises(RuntimeError, match=re.escape('Missing key(s) in state_dict: "A_log"')):
        make_mixer().load_state_dict(missing, strict=True)
    extra = dict(state, **{"in_proj.bias": torch.zeros(state["in_proj.weight"].shape[0])})
    with pytest.raises(RuntimeError, match=re.escape('Unexpected key(s) in state_dict: "in_proj.bias"')):
        make_mixer().load_state_dict(extra, strict=True)


# --------------------------------------------------------------------------- reference equality

@pytest.mark.parametrize("n_groups", [1, 2])
def test_matches_transformers_mamba2_mixer(n_groups):
    """Hugging Face's pure-PyTorch Mamba-2 mixer, its weights loaded into ours with Euler steps."""
    modeling = pytest.importorskip("transformers.models.mamba2.modeling_mamba2")
    from transformers import Mamba2Config

    config = Mamba2Config(hidden_size=D_MODEL, state_size=D_STATE, expand=EXPAND, head_dim=HEAD_DIM, num_heads=8,
                          n_groups=n_groups, conv_kernel=D_CONV, chunk_size=16, layer_norm_epsilon=1e-5)
    hf = modeling.Mamba2Mixer(config, layer_idx=0)
    with torch.no_grad():  # random, non-default values for every parameter (norm weight, D, dt_bias, ...)
        for p in hf.parameters():
            p.add_(0.1 * torch.randn_like(p))
    hf = hf.double().eval()  # eval: the training path would try the fused CUDA kernel

    ours = make_mixer(n_groups, discretization="euler", norm_eps=1e-5).double().eval()
    ours.load_state_dict(hf.state_dict(), strict=True)
    u = torch.randn(2, 40, D_MODEL, dtype=F64)  # 40: not a multiple of the chunk
    with torch.no_grad():
        expected, actual = hf(u), ours(u)
    assert actual.shape == expected.shape == (2, 40, D_MODEL)
    # transformers runs the scan and the gated RMSNorm in float32 whatever the input dtype,
    # so float64 agreement is limited to float32 rounding (measured 1.6e-7).
    assert rel_err(actual, expected) < 1e-5

    ours_zoh = make_mixer(n_groups, discretization="zoh", norm_eps=1e-5).double().eval()
    ours_zoh.load_state_dict(hf.state_dict())
    with torch.no_grad():
        assert rel_err(ours_zoh(u), expected) > 1e-3  # the discretisation matters: the test can tell


@pytest.mark.parametrize("n_groups", [1, 2])
def test_chunked_mixer_equals_reference_scan(monkeypatch, n_groups):
    mixer = make_mixer(n_groups).double()
    u = torch.randn(2, 37, D_MODEL, dtype=F64)
    calls = []

    def reference_scan(x, dt, A, B, C, D=None, initial_state=None, discretization="zoh", chunk_size=64,
                       cpu_kernel_ok=True):
        calls.append(chunk_size)
        return ssd_ref(x, dt, A, B, C, D, initial_state, discretization)

    with torch.no_grad():
        fast, fast_state = mixer(u, return_state=True)
        monkeypatch.setattr(mamba2, "ssd", reference_scan)
        slow, slow_state = mixer(u, return_state=True)
    assert calls == [16]  # the swap took effect
    # float64 scan, but GatedRMSNorm rounds through float32 (see test_gated_rmsnorm_keeps_float64),
    # so the outputs agree to float32 rounding; the states, before the norm, to float64.
    assert rel_err(fast, slow) < 1e-6
    assert rel_err(fast_state.ssm, slow_state.ssm) < 1e-10
    assert torch.equal(fast_state.conv, slow_state.conv)


def test_mixer_is_causal():
    mixer = make_mixer(2).double()
    u = torch.randn(2, 40, D_MODEL, dtype=F64)
    with torch.no_grad():
        out = mixer(u)
        for i in (0, 13, 14, 30):  # length 40, chunk_size 16: three chunks of 14, so 13 | 14 is a boundary
            v = u.clone()
            v[:, i + 1:] = torch.randn_like(v[:, i + 1:])
            w = v.clone()
            w[:, i] += 1.0
            out_v, out_w = mixer(v), mixer(w)
            assert torch.equal(out_v[:, : i + 1], out[:, : i + 1]), i  # exact: zeros in the causal mask
            if i + 1 < 40:
                assert not torch.allclose(out_v[:, i + 1:], out[:, i + 1:])
            assert not torch.allclose(out_w[:, i], out_v[:, i])  # position i does depend on itself


@pytest.mark.parametrize("split", [1, 3, 16, 29])
def test_state_carries_across_segments(split):
    """Mixing [0, k) then [k, l) from the returned state equals mixing [0, l) at once."""
    mixer = make_mixer(2).double()
    u = torch.randn(2, 40, D_MODEL, dtype=F64)
    with torch.no_grad():
        full, full_state = mixer(u, return_state=True)
        first, state = mixer(u[:, :split], return_state=True)
        assert isinstance(state, MixerState)
        assert state.conv.shape == (2, mixer.d_inner + 2 * 2 * D_STATE, D_CONV - 1)
        assert state.ssm.shape == (2, mixer.n_heads, HEAD_DIM, D_STATE)
        second, last_state = mixer(u[:, split:], state, return_state=True)
        fresh = mixer(u[:, split:])  # without the state: a different answer, so the test can fail
    # float64 everywhere but GatedRMSNorm, which rounds through float32: 1e-6 covers one float32 ulp.
    assert rel_err(torch.cat([first, second], dim=1), full) < 1e-6
    assert rel_err(last_state.ssm, full_state.ssm) < 1e-10
    # the last inputs themselves, but in_proj ran on a different length: BLAS may round the same row
    # differently by shape (1 ulp on an AMD EPYC host), so not bitwise
    assert rel_err(last_state.conv, full_state.conv) < 1e-14
    assert rel_err(fresh, full[:, split:]) > 1e-3


def test_float32_mixer_matches_float64():
    mixer = make_mixer(2)
    u = torch.randn(2, 33, D_MODEL)
    with torch.no_grad():
        out32 = mixer(u)
        out64 = mixer.double()(u.double())
    assert out32.dtype == torch.float32
    assert rel_err(out32, out64) < 1e-5  # float32 rounding through in_proj, conv, scan and norm


def test_bfloat16_mixer_runs_the_scan_in_float32():
    mixer = make_mixer(2)
    u = torch.randn(2, 33, D_MODEL)
    with torch.no_grad():
        ref = mixer(u)
        out = mixer.to(torch.bfloat16)(u.bfloat16())
    assert out.dtype == torch.bfloat16
    # bfloat16 has 8 bits of mantissa (eps 7.8e-3) in weights, inputs and projections; measured 7e-3.
    assert rel_err(out, ref) < 5e-2


def test_mixer_accepts_an_empty_sequence():
    mixer = make_mixer()
    with torch.no_grad():
        out, state = mixer(torch.randn(2, 0, D_MODEL), return_state=True)
    assert out.shape == (2, 0, D_MODEL)
    assert torch.equal(state.ssm, torch.zeros_like(state.ssm))


def test_gated_rmsnorm_keeps_float64():
    norm = GatedRMSNorm(64, group_size=32).double()
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
    y, z = torch.randn(3, 10, 64, dtype=F64), torch.randn(3, 10, 64, dtype=F64)
    gated = (y * F.silu(z)).unflatten(-1, (2, 32))
    expected = norm.weight * (gated * torch.rsqrt(gated.pow(2).mean(-1, keepdim=True) + 1e-5)).flatten(-2)
    out = norm(y, z)
    assert out.dtype == F64
    assert rel_err(out, expected) < 1e-12  # float64 arithmetic end to end


def test_gated_rmsnorm_normalises_per_group():
    norm = GatedRMSNorm(64, group_size=16)
    y, z = torch.randn(2, 5, 64), torch.randn(2, 5, 64)
    out = norm(y, z).unflatten(-1, (4, 16))
    rms = out.pow(2).mean(-1).sqrt()
    assert torch.allclose(rms, torch.ones_like(rms), atol=1e-3)  # eps 1e-5 against mean squares ~0.1


# --------------------------------------------------------------------------- the conv + SSD both mixers share

def _scans(kind: str, n_groups: int) -> tuple[Mamba2Base, list[CausalScan]]:
    kw = {"d_state": D_STATE, "d_conv": D_CONV, "expand": EXPAND, "head_dim": HEAD_DIM, "n_groups": n_groups,
          "chunk_size": 16}
    if kind == "one-way":
        mixer = Mamba2Mixer(D_MODEL, **kw).double()
        return mixer, [mixer]
    mixer = BidirectionalMamba2Mixer(D_MODEL, **kw).double()
    return mixer, [mixer.forward_scan, mixer.backward_scan]


@pytest.mark.parametrize("kind", ["one-way", "bidirectional"])
@pytest.mark.parametrize("n_groups,length", [(1, 5), (2, 37), (1, 48)])  # under, across and on chunk borders
def test_both_mixers_conv_ssd_equals_the_sequential_reference_with_gradients(kind, n_groups, length):
    mixer, scans = _scans(kind, n_groups)
    with torch.no_grad():  # D, dt_bias and the conv off their init, so that every parameter counts
        for p in mixer.parameters():
            p.add_(0.1 * torch.randn_like(p))
    for scan in scans:
        xBC = torch.randn(2, length, mixer.conv_dim, dtype=F64, requires_grad=True)
        dt = torch.randn(2, length, mixer.n_heads, dtype=F64, requires_grad=True)
        y, state = mixer.conv_ssd(scan, xBC, dt)
        ref = conv_ssd_ref(mixer, scan, xBC, dt)
        torch.testing.assert_close(y, ref, rtol=1e-10, atol=1e-12)  # float64 end to end
        assert torch.equal(state.conv, xBC.detach().transpose(1, 2)[..., length - (D_CONV - 1):])

        leaves = [xBC, dt, scan.conv1d.weight, scan.conv1d.bias, scan.dt_bias, scan.A_log, scan.D]
        cotangent = torch.randn_like(y)  # one shared random cotangent
        grads = torch.autograd.grad(y, leaves, cotangent)
        grads_ref = torch.autograd.grad(ref, leaves, cotangent)
        for name, g, g_ref in zip(["xBC", "dt", "conv", "conv bias", "dt_bias", "A_log", "D"], grads, grads_ref):
            torch.testing.assert_close(g, g_ref, rtol=1e-9, atol=1e-11, msg=name)  # 10x the output tolerance


def test_conv_ssd_continues_from_a_carried_state():
    mixer, (scan,) = _scans("one-way", 2)
    xBC = torch.randn(2, 29, mixer.conv_dim, dtype=F64)
    dt = torch.randn(2, 29, mixer.n_heads, dtype=F64)
    with torch.no_grad():
        full, full_state = mixer.conv_ssd(scan, xBC, dt)
        first, state = mixer.conv_ssd(scan, xBC[:, :11], dt[:, :11])
        second, last_state = mixer.conv_ssd(scan, xBC[:, 11:], dt[:, 11:], state)
        fresh, _ = mixer.conv_ssd(scan, xBC[:, 11:], dt[:, 11:])  # without the state: the test can fail
    torch.testing.assert_close(torch.cat([first, second], dim=1), full, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(last_state.ssm, full_state.ssm, rtol=1e-10, atol=1e-12)
    assert torch.equal(last_state.conv, full_state.conv)
    assert rel_err(fresh, full[:, 11:]) > 1e-3


# --------------------------------------------------------------------------- bad input / construction

def test_wrong_input_width_names_expected_width():
    mixer = make_mixer()
    with pytest.raises(ValueError, match=r"expected input \(batch, length, 32\), got \(2, 5, 31\)"):
        mixer(torch.randn(2, 5, 31))
    with pytest.raises(ValueError, match=r"\(batch, length, 32\)"):
        mixer(torch.randn(5, 32))


def test_constructor_rejects_bad_head_split():
    with pytest.raises(ValueError, match="not a multiple of head_dim 24"):
        Mamba2Mixer(32, expand=2, head_dim=24)
    with pytest.raises(ValueError, match="n_heads = 8 is not a multiple of n_groups 3"):
        Mamba2Mixer(32, expand=2, head_dim=8, n_groups=3)


def test_mamba_block_is_residual_and_modulated():
    block = MambaBlock(D_MODEL, d_state=D_STATE, head_dim=HEAD_DIM, chunk_size=16)
    h = torch.randn(2, 12, D_MODEL)
    levels = torch.tensor([[0, 0, 0, 1, 0, 1, 1, 0, 0, 1, 0, 0],
                           [0, 0, 0, 0, 0, 0, 0, 1, 1, 0, 0, 1]])
    zero_mod = torch.zeros(2, 3, D_MODEL)  # two noise levels
    with torch.no_grad():
        out = block(h, zero_mod, levels)
        assert out.shape == h.shape and not torch.allclose(out, h)
        # A gate of exactly zero turns the block into the identity.
        gate_off = zero_mod.clone()
        gate_off[:, 2] = -block.modulation_table[2]
        assert torch.equal(block(h, gate_off, levels), h)
        # Each position reads the modulation of its own level.
        other = zero_mod.clone()
        other[1, 0] += 1.0  # shift of level 1 only
        changed = (block(h, other, levels) - out).abs().amax(-1) > 0
        for row, first in ((0, 3), (1, 7)):  # first position at level 1; the mixer is causal
            assert not changed[row, :first].any()
            assert changed[row, first]


@pytest.mark.parametrize("segment_len", [5, 16])
def test_mamba_block_segments_equal_one_pass(segment_len):
    block = MambaBlock(D_MODEL, d_state=D_STATE, head_dim=HEAD_DIM, chunk_size=8).double()
    one_pass = MambaBlock(D_MODEL, segment_len=4096, d_state=D_STATE, head_dim=HEAD_DIM, chunk_size=8).double()
    one_pass.load_state_dict(block.state_dict())
    block.segment_len = segment_len
    h = torch.randn(2, 37, D_MODEL, dtype=F64)
    mod = 0.1 * torch.randn(3, 3, D_MODEL, dtype=F64)
    levels = torch.randint(0, 3, (2, 37))
    with torch.no_grad():
        # float64, GatedRMSNorm rounds through float32: one float32 ulp on the mixer output.
        assert rel_err(block(h, mod, levels), one_pass(h, mod, levels)) < 1e-6
