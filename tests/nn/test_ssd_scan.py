"""The fused forward scan (``csrc/ssd_scan.cpp``): against the sequential reference and the PyTorch chunked form,
when it is taken (no gradient needed) and when not, and its checks on bad input."""

import pytest
import torch

import mdm.nn.ssd as ssd_module
from mdm.nn.ssd import ssd_chunked, ssd_ref
from scan_reference import ssd_inputs

KERNEL = "ssd_scan"  # what the built_kernel fixture (conftest.py) builds


@pytest.fixture(scope="module")
def kernel(built_kernel):
    return built_kernel


_inputs = ssd_inputs


@pytest.fixture
def kernel_calls(count_calls):
    """Counts the scans that went to the fused kernel."""
    return count_calls(ssd_module, "_ssd_scan_kernel")


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 2e-5)])
@pytest.mark.parametrize("length", [0, 1, 50, 64, 99, 130])  # empty, one chunk, a full one, two balanced, three
@pytest.mark.parametrize("carried", [False, True])
@pytest.mark.parametrize("discretization", ["zoh", "euler"])
def test_fused_scan_equals_the_sequential_reference(kernel, kernel_calls, dtype, tol, length, carried,
                                                    discretization):
    x, dt, A, B, C, D, start = _inputs(length, dtype)
    start = start if carried else None
    with torch.no_grad():
        y, state = ssd_chunked(x, dt, A, B, C, D, start, discretization, chunk_size=64)
        y_ref, state_ref = ssd_ref(x, dt, A, B, C, D, start, discretization)
    assert kernel_calls == [1]
    torch.testing.assert_close(y, y_ref, rtol=tol, atol=tol)
    torch.testing.assert_close(state, state_ref, rtol=tol, atol=tol)


@pytest.mark.parametrize("p,n,g,h", [(5, 3, 1, 2), (40, 16, 2, 4), (64, 32, 1, 8), (33, 7, 3, 3)])
def test_fused_scan_covers_every_width(kernel, kernel_calls, p, n, g, h):
    """Head widths with and without a vector remainder, groups shared by several heads or one."""
    x, dt, A, B, C, D, start = _inputs(77, torch.float64, h=h, p=p, g=g, n=n, seed=p)
    with torch.no_grad():
        y, state = ssd_chunked(x, dt, A, B, C, None, start, chunk_size=16)
    y_ref, state_ref = ssd_ref(x, dt, A, B, C, None, start)
    assert kernel_calls == [1]
    torch.testing.assert_close(y, y_ref, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(state, state_ref, rtol=1e-10, atol=1e-10)


def test_fused_scan_matches_the_pytorch_form_in_float32_at_a_preset_length(kernel):
    x, dt, A, B, C, D, start = _inputs(256, torch.float32, b=1, h=8, p=32, g=1, n=32, seed=1)
    with torch.no_grad():
        fused = ssd_chunked(x, dt, A, B, C, D, start, chunk_size=64)
        plain = ssd_chunked(x, dt, A, B, C, D, start, chunk_size=64, cpu_kernel_ok=False)
    for got, want in zip(fused, plain):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_a_scan_that_needs_a_gradient_takes_another_path(kernel, kernel_calls):
    x, dt, A, B, C, D, start = _inputs(50, torch.float64)
    x.requires_grad_()
    y, _ = ssd_chunked(x, dt, A, B, C, D, start, chunk_size=16)
    assert kernel_calls == []
    y.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    with torch.no_grad():
        ssd_chunked(x, dt, A, B, C, D, start, chunk_size=16)
    assert kernel_calls == [1]  # the same inputs without a gradient take the kernel
    ssd_chunked(x, dt, A, B, C, D, start, chunk_size=16, cpu_kernel_ok=False)
    assert kernel_calls == [1]


def test_fused_scan_rejects_mixed_dtypes_and_bad_shapes(kernel):
    x, dt, A, B, C, D, _ = _inputs(10, torch.float32)
    step, a = dt * A, dt * A
    empty = x.new_empty(0)
    with pytest.raises(RuntimeError, match="share x's dtype"):
        kernel.forward(x, step, a, B.double(), C, D, empty, 4)
    with pytest.raises(RuntimeError, match="g dividing h"):
        kernel.forward(x, step, a, B[:, :, :1].expand(-1, -1, 3, -1).contiguous(),
                       C[:, :, :1].expand(-1, -1, 3, -1).contiguous(), D, empty, 4)
    with pytest.raises(RuntimeError, match="chunk must be >= 1"):
        kernel.forward(x, step, a, B, C, D, empty, 0)
