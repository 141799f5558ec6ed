"""The chunked SSD scan against the sequential reference (mdm.nn.ssd)."""

import math

import pytest
import torch

from mdm.nn.ssd import Discretization, balanced_chunk, input_step, ssd, ssd_chunked, ssd_ref

F64 = torch.float64


def rel_err(actual: torch.Tensor, ref: torch.Tensor) -> float:
    """max |actual - ref| / max |ref|: one number per comparison, scale-free."""
    return ((actual.to(F64) - ref.to(F64)).abs().max() / ref.to(F64).abs().max()).item()


def make_inputs(b=2, l=17, h=4, p=3, g=2, n=5, dtype=F64, with_D=True, with_init=True, dt_range=(0.01, 0.5)):
    """Random scan inputs with a realistic range: positive dt (after softplus), negative A."""
    x = torch.randn(b, l, h, p, dtype=dtype)
    dt = torch.empty(b, l, h, dtype=dtype).uniform_(*dt_range)
    A = -torch.empty(h, dtype=dtype).uniform_(0.5, 4.0)
    B = torch.randn(b, l, g, n, dtype=dtype)
    C = torch.randn(b, l, g, n, dtype=dtype)
    D = torch.randn(h, dtype=dtype) if with_D else None
    s0 = torch.randn(b, h, p, n, dtype=dtype) if with_init else None
    return x, dt, A, B, C, D, s0


# --------------------------------------------------------------------------- chunked == reference

@pytest.mark.parametrize("with_D, with_init", [(False, False), (True, False), (False, True), (True, True)])
@pytest.mark.parametrize("n_groups", [1, 2])
@pytest.mark.parametrize("length", [1, 17, 64, 100])
@pytest.mark.parametrize("discretization", ["zoh", "euler"])
def test_chunked_matches_reference(discretization, length, n_groups, with_D, with_init):
    x, dt, A, B, C, D, s0 = make_inputs(l=length, g=n_groups, with_D=with_D, with_init=with_init)
    y_ref, s_ref = ssd_ref(x, dt, A, B, C, D, s0, discretization)
    assert y_ref.shape == x.shape and s_ref.shape == (2, 4, 3, 5)

    # Every chunk size gives the same answer: 1 (pure recurrence across chunks), 5 (17 pads to four
    # chunks of 5), 16 (divides 64; 17 runs as two chunks of 9, 100 as seven of 15, both padded),
    # 64 (a single chunk for all but 100, which runs as two chunks of 50).
    for chunk_size in (1, 5, 16, 64):
        y, s = ssd_chunked(x, dt, A, B, C, D, s0, discretization, chunk_size=chunk_size)
        assert y.shape == y_ref.shape and s.shape == s_ref.shape
        # float64: the two algorithms sum in different orders; measured <= 4e-16.
        assert rel_err(y, y_ref) < 1e-9, chunk_size
        assert rel_err(s, s_ref) < 1e-9, chunk_size

    # float32: measured <= 3e-7 against the float64 truth (a few ulps accumulated over <= 100
    # positions with decays < 1); 1e-5 leaves room for other BLAS / thread counts.
    args32 = [t if t is None else t.float() for t in (x, dt, A, B, C, D, s0)]
    for chunk_size in (5, 64):
        y32, s32 = ssd_chunked(*args32, discretization, chunk_size=chunk_size)
        assert y32.dtype == torch.float32 and s32.dtype == torch.float32
        assert rel_err(y32, y_ref) < 1e-5
        assert rel_err(s32, s_ref) < 1e-5


def test_balanced_chunk_is_fewest_chunks_with_least_padding():
    for chunk_size in (1, 5, 16, 64):
        for length in range(1, 300):
            chunk = balanced_chunk(length, chunk_size)
            n_chunks = math.ceil(length / chunk)
            assert chunk <= chunk_size
            assert n_chunks == math.ceil(length / chunk_size)  # no more chunks than the longest length needs
            assert 0 <= n_chunks * chunk - length < n_chunks  # at most one padded position per chunk
    assert balanced_chunk(100, 64) == 50 and balanced_chunk(36, 64) == 36 and balanced_chunk(128, 64) == 64


