"""The causal depthwise conv + SiLU: the hand-written backward against autograd through F.conv1d, and a forward
that is the reference's bit for bit (checkpoints replay through it)."""

import pytest
import torch

from mdm.nn.causal_conv import causal_conv_silu, causal_conv_silu_ref


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
@pytest.mark.parametrize("shape", [(2, 6, 1, 4), (3, 10, 37, 4), (1, 5, 64, 2)])  # (b, c, l, k)
def test_fast_backward_equals_autograd_through_the_reference(shape, dtype, tol):
    b, c, l, k = shape
    g = torch.Generator().manual_seed(sum(shape))
    x = torch.randn(b, c, l + k - 1, generator=g, dtype=dtype)
    weight = torch.randn(c, 1, k, generator=g, dtype=dtype)
    bias = torch.randn(c, generator=g, dtype=dtype)
    cotangent = torch.randn(b, c, l, generator=g, dtype=dtype)  # one random cotangent for both
    grads = []
    for fn in (causal_conv_silu_ref, causal_conv_silu):
        inputs = [t.clone().requires_grad_() for t in (x, weight, bias)]
        out = fn(*inputs)
        grads.append((out, torch.autograd.grad(out, inputs, cotangent)))
    (ref_out, ref_grads), (out, fast_grads) = grads
    assert torch.equal(out, ref_out)  # the same two ops forward
    for name, a, r in zip(("x", "weight", "bias"), fast_grads, ref_grads):
        assert a.shape == r.shape
        err = ((a - r).abs().max() / r.abs().max()).item()
        assert err < tol, f"d{name}: relative error {err:.2e}"


def test_without_bias_and_with_frozen_weight():
    x = torch.randn(2, 4, 9, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(4, 1, 3, dtype=torch.float64)
    cot = torch.randn(2, 4, 7, dtype=torch.float64)
    (dx,) = torch.autograd.grad(causal_conv_silu(x, weight, None), x, cot)
    (dx_ref,) = torch.autograd.grad(causal_conv_silu_ref(x, weight, None), x, cot)
    torch.testing.assert_close(dx, dx_ref, rtol=1e-12, atol=1e-12)
