"""The recurrent scan with its backward (``csrc/ssd_recurrent.cpp``): values and gradients of every input against the
sequential reference ``ssd_ref``, when :func:`ssd_chunked` takes it (a gradient is needed) and when not, and its
checks on bad input."""

import pytest
import torch

import mdm.nn.ssd as ssd_module
from mdm.nn.ssd import input_step, ssd_chunked, ssd_ref
from mdm.nn.ssd_recurrent import ssd_recurrent
from scan_reference import ssd_inputs

KERNEL = "ssd_recurrent"  # what the built_kernel fixture (conftest.py) builds
NAMES = ("x", "dt", "A", "B", "C", "D", "initial_state")


@pytest.fixture(scope="module")
def kernel(built_kernel):
    return built_kernel


@pytest.fixture
def kernel_calls(count_calls):
    """Counts the scans that went to the recurrent kernel."""
    return count_calls(ssd_module, "ssd_recurrent")


def _inputs(length, dtype=torch.float64, b=2, h=4, p=8, g=2, n=6, seed=0, with_D=True, with_state=True):
    """Leaves that require a gradient, None for a D or a state left out."""
    x, dt, A, B, C, D, start = ssd_inputs(length, dtype, b=b, h=h, p=p, g=g, n=n, seed=seed)
    D, start = D if with_D else None, start if with_state else None
    return [t if t is None else t.requires_grad_() for t in (x, dt, A, B, C, D, start)]


def _values_and_grads(scan, leaves, discretization="zoh", seed=1):
    """y, the final state and the gradients of every leaf under one random cotangent of each."""
    y, state = scan(*leaves, discretization)
    gen = torch.Generator().manual_seed(seed)
    gy = torch.randn(y.shape, generator=gen, dtype=torch.float64).to(y.dtype)  # the same numbers in either dtype
    gs = torch.randn(state.shape, generator=gen, dtype=torch.float64).to(y.dtype)
    used = [t for t in leaves if t is not None]
    loss = (y * gy).sum() + (state * gs).sum()
    # at length 0 the reference's outputs depend on some inputs or none: their gradients are zeros, as the kernel's
    grads = iter(torch.autograd.grad(loss, used, allow_unused=True) if loss.requires_grad else [None] * len(used))
    return y, state, [None if t is None else _or_zeros(next(grads), t) for t in leaves]


def _or_zeros(grad, leaf):
    return torch.zeros_like(leaf) if grad is None else grad


def _compare(got, want, tol, scale_free=False):
    """Outputs and gradients of two runs; float32 runs are compared with the float64 truth, relative to each
    tensor's largest entry (dA sums b * l * p terms)."""
    (y, state, grads), (y_ref, state_ref, grads_ref) = got, want
    for name, a, b in zip(("y", "final state", *(f"d{n}" for n in NAMES)), (y, state, *grads),
                          (y_ref, state_ref, *grads_ref)):
        assert (a is None) == (b is None), name
        if a is None:
            continue
        atol = tol * max(b.abs().max().item(), 1.0) if scale_free and b.numel() else tol
        torch.testing.assert_close(a.double(), b.double(), rtol=tol, atol=atol, msg=lambda m, name=name: f"{name}: {m}")


@pytest.mark.parametrize("length", [0, 1, 7, 64, 167])  # 64: da's running sum restarts at 32, not at the end
@pytest.mark.parametrize("groups", [1, 2])
@pytest.mark.parametrize("with_D,with_state", [(True, True), (False, False), (True, False), (False, True)])
@pytest.mark.parametrize("discretization", ["zoh", "euler"])
def test_values_and_gradients_equal_the_sequential_reference(kernel, kernel_calls, length, groups, with_D,
                                                             with_state, discretization):
    leaves = _inputs(length, g=groups, with_D=with_D, with_state=with_state, seed=length)
    got = _values_and_grads(ssd_chunked, leaves, discretization)
    assert kernel_calls == [1]
    _compare(got, _values_and_grads(ssd_ref, leaves, discretization), 1e-10)