@pytest.mark.parametrize("chunk_size, segment_len", [(4, 8), (4, 12), (4, 14), (4, 40), (16, 32)])
@pytest.mark.parametrize("discretization", ["zoh", "euler"])
def test_segmented_equals_one_segment(discretization, chunk_size, segment_len):
    """Processing in segments (state carried across) equals a single segment; 14 rounds down to 12.
    (16, 32): segments of 32, 32, 32 and a 4-position tail, against one pass of seven chunks of 15."""
    x, dt, A, B, C, D, s0 = make_inputs(l=100, g=2)
    y_one, s_one = ssd_chunked(x, dt, A, B, C, D, s0, discretization, chunk_size=chunk_size, segment_len=4096)
    y_seg, s_seg = ssd_chunked(x, dt, A, B, C, D, s0, discretization, chunk_size=chunk_size,
                               segment_len=segment_len)
    # Exact where both cut the same chunks (chunk_size 4); 1e-12 rather than bitwise so a different
    # BLAS batching cannot make the test flaky, and so that (16, 32)'s other chunks fit in float64.
    assert rel_err(y_seg, y_one) < 1e-12
    assert rel_err(s_seg, s_one) < 1e-12
    y_ref, s_ref = ssd_ref(x, dt, A, B, C, D, s0, discretization)
    assert rel_err(y_seg, y_ref) < 1e-9 and rel_err(s_seg, s_ref) < 1e-9


def test_empty_sequence_returns_initial_state():
    x, dt, A, B, C, D, s0 = make_inputs(l=0)
    y, s = ssd_chunked(x, dt, A, B, C, D, s0)
    y_ref, s_ref = ssd_ref(x, dt, A, B, C, D, s0)
    assert y.shape == (2, 0, 4, 3) and y_ref.shape == (2, 0, 4, 3)
    assert torch.equal(s, s0) and torch.equal(s_ref, s0)


def test_dispatch_on_cpu_is_chunked():
    x, dt, A, B, C, D, s0 = make_inputs(l=33)
    y, s = ssd(x, dt, A, B, C, D, s0, "zoh", chunk_size=8)
    y_c, s_c = ssd_chunked(x, dt, A, B, C, D, s0, "zoh", chunk_size=8)
    assert torch.equal(y, y_c) and torch.equal(s, s_c)


def test_state_carries_across_calls():
    """Scanning [0, k) then [k, l) from the returned state equals scanning [0, l)."""
    x, dt, A, B, C, D, s0 = make_inputs(l=50)
    y_full, s_full = ssd_chunked(x, dt, A, B, C, D, s0, chunk_size=8)
    k = 21
    y1, s1 = ssd_chunked(x[:, :k], dt[:, :k], A, B[:, :k], C[:, :k], D, s0, chunk_size=8)
    y2, s2 = ssd_chunked(x[:, k:], dt[:, k:], A, B[:, k:], C[:, k:], D, s1, chunk_size=8)
    assert rel_err(torch.cat([y1, y2], dim=1), y_full) < 1e-12  # float64, same maths in another grouping
    assert rel_err(s2, s_full) < 1e-12


# --------------------------------------------------------------------------- gradients

# cpu_kernel_ok: True takes the recurrent C++ kernel (tests/nn/test_ssd_recurrent.py has its own), False the PyTorch
# chunked form, its fallback.
@pytest.mark.parametrize("cpu_kernel_ok", [True, False], ids=["kernel", "pytorch"])
@pytest.mark.parametrize("length, chunk_size", [(37, 8), (64, 16)])
@pytest.mark.parametrize("n_groups", [1, 2])
@pytest.mark.parametrize("discretization", ["zoh", "euler"])
def test_gradients_match_reference(discretization, n_groups, length, chunk_size, cpu_kernel_ok):
    leaves = [t.requires_grad_() for t in make_inputs(l=length, g=n_groups)]
    names = ["x", "dt", "A", "B", "C", "D", "initial_state"]
    y_ref, s_ref = ssd_ref(*leaves, discretization)
    gy, gs = torch.randn_like(y_ref), torch.randn_like(s_ref)  # one shared cotangent

    grads_ref = torch.autograd.grad((y_ref * gy).sum() + (s_ref * gs).sum(), leaves)
    y, s = ssd_chunked(*leaves, discretization, chunk_size=chunk_size, cpu_kernel_ok=cpu_kernel_ok)
    grads = torch.autograd.grad((y * gy).sum() + (s * gs).sum(), leaves)
    for name, g, g_ref in zip(names, grads, grads_ref):
        assert g.shape == g_ref.shape, name
        assert g_ref.abs().max() > 0, name  # every input matters, so the comparison is not vacuous
        # 10x the output tolerance: the backward sums over more terms (measured ~1e-15).
        assert rel_err(g, g_ref) < 1e-8, name


