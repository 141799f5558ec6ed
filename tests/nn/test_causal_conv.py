"""The causal conv + SiLU's C++ kernel against its PyTorch reference: outputs, gradients, the fallback."""

import warnings

import pytest
import torch

from mdm.nn import cpu_kernels
from mdm.nn.causal_conv import causal_conv_silu, causal_conv_silu_ref
from mdm.nn.mamba2 import Mamba2Mixer

KERNEL = "causal_conv_silu"  # what the built_kernel fixture (conftest.py) builds


@pytest.fixture(scope="module")
def kernel(built_kernel):
    return built_kernel


def _inputs(b, l, c, k, dtype, seed=0, contiguous=False):
    gen = torch.Generator().manual_seed(seed)
    # x a view into a wider projection, as the block's split of in_proj's output gives it
    wide = torch.randn(b, l, c + 7, generator=gen, dtype=dtype)
    x = (wide[..., :c].contiguous() if contiguous else wide[..., 3:3 + c]).requires_grad_()
    weight = torch.randn(c, 1, k, generator=gen, dtype=dtype, requires_grad=True)
    bias = torch.randn(c, generator=gen, dtype=dtype, requires_grad=True)
    context = torch.randn(b, c, k - 1, generator=gen, dtype=dtype, requires_grad=True)
    return x, weight, bias, context


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 2e-5)])
@pytest.mark.parametrize("b,l,c,k,contiguous", [(2, 9, 12, 4, False), (3, 2, 17, 4, True), (1, 33, 40, 1, False),
                                                 (2, 5, 9, 6, True)])
def test_kernel_matches_reference_forward_and_backward(kernel, dtype, tol, b, l, c, k, contiguous):
    x, weight, bias, context = _inputs(b, l, c, k, dtype, contiguous=contiguous)
    out, ref = causal_conv_silu(x, weight, bias, context), causal_conv_silu_ref(x, weight, bias, context)
    assert out.shape == (b, l, c)
    torch.testing.assert_close(out, ref, rtol=tol, atol=tol)
    grad = torch.randn_like(out)
    got = torch.autograd.grad(out, (x, weight, bias, context), grad)
    want = torch.autograd.grad(ref, (x, weight, bias, context), grad)
    for name, g, w in zip(("x", "weight", "bias", "context"), got, want):
        torch.testing.assert_close(g, w, rtol=tol, atol=tol, msg=lambda m, name=name: f"d {name}: {m}")


def test_kernel_gradients_pass_gradcheck(kernel):
    x, weight, bias, context = _inputs(2, 6, 5, 4, torch.float64, seed=1)
    assert torch.autograd.gradcheck(causal_conv_silu, (x, weight, bias, context))


def test_kernel_is_used_and_the_reference_when_asked(kernel, monkeypatch):
    x, weight, bias, context = _inputs(2, 7, 8, 4, torch.float32)
    assert causal_conv_silu(x, weight, bias, context).grad_fn.name() == "_CausalConvSiLUBackward"
    assert causal_conv_silu(x, weight, bias, context, cpu_kernel_ok=False).grad_fn.name() != "_CausalConvSiLUBackward"
    half = [t.detach().to(torch.bfloat16) for t in (x, weight, bias, context)]  # no kernel for half precision
    torch.testing.assert_close(causal_conv_silu(*half), causal_conv_silu_ref(*half), rtol=0, atol=0)


def test_a_failed_build_warns_once_and_falls_back_to_the_reference(monkeypatch, empty_build_cache):
    from torch.utils import cpp_extension

    def broken_load(*args, **kwargs):
        raise RuntimeError("Error building extension: g++: fatal error: no input files")

    monkeypatch.setattr(cpp_extension, "load", broken_load)
    cpu_kernels.cpu_kernel.cache_clear()
    try:
        x, weight, bias, context = _inputs(2, 5, 6, 4, torch.float32)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            first = causal_conv_silu(x, weight, bias, context)
            causal_conv_silu(x, weight, bias, context)
        messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
        assert len(messages) == 1
        assert "no input files" in messages[0] and "causal_conv_silu" in messages[0]
        assert "PyTorch reference" in messages[0]
        torch.testing.assert_close(first, causal_conv_silu_ref(x, weight, bias, context), rtol=0, atol=0)
    finally:
        cpu_kernels.cpu_kernel.cache_clear()


@pytest.mark.parametrize("length", [1, 3, 50])  # shorter than, equal to and longer than the conv's context
def test_mixer_with_and_without_the_kernel_agree_and_carry_the_same_state(kernel, length):
    torch.manual_seed(0)
    fast = Mamba2Mixer(32, d_state=8, head_dim=16, chunk_size=16, cpu_kernels=True)
    slow = Mamba2Mixer(32, d_state=8, head_dim=16, chunk_size=16, cpu_kernels=False)
    slow.load_state_dict(fast.state_dict())
    u = torch.randn(2, length, 32, requires_grad=True)
    with torch.no_grad():  # a state carried in from a previous segment
        start = slow(torch.randn(2, 5, 32), return_state=True)[1]
    (y_fast, s_fast), (y_slow, s_slow) = fast(u, start, return_state=True), slow(u, start, return_state=True)
    torch.testing.assert_close(y_fast, y_slow, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(s_fast.conv, s_slow.conv, rtol=0, atol=0)
    torch.testing.assert_close(s_fast.ssm, s_slow.ssm, rtol=1e-5, atol=1e-6)
    g_fast = torch.autograd.grad(y_fast.square().sum(), [u, *fast.parameters()])
    g_slow = torch.autograd.grad(y_slow.square().sum(), [u, *slow.parameters()])
    for g, w in zip(g_fast, g_slow):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-5)


def test_a_single_channel_view_with_a_wide_stride_runs(kernel):
    # (2, 5, 1) transposed from (2, 1, 5): "contiguous" to torch, yet its channel stride is 5
    x = torch.randn(2, 1, 5).transpose(1, 2).requires_grad_()
    weight, bias, context = torch.randn(1, 1, 4), torch.randn(1), torch.randn(2, 1, 3)
    out = causal_conv_silu(x, weight, bias, context)
    torch.testing.assert_close(out, causal_conv_silu_ref(x, weight, bias, context), rtol=1e-5, atol=1e-6)
    assert out.grad_fn.name() == "_CausalConvSiLUBackward"