@pytest.mark.parametrize("length", [1, 7, 167])
@pytest.mark.parametrize("groups", [1, 2])
def test_float32_is_near_the_float64_truth(kernel, kernel_calls, length, groups):
    leaves = _inputs(length, g=groups, seed=length)
    leaves32 = [t.detach().float().requires_grad_() for t in leaves]
    got = _values_and_grads(ssd_chunked, leaves32)
    assert kernel_calls == [1] and got[0].dtype == torch.float32
    # measured <= 5.5e-6 of each tensor's largest entry for dA, <= 3.3e-7 for the rest
    _compare(got, _values_and_grads(ssd_ref, leaves), 2e-5, scale_free=True)


def test_float32_da_does_not_drift_over_a_long_sequence(kernel):
    """da is a running sum over the later positions; restarted every 32 positions from the state, its float32 error
    stays that of a few dozen terms: dA 1.3e-5 off at 1024 positions (3.7e-4 without the restarts; the chunked
    form 1.8e-5). Against the float64 kernel, which the tests above tie to the reference."""
    leaves = _inputs(1024, b=1, h=8, p=32, g=1, n=32, seed=3)
    leaves32 = [t.detach().float().requires_grad_() for t in leaves]
    _compare(_values_and_grads(ssd_chunked, leaves32), _values_and_grads(ssd_chunked, leaves), 5e-5, scale_free=True)


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 2e-5)])
@pytest.mark.parametrize("p,n,g,h", [(5, 3, 1, 2), (40, 16, 2, 4), (32, 32, 1, 8), (33, 7, 3, 3), (9, 12, 1, 1)])
def test_every_width(kernel, dtype, tol, p, n, g, h):
    """Head and state widths with and without a vector remainder (the state is padded to whole vectors; du's lane
    sums go eight rows at a time), groups shared by several heads or one."""
    leaves = _inputs(45, h=h, p=p, g=g, n=n, seed=p)
    cast = [t.detach().to(dtype).requires_grad_() for t in leaves]
    _compare(_values_and_grads(ssd_chunked, cast), _values_and_grads(ssd_ref, leaves), tol, scale_free=True)


def test_a_long_sequence(kernel):
    """Past ssd_chunked's 2048-position segments: the kernel takes the whole length in one call (a state per 32
    positions, no segments), and da's running sum over every later position stays exact."""
    leaves = _inputs(2100, b=1, h=2, p=4, g=1, n=3, seed=5)
    _compare(_values_and_grads(ssd_chunked, leaves), _values_and_grads(ssd_ref, leaves), 1e-10)


def test_inputs_as_views_of_one_tensor(kernel):
    """As in the mixer, x, B and C are column slices of one (b, l, conv_dim) tensor: the kernel reads them in place."""
    b, l, h, p, g, n = 2, 30, 4, 8, 2, 6
    gen = torch.Generator().manual_seed(3)
    xBC = torch.randn(b, l, h * p + 2 * g * n, generator=gen, dtype=torch.float64, requires_grad=True)
    _, dt, A, _, _, D, start = _inputs(l, b=b, h=h, p=p, g=g, n=n)

    def split_scan(xBC, *rest):
        x, B, C = torch.split(xBC, [h * p, g * n, g * n], dim=-1)
        return x.reshape(b, l, h, p), B.reshape(b, l, g, n), C.reshape(b, l, g, n), *rest

    def scan(fn):
        def run(xBC, dt, A, D, start, discretization):
            x, B, C = split_scan(xBC)[:3]
            assert fn is ssd_ref or x.stride(1) == h * p + 2 * g * n  # a view, not a copy
            return fn(x, dt, A, B, C, D, start, discretization)
        return run

    leaves = [xBC, dt, A, D, start]
    _compare(_values_and_grads(scan(ssd_chunked), leaves), _values_and_grads(scan(ssd_ref), leaves), 1e-10)


def test_only_the_final_state_or_only_y_is_used(kernel):
    """An unused output sends no gradient (None, not zeros): the kernel starts the adjoint from zeros."""
    leaves = _inputs(20)
    for pick in (0, 1):
        grads = torch.autograd.grad(ssd_chunked(*leaves)[pick].sum(), leaves)
        grads_ref = torch.autograd.grad(ssd_ref(*leaves)[pick].sum(), leaves, allow_unused=True)
        for name, got, want in zip(NAMES, grads, grads_ref):
            torch.testing.assert_close(got, torch.zeros_like(got) if want is None else want, rtol=1e-10, atol=1e-10,
                                       msg=lambda m, name=name: f"output {pick}, d{name}: {m}")