@pytest.mark.parametrize("cpu_kernel_ok", [True, False], ids=["kernel", "pytorch"])
@pytest.mark.parametrize("length, chunk_size", [(2, 8), (16, 16), (13, 64)])  # length 1: A has no effect
@pytest.mark.parametrize("discretization", ["zoh", "euler"])
def test_one_chunk_from_the_start_matches_reference_and_the_general_path(discretization, length, chunk_size,
                                                                          cpu_kernel_ok):
    """A sequence that fits one chunk with no initial state skips the cross-chunk pass: the reference's outputs,
    final state and gradients, and bit for bit the floats of the general path given an explicit zero state."""
    leaves = [t.requires_grad_() for t in make_inputs(l=length, g=2, with_init=False)[:6]]
    names = ["x", "dt", "A", "B", "C", "D"]
    y_ref, s_ref = ssd_ref(*leaves, discretization=discretization)
    gy, gs = torch.randn_like(y_ref), torch.randn_like(s_ref)  # one shared cotangent
    grads_ref = torch.autograd.grad((y_ref * gy).sum() + (s_ref * gs).sum(), leaves)
    y, s = ssd_chunked(*leaves, discretization=discretization, chunk_size=chunk_size,
                       cpu_kernel_ok=cpu_kernel_ok)
    assert rel_err(y, y_ref) < 1e-9 and rel_err(s, s_ref) < 1e-9
    grads = torch.autograd.grad((y * gy).sum() + (s * gs).sum(), leaves)
    for name, g, g_ref in zip(names, grads, grads_ref):
        assert g_ref.abs().max() > 0, name
        assert rel_err(g, g_ref) < 1e-8, name  # 10x the output tolerance, as above
    zeros = leaves[0].new_zeros(s.shape)
    y_general, s_general = ssd_chunked(*leaves, zeros, discretization, chunk_size=chunk_size,
                                       cpu_kernel_ok=cpu_kernel_ok)
    assert torch.equal(y, y_general) and torch.equal(s, s_general)
    grads_general = torch.autograd.grad((y_general * gy).sum() + (s_general * gs).sum(), leaves)
    for name, g, g_general in zip(names, grads, grads_general):
        assert torch.allclose(g, g_general, rtol=1e-12, atol=1e-14), name


# --------------------------------------------------------------------------- discretisation

def test_input_step_euler_is_dt():
    dt = torch.rand(3, 7, 4, dtype=F64)
    A = -torch.rand(4, dtype=F64) - 0.1
    assert torch.equal(input_step(dt, A, "euler"), dt)
    assert torch.equal(input_step(dt, A, Discretization.EULER), dt)


def test_input_step_zoh_is_the_hold_integral():
    """zoh gives expm1(dt A) / A = integral_0^dt exp(s A) ds (Eq. 13 with scalar A)."""
    dt = torch.tensor([1e-3, 0.1, 0.5, 2.0], dtype=F64)[:, None]
    A = torch.tensor([-0.3, -1.0, -5.0], dtype=F64)
    zoh = input_step(dt, A, "zoh")
    assert torch.allclose(zoh, torch.expm1(dt * A) / A, rtol=1e-14, atol=0)
    # Independent check by composite Simpson quadrature on 2000 intervals: its error
    # (dt/2000)^4 * dt * |A|^4 / 180 is < 1e-13 relative for every (dt, A) here.
    s = torch.linspace(0, 1, 2001, dtype=F64)
    w = torch.ones_like(s)
    w[1:-1:2], w[2:-1:2] = 4.0, 2.0
    for i in range(dt.shape[0]):
        for j in range(A.shape[0]):
            d, a = dt[i, 0], A[j]
            integral = (d / 2000 / 3) * (w * torch.exp(s * d * a)).sum()
            assert abs(zoh[i, j] - integral) / integral < 1e-11


