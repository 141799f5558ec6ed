"""The SSD's in-chunk matrix: its C++ kernel against ``CB * decay_matrix(a)``, and the scan with and without it."""

import pytest
import torch

import mdm.nn.ssd as ssd_module
from mdm.nn.ssd import decay_matrix, decayed_scores, ssd_chunked, ssd_ref

KERNEL = "decayed_scores"  # what the built_kernel fixture (conftest.py) builds


@pytest.fixture(scope="module")
def kernel(built_kernel):
    return built_kernel


def _inputs(shape, dtype, seed=0):
    b, c, g, r, s = shape
    gen = torch.Generator().manual_seed(seed)
    CB = torch.randn(b, c, g, s, s, generator=gen, dtype=dtype, requires_grad=True)
    a = (-1.5 * torch.rand(b, c, g, r, s, generator=gen, dtype=dtype)).requires_grad_()  # log-decays dt * A < 0
    return CB, a


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
@pytest.mark.parametrize("shape", [(2, 3, 1, 4, 16), (1, 2, 2, 3, 7), (3, 1, 1, 1, 1), (1, 1, 1, 2, 64)])
def test_kernel_matches_reference_forward_and_backward(kernel, dtype, tol, shape):
    CB, a = _inputs(shape, dtype)
    M = decayed_scores(CB, a)
    assert M.grad_fn.name() == "_DecayedScoresBackward"
    reference = CB[:, :, :, None] * decay_matrix(a)
    torch.testing.assert_close(M, reference, rtol=tol, atol=tol)
    assert torch.equal(M.triu(1), torch.zeros_like(M))  # nothing above the diagonal: causal inside the chunk
    grad = torch.randn_like(M)
    for name, got, want in zip(("CB", "a"), torch.autograd.grad(M, (CB, a), grad),
                               torch.autograd.grad(reference, (CB, a), grad)):
        torch.testing.assert_close(got, want, rtol=tol, atol=tol, msg=lambda m, name=name: f"d {name}: {m}")


def test_kernel_gradients_pass_gradcheck(kernel):
    CB, a = _inputs((1, 2, 2, 2, 6), torch.float64, seed=3)
    assert torch.autograd.gradcheck(decayed_scores, (CB, a))


def _graph(t):
    """The names of the autograd nodes behind ``t``."""
    names, todo, seen = set(), [t.grad_fn], set()
    while todo:
        node = todo.pop()
        if node is not None and node not in seen:
            seen.add(node)
            names.add(node.name())
            todo.extend(next_node for next_node, _ in node.next_functions)
    return names


@pytest.mark.parametrize("length", [1, 50, 99, 130])  # one chunk, one full chunk, two balanced, three
def test_scan_with_the_kernel_equals_the_sequential_reference_and_the_scan_without_it(kernel, length, monkeypatch):
    # A scan that needs a gradient takes the recurrent kernel where it builds: without it, the chunked form's.
    real = ssd_module.cpu_kernel
    monkeypatch.setattr(ssd_module, "cpu_kernel", lambda name: None if name == "ssd_recurrent" else real(name))
    gen = torch.Generator().manual_seed(length)
    b, h, p, g, n = 2, 4, 8, 2, 6
    x = torch.randn(b, length, h, p, generator=gen, dtype=torch.float64, requires_grad=True)
    dt = (0.5 * torch.rand(b, length, h, generator=gen, dtype=torch.float64)).requires_grad_()
    A = -torch.rand(h, generator=gen, dtype=torch.float64) - 0.5
    B = torch.randn(b, length, g, n, generator=gen, dtype=torch.float64, requires_grad=True)
    C = torch.randn(b, length, g, n, generator=gen, dtype=torch.float64, requires_grad=True)
    start = torch.randn(b, h, p, n, generator=gen, dtype=torch.float64)
    runs = [ssd_chunked(x, dt, A, B, C, initial_state=start, chunk_size=64, cpu_kernel_ok=ok) for ok in (True, False)]
    assert "_DecayedScoresBackward" in _graph(runs[0][0]) and "_DecayedScoresBackward" not in _graph(runs[1][0])
    runs.append(ssd_ref(x, dt, A, B, C, initial_state=start))
    grad_y = torch.randn_like(runs[0][0])
    grads = [torch.autograd.grad((y * grad_y).sum() + state.sum(), (x, dt, B, C)) for y, state in runs]
    for (y, state), grad in zip(runs[1:], grads[1:]):
        torch.testing.assert_close(runs[0][0], y, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(runs[0][1], state, rtol=1e-10, atol=1e-10)
        for got, want in zip(grads[0], grad):
            torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)