def test_gradcheck(kernel):
    leaves = _inputs(5, b=1, h=2, p=3, g=1, n=2, seed=7)
    assert torch.autograd.gradcheck(lambda *t: ssd_chunked(*t), leaves)


def test_deterministic_and_independent_across_the_batch(kernel):
    """Bit for bit the same twice, and each batch element alone as in the batch: one task owns a (batch, group),
    so how the tasks are shared among threads cannot change a bit."""
    leaves = _inputs(70, b=3, seed=11)
    per_batch = [0, 1, 3, 4, 6]  # x, dt, B, C, initial_state: the inputs with a batch dimension
    gen = torch.Generator().manual_seed(1)
    gy = torch.randn(leaves[0].shape, generator=gen, dtype=torch.float64)
    gs = torch.randn(leaves[6].shape, generator=gen, dtype=torch.float64)

    def run(inputs, rows):
        y, state = ssd_chunked(*inputs)
        loss = (y * gy[rows]).sum() + (state * gs[rows]).sum()
        return y, state, torch.autograd.grad(loss, [inputs[k] for k in per_batch])

    first, second = run(leaves, slice(None)), run(leaves, slice(None))
    for a, b in zip((first[0], first[1], *first[2]), (second[0], second[1], *second[2])):
        assert torch.equal(a, b)
    for i in range(3):
        alone = [t[i:i + 1].detach().requires_grad_() if k in per_batch else t for k, t in enumerate(leaves)]
        y, state, grads = run(alone, slice(i, i + 1))
        assert torch.equal(y, first[0][i:i + 1]) and torch.equal(state, first[1][i:i + 1])
        for k, g, g_all in zip(per_batch, grads, first[2]):
            assert torch.equal(g, g_all[i:i + 1]), NAMES[k]


def test_no_gradient_or_no_kernel_takes_another_path(kernel, kernel_calls):
    leaves = _inputs(30)
    with torch.no_grad():
        ssd_chunked(*leaves)  # the forward-only fused scan
    ssd_chunked(*leaves, cpu_kernel_ok=False)  # the PyTorch form
    assert kernel_calls == []
    ssd_chunked(*leaves)
    assert kernel_calls == [1]


def test_the_kernel_rejects_mixed_dtypes_and_bad_shapes(kernel):
    x, dt, A, B, C, D, _ = (t.detach() for t in _inputs(10))
    step, a, empty = input_step(dt, A, "zoh"), dt * A, x.new_empty(0)
    with pytest.raises(RuntimeError, match="share x's dtype"):
        kernel.forward(x, step, a, B.float(), C, D, empty)
    with pytest.raises(RuntimeError, match="g dividing h"):
        kernel.forward(x, step, a, B[:, :, :1].expand(-1, -1, 3, -1), C[:, :, :1].expand(-1, -1, 3, -1), D, empty)
    with pytest.raises(RuntimeError, match="contiguous last dimension"):
        kernel.forward(x.transpose(2, 3), step, a, B, C, D, empty)
    y, _ = kernel.forward(x, step, a, B, C, D, empty)
    with pytest.raises(RuntimeError, match="dy"):
        kernel.backward(y[:, 1:].contiguous(), empty, x, step, a, B, C, D, empty)
    assert ssd_recurrent(kernel, x, step, a, B, C, D, None)[0].shape == x.shape


def test_width_one_views(kernel):
    """A head_dim or d_state of 1 given as a view whose last stride is not 1: torch calls it contiguous, and the
    kernel still gets a unit stride."""
    x, dt, A, B, C, D, start = ssd_inputs(10, torch.float64, b=2, h=4, p=1, g=2, n=1, seed=2)
    x = x.reshape(2, 10, 1, 4).transpose(2, 3)  # (2, 10, 4, 1), last stride 4
    B, C = (t.reshape(2, 10, 1, 2).transpose(2, 3) for t in (B, C))
    assert x.stride(-1) != 1 and B.stride(-1) != 1
    leaves = [t.requires_grad_() for t in (x, dt, A, B, C, D, start)]
    _compare(_values_and_grads(ssd_chunked, leaves), _values_and_grads(ssd_ref, leaves), 1e-10)