def test_zoh_and_euler_agree_to_first_order_for_small_dt():
    A = torch.tensor([-0.5, -2.0, -8.0], dtype=F64)
    for d in (1e-2, 1e-3, 1e-4):
        dt = torch.full((3,), d, dtype=F64)
        zoh, euler = input_step(dt, A, "zoh"), input_step(dt, A, "euler")
        # zoh = dt + A dt^2 / 2 + O(dt^3): the difference is second order in dt.
        assert torch.allclose((zoh - euler) / d**2, A / 2, rtol=10 * d * A.abs().max().item())
    # ...and the scans agree accordingly.
    x, dt, A4, B, C, D, s0 = make_inputs(l=20, dt_range=(1e-4, 2e-4))
    y_z, _ = ssd_ref(x, dt, A4, B, C, D, s0, "zoh")
    y_e, _ = ssd_ref(x, dt, A4, B, C, D, s0, "euler")
    assert rel_err(y_z, y_e) < 1e-3  # dt |A| / 2 <= 4e-4 relative on the input term


def test_zoh_differs_from_euler_for_large_dt():
    dt = torch.tensor([2.0], dtype=F64)
    A = torch.tensor([-1.0], dtype=F64)
    assert abs(input_step(dt, A, "zoh").item() - (1 - math.exp(-2.0))) < 1e-15
    assert abs(input_step(dt, A, "zoh").item() - input_step(dt, A, "euler").item()) > 1.0
    x, dt4, A4, B, C, D, s0 = make_inputs(l=20, dt_range=(1.0, 2.0))
    y_z, _ = ssd_chunked(x, dt4, A4, B, C, None, None, "zoh", chunk_size=8)
    y_e, _ = ssd_chunked(x, dt4, A4, B, C, None, None, "euler", chunk_size=8)
    assert rel_err(y_z, y_e) > 0.1


@pytest.mark.parametrize("steps, dt_value", [(40, 0.05), (10, 0.2), (2, 1.0)])
def test_zoh_solves_the_continuous_system_exactly(steps, dt_value):
    """With a constant input, h' = A h + x from h = 0 reaches (exp(A T) - 1) / A * x at time T,
    whatever the step size: zoh is exact there, Euler is not."""
    a, T = -1.3, 2.0
    x = torch.ones(1, steps, 1, 1, dtype=F64)
    dt = torch.full((1, steps, 1), dt_value, dtype=F64)
    A = torch.tensor([a], dtype=F64)
    ones = torch.ones(1, steps, 1, 1, dtype=F64)
    exact = math.expm1(a * T) / a
    _, s_zoh = ssd_chunked(x, dt, A, ones, ones, discretization="zoh", chunk_size=4)
    _, s_euler = ssd_chunked(x, dt, A, ones, ones, discretization="euler", chunk_size=4)
    assert abs(s_zoh.item() - exact) < 1e-12 * abs(exact)
    assert abs(s_euler.item() - exact) > 1e-3 * abs(exact)


def test_unknown_discretization_raises():
    x, dt, A, B, C, D, s0 = make_inputs(l=4)
    with pytest.raises(ValueError, match="rk4"):
        ssd_chunked(x, dt, A, B, C, D, s0, discretization="rk4")


# --------------------------------------------------------------------------- bad input

def _valid():
    x, dt, A, B, C, D, s0 = make_inputs(b=2, l=6, h=4, p=3, g=2, n=5, dtype=torch.float32)
    return {"x": x, "dt": dt, "A": A, "B": B, "C": C, "D": D, "initial_state": s0}


BAD_INPUTS = [
    ("x 3-d", lambda a: a.update(x=a["x"][..., 0]), ValueError, r"x must be \(batch, length, heads, head_dim\)"),
    ("integer x", lambda a: a.update(x=a["x"].long()), TypeError, "x must be a floating-point"),
    ("dt shape", lambda a: a.update(dt=a["dt"][:, :-1]), ValueError, r"dt must be \(batch, length, heads\)"),
    ("A shape", lambda a: a.update(A=a["A"][:2]), ValueError, r"A must be \(heads,\)"),
    ("B ndim", lambda a: a.update(B=a["B"][..., 0], C=a["C"][..., 0]), ValueError, "B must be"),
    ("B length", lambda a: a.update(B=a["B"][:, :-1]), ValueError, "B must be"),
    ("C vs B", lambda a: a.update(C=a["C"][..., :-1]), ValueError, "C must have the shape of B"),
    ("heads vs groups", lambda a: a.update(B=torch.randn(2, 6, 3, 5), C=torch.randn(2, 6, 3, 5)), ValueError,
     r"heads \(4\) must be a multiple of groups \(3\)"),
    ("D shape", lambda a: a.update(D=a["D"][:3]), ValueError, r"D must be \(heads,\)"),
    ("state shape", lambda a: a.update(initial_state=a["initial_state"][..., :-1]), ValueError,
     "initial_state must be"),
    ("dt dtype", lambda a: a.update(dt=a["dt"].double()), TypeError, "dt has dtype torch.float64 but x has"),
    ("B dtype", lambda a: a.update(B=a["B"].double()), TypeError, "B has dtype"),
    ("state dtype", lambda a: a.update(initial_state=a["initial_state"].double()), TypeError,
     "initial_state has dtype"),
]


@pytest.mark.parametrize("fn", [ssd_chunked, ssd_ref], ids=["chunked", "ref"])
@pytest.mark.parametrize("case, mutate, exc, pattern", BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS])
def test_bad_input_names_the_argument(fn, case, mutate, exc, pattern):
    args = _valid()
    mutate(args)
    with pytest.raises(exc, match=pattern):
        fn(**args)


@pytest.mark.parametrize("chunk_size, segment_len", [(0, 2048), (16, 8)])
def test_bad_chunking_raises(chunk_size, segment_len):
    with pytest.raises(ValueError, match="chunk_size"):
        ssd_chunked(**_valid(), chunk_size=chunk_size, segment_len=segment_len)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the mamba_ssm kernel path needs a CUDA device")
@pytest.mark.parametrize("discretization", ["zoh", "euler"])
def test_cuda_dispatch_matches_cpu_chunked(discretization):
    """On CUDA, `ssd` uses mamba_ssm's kernel when it imports (ZOH through a rescaled x); same answer as CPU."""
    g = torch.Generator().manual_seed(0)
    b, l, h, p, n = 2, 200, 4, 16, 16
    x = torch.randn(b, l, h, p, generator=g)
    dt = torch.nn.functional.softplus(torch.randn(b, l, h, generator=g) - 1)
    A = -torch.rand(h, generator=g) - 0.5
    B, C = torch.randn(b, l, 1, n, generator=g), torch.randn(b, l, 1, n, generator=g)
    D = torch.randn(h, generator=g)
    y_cpu, s_cpu = ssd_chunked(x, dt, A, B, C, D, discretization=discretization)
    y_gpu, s_gpu = ssd(*(t.cuda() for t in (x, dt, A, B, C, D)), discretization=discretization)
    torch.testing.assert_close(y_gpu.cpu(), y_cpu, rtol=1e-3, atol=1e-3)  # TF32 / kernel ordering on GPU
    torch.testing.assert_close(s_gpu.cpu(), s_cpu, rtol=1e-3, atol=1e-3)


def test_decay_matrix_backward_matches_autograd_of_the_formula():
    """The hand-written backward of exp(segsum(a)) equals autograd through the plain formula (float64)."""
    from mdm.nn.ssd import decay_matrix, segsum

    a = (-torch.rand(3, 2, 9, dtype=torch.float64) * 2).requires_grad_()
    assert torch.autograd.gradcheck(decay_matrix, (a,))
    b = a.detach().clone().requires_grad_()
    cotangent = torch.randn(3, 2, 9, 9, dtype=torch.float64)
    (decay_matrix(a) * cotangent).sum().backward()
    (torch.exp(segsum(b)) * cotangent).sum().backward()
    torch.testing.assert_close(a.grad, b.grad, rtol=1e-12, atol=1e-12)
    assert torch.equal(decay_matrix(a.detach()).triu(1), torch.zeros(3, 2, 9, 9, dtype=torch.float64))
