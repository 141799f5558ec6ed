"""The Mamba-2 selective state-space scan (SSD), Eq. 10-13 of MDM (arXiv 2510.13253).

Per head h with scalar ``A_h < 0`` and per position ``t``::

    H_t = exp(dt_t * A) * H_{t-1} + dt_eff_t * x_t B_t^T      # Eq. 10, 12, 13
    y_t = H_t C_t + D * x_t                                   # Eq. 11

``dt_eff`` is the input step of the discretisation: zero-order hold (Eq. 13, the
paper) gives ``dt_eff = (exp(dt A) - 1) / A`` because ``A`` is a scalar per head,
so ``(dt A)^-1 (exp(dt A) - I) dt B`` collapses to a rescaled ``dt``; Euler (the
rule public Mamba-2 checkpoints were trained with) gives ``dt_eff = dt``.

Two implementations, tied by tests:

* :func:`ssd_ref` -- the sequential recurrence above, one position at a time.
  Obviously correct, slow; the reference.
* :func:`ssd_chunked` -- the state-space-duality algorithm (Dao & Gu 2024):
  quadratic "attention-like" form inside chunks of ``chunk_size`` positions, a
  linear recurrence carrying the state across chunks. Pure PyTorch, any device.

:func:`ssd` dispatches: the ``mamba_ssm`` Triton kernel on CUDA when it imports,
otherwise :func:`ssd_chunked`. On CPU it has C++ kernels, tied to :func:`ssd_ref` by tests:
for training, the plain recurrence with its backward (:mod:`mdm.nn.ssd_recurrent`,
``csrc/ssd_recurrent.cpp``); where no gradient is needed (sampling, evaluation), the whole
chunked scan in one pass a head (``csrc/ssd_scan.cpp``); and the in-chunk matrix of the
PyTorch form (:func:`decayed_scores`, ``csrc/decayed_scores.cpp``), which training took
before the recurrence and now only a build without ``ssd_recurrent`` reaches.

Shape letters: ``b`` batch, ``l`` sequence length, ``h`` heads, ``p`` head_dim,
``g`` groups of B/C (heads ``h = g * r`` share one B/C), ``n`` d_state,
``c`` chunks, ``s`` positions inside a chunk.
"""

from __future__ import annotations

import functools
from types import ModuleType

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from mdm.config import Discretization
from mdm.nn.cpu_kernels import cpu_kernel, kernel_applies
from mdm.nn.ssd_recurrent import ssd_recurrent


def input_step(dt: Tensor, A: Tensor, discretization: Discretization | str) -> Tensor:
    """``dt_eff``, the factor multiplying ``x_t B_t`` in Eq. 10 (shape of ``dt``).

    Zero-order hold, Eq. 13 with scalar A: ``(exp(dt A) - 1) / A``, written with
    ``expm1`` so that small ``dt A`` keeps its precision.
    """
    discretization = Discretization(discretization)
    if discretization is Discretization.EULER:
        return dt
    return torch.expm1(dt * A) / A


def _check_inputs(x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor,
                  D: Tensor | None, initial_state: Tensor | None) -> tuple[int, ...]:
    """Validate shapes and dtypes; return (b, l, h, p, g, n)."""
    if x.dim() != 4:
        raise ValueError(f"ssd: x must be (batch, length, heads, head_dim), got shape {tuple(x.shape)}")
    b, l, h, p = x.shape
    if not x.is_floating_point():
        raise TypeError(f"ssd: x must be a floating-point tensor, got {x.dtype}")
    if dt.shape != (b, l, h):
        raise ValueError(f"ssd: dt must be (batch, length, heads) = {(b, l, h)}, got {tuple(dt.shape)}")
    if A.shape != (h,):
        raise ValueError(f"ssd: A must be (heads,) = {(h,)}, got {tuple(A.shape)}")
    if B.dim() != 4 or B.shape[:2] != (b, l):
        raise ValueError(f"ssd: B must be (batch, length, groups, d_state) with batch, length = {(b, l)}, "
                         f"got {tuple(B.shape)}")
    g, n = B.shape[2:]
    if C.shape != B.shape:
        raise ValueError(f"ssd: C must have the shape of B {tuple(B.shape)}, got {tuple(C.shape)}")
    if h % g != 0:
        raise ValueError(f"ssd: heads ({h}) must be a multiple of groups ({g})")
    if D is not None and D.shape != (h,):
        raise ValueError(f"ssd: D must be (heads,) = {(h,)}, got {tuple(D.shape)}")
    if initial_state is not None and initial_state.shape != (b, h, p, n):
        raise ValueError(f"ssd: initial_state must be (batch, heads, head_dim, d_state) = {(b, h, p, n)}, "
                         f"got {tuple(initial_state.shape)}")
    for name, t in (("dt", dt), ("A", A), ("B", B), ("C", C), ("D", D), ("initial_state", initial_state)):
        if t is not None and t.dtype != x.dtype:
            raise TypeError(f"ssd: {name} has dtype {t.dtype} but x has {x.dtype}; pass one dtype")
    return b, l, h, p, g, n


def ssd_ref(x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None = None,
            initial_state: Tensor | None = None,
            discretization: Discretization | str = Discretization.ZOH) -> tuple[Tensor, Tensor]:
    """Sequential reference of the scan: Eq. 10-11 one position at a time.

    Args:
        x: (b, l, h, p) inputs.  dt: (b, l, h) positive steps (after softplus).
        A: (h,) negative decay rates.  B, C: (b, l, g, n).  D: (h,) skip or None.
        initial_state: (b, h, p, n) or None (zeros).
    Returns:
        y (b, l, h, p) and the final state (b, h, p, n).
    """
    b, l, h, p, g, n = _check_inputs(x, dt, A, B, C, D, initial_state)
    r = h // g
    A_bar = torch.exp(dt * A)  # Eq. 12
    scale = input_step(dt, A, discretization)  # Eq. 13
    Bh = B.repeat_interleave(r, dim=2)  # (b, l, h, n)
    Ch = C.repeat_interleave(r, dim=2)
    state = x.new_zeros(b, h, p, n) if initial_state is None else initial_state
    ys = []
    for t in range(l):
        state = A_bar[:, t, :, None, None] * state + (scale[:, t, :, None] * x[:, t])[..., None] * Bh[:, t, :, None, :]
        ys.append(torch.einsum("bhpn,bhn->bhp", state, Ch[:, t]))
    y = torch.stack(ys, dim=1) if ys else x.new_zeros(b, 0, h, p)
    if D is not None:
        y = y + D[:, None] * x
    return y, state


def segsum(a: Tensor) -> Tensor:
    """Segment sums: ``out[..., i, j] = a[..., j+1] + ... + a[..., i]`` for ``i >= j``, ``-inf`` above.

    ``exp(segsum(a))`` is the decay between positions ``j`` and ``i`` of a chunk.
    Computed as a difference of cumulative sums taken in float64, then cast
    back: a float32 difference of two large partial sums loses precision
    (max error of ``exp(segsum)`` 3.6e-6 against 4.8e-8 for decays in [-1.5, 0]
    over 64 positions), and the float64 difference is as exact as the
    masked-cumsum form of the minimal SSD listing while ~1.4x cheaper on CPU.
    """
    s = a.shape[-1]
    cs = torch.cumsum(a, dim=-1, dtype=torch.float64)
    out = (cs[..., :, None] - cs[..., None, :]).to(a.dtype)
    upper = torch.triu(torch.ones(s, s, dtype=torch.bool, device=a.device), diagonal=1)
    return out.masked_fill_(upper, float("-inf"))


class _DecayMatrix(torch.autograd.Function):
    """``exp(segsum(a))`` with a hand-written backward.

    Forward in float64 differences (as :func:`segsum`); backward in the input's
    dtype from the saved output: with ``L = exp(S)``, ``dS = dL * L`` (zero above
    the diagonal, where ``L = 0``), ``dcs_i = sum_j dS_ij - sum_j dS_ji`` and
    ``da`` is the reversed cumulative sum of ``dcs``. Autograd through the float64
    form kept three (s x s) float64 temporaries per chunk and head alive and was
    a third of a training step on CPU.
    """

    @staticmethod
    def forward(ctx, a: Tensor) -> Tensor:
        L = torch.exp(segsum(a))
        ctx.save_for_backward(L)
        return L

    @staticmethod
    def backward(ctx, grad_L: Tensor) -> Tensor:
        (L,) = ctx.saved_tensors
        dS = grad_L * L
        d_cs = dS.sum(-1) - dS.sum(-2)
        return d_cs.flip(-1).cumsum(-1).flip(-1)


def decay_matrix(a: Tensor) -> Tensor:
    """``L[..., i, j] = exp(a[j+1] + ... + a[i])`` for ``i >= j``, 0 above: the decays inside a chunk."""
    return _DecayMatrix.apply(a)


class _DecayedScores(torch.autograd.Function):
    """The CPU kernel ``csrc/decayed_scores.cpp``: ``CB * decay_matrix(a)`` in one pass a head, the
    backward recomputing the decays instead of keeping them."""

    @staticmethod
    def forward(ctx, CB: Tensor, a: Tensor, kernel: ModuleType) -> Tensor:
        ctx.save_for_backward(CB, a)
        ctx.kernel = kernel
        return kernel.forward(CB, a)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_M: Tensor):
        CB, a = ctx.saved_tensors
        dCB, da = ctx.kernel.backward(grad_M.contiguous(), CB, a)
        return dCB, da, None


def decayed_scores(CB: Tensor, a: Tensor, cpu_kernel_ok: bool = True) -> Tensor:
    """The in-chunk matrix of step 1: ``M[..., r, i, j] = (C_i . B_j) exp(a_{j+1} + ... + a_i)``, 0 above.

    CB: (b, c, g, s, s);  a: (b, c, g, r, s)  ->  (b, c, g, r, s, s). By the C++ kernel for float32/64 CPU
    tensors outside ``torch.compile`` when ``cpu_kernel_ok`` and it builds, else as ``CB * decay_matrix(a)``.
    Why a kernel: at the presets' ~100 tokens the segment sums, the mask, the exps and this product were a
    fifth of a CPU training step as separate (s x s) tensors per head (``mdm bench train-step``).
    """
    kernel = cpu_kernel("decayed_scores") if cpu_kernel_ok and kernel_applies(CB) else None
    if kernel is None:
        return CB[:, :, :, None] * decay_matrix(a)
    return _DecayedScores.apply(CB.contiguous(), a.contiguous(), kernel)


def _ssd_chunks(xs: Tensor, a: Tensor, B: Tensor, C: Tensor, state: Tensor | None,
                chunk_size: int, cpu_kernel_ok: bool = True) -> tuple[Tensor, Tensor]:
    """SSD on a length that is a multiple of ``chunk_size``.

    xs: (b, l, h, p) inputs already scaled by dt_eff;  a: (b, l, h) log-decays dt*A;
    B, C: (b, l, g, n);  state: (b, h, p, n) entering the first position, None for zeros.
    Returns y without the D skip, and the state after the last position.

    A sequence that starts here (``state`` None) and fits one chunk skips steps 3 and 4: no
    state enters, so their term is exactly zero and the result the same floats. Skipping
    only the first chunk's term of a longer sequence measured no faster (the slice and its
    gradient cost what the product saves).
    """
    b, l, h, p = xs.shape
    g, n = B.shape[2:]
    r, s = h // g, chunk_size
    c = l // s
    # Heads are laid out (g, r) so that one B/C serves r heads without a copy.
    xs = xs.reshape(b, c, s, g, r, p).permute(0, 1, 3, 4, 2, 5)  # (b, c, g, r, s, p)
    a = a.reshape(b, c, s, g, r).permute(0, 1, 3, 4, 2)  # (b, c, g, r, s)
    B = B.reshape(b, c, s, g, n).transpose(2, 3)  # (b, c, g, s, n)
    C = C.reshape(b, c, s, g, n).transpose(2, 3)
    a_cum = torch.cumsum(a, dim=-1)  # (b, c, g, r, s)

    # 1. Inside each chunk (the quadratic, attention-like form):
    #    y_i = sum_{j<=i} C_i.B_j exp(a_{j+1} + ... + a_i) xs_j.  C.B^T once per group.
    CB = C @ B.transpose(-1, -2)  # (b, c, g, s, s)
    y = decayed_scores(CB, a, cpu_kernel_ok) @ xs  # (b, c, g, r, s, p)

    # 2. Each chunk's own contribution to the state at its last position.
    #    exp(a_{j+1} + ... + a_{s-1}): segsum's last row, a float64 difference (no cancellation).
    a_cum64 = torch.cumsum(a, dim=-1, dtype=torch.float64)
    decay_to_end = torch.exp((a_cum64[..., -1:] - a_cum64).to(a.dtype))
    chunk_states = (xs * decay_to_end[..., None]).transpose(-1, -2) @ B[:, :, :, None]  # (b, c, g, r, p, n)

    # 3. Carry the state across chunks: an O(c) recurrence, not the c x c matrix
    #    of the minimal listing (which costs c^2 memory for nothing on a CPU).
    if state is None and c == 1:  # one chunk, nothing entering: its own state is the final one
        return y.permute(0, 1, 4, 2, 3, 5).reshape(b, l, h, p), chunk_states[:, 0].reshape(b, h, p, n)
    chunk_decay = torch.exp(a_cum[..., -1])  # (b, c, g, r)
    state = xs.new_zeros(b, g, r, p, n) if state is None else state.reshape(b, g, r, p, n)
    entering = []
    for k in range(c):
        entering.append(state)
        state = torch.addcmul(chunk_states[:, k], chunk_decay[:, k, :, :, None, None], state)
    states_in = torch.stack(entering, dim=1)  # (b, c, g, r, p, n)

    # 4. The state entering a chunk, decayed to each position, read out by C.
    y = y + (C[:, :, :, None] @ states_in.transpose(-1, -2)) * torch.exp(a_cum)[..., None]
    y = y.permute(0, 1, 4, 2, 3, 5).reshape(b, l, h, p)
    return y, state.reshape(b, h, p, n)


def balanced_chunk(length: int, chunk_size: int) -> int:
    """The chunk length that covers ``length`` positions with the fewest chunks of at most
    ``chunk_size``, padding at most one position per chunk (``ceil(length / ceil(length / chunk_size))``)."""
    if length == 0:
        return chunk_size
    n_chunks = -(-length // chunk_size)
    return -(-length // n_chunks)


def _needs_grad(tensors: tuple[Tensor | None, ...]) -> bool:
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def _ssd_scan_kernel(kernel: ModuleType, x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None,
                     initial_state: Tensor | None, discretization: Discretization | str,
                     chunk: int) -> tuple[Tensor, Tensor]:
    """:func:`ssd_chunked` by the C++ kernel ``csrc/ssd_scan.cpp``: every step of :func:`_ssd_chunks` and
    the D skip in one pass a head, with no layout copies; its one temporary is the in-chunk ``C . B``
    (``chunk`` values a position and group), so it needs no segments either. Why: at a few hundred
    tokens the PyTorch form is ~40 ops a call, mostly copies and small elementwise passes, and ran 3-5x
    slower (``benchmarks/results/ssd-ab-fused-scan.md``). Forward only; what needs a gradient takes the PyTorch form."""
    empty = x.new_empty(0)
    y, state = kernel.forward(x.contiguous(), input_step(dt, A, discretization).contiguous(),
                              (dt * A).contiguous(), B.contiguous(), C.contiguous(),
                              empty if D is None else D.contiguous(),
                              empty if initial_state is None else initial_state.contiguous(), chunk)
    return y, state


def ssd_chunked(x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None = None,
                initial_state: Tensor | None = None,
                discretization: Discretization | str = Discretization.ZOH,
                chunk_size: int = 64, segment_len: int = 2048, cpu_kernel_ok: bool = True) -> tuple[Tensor, Tensor]:
    """Chunked SSD scan, equal to :func:`ssd_ref` up to rounding.

    ``chunk_size`` 64 is the CPU default: the GPU kernels' 256 was 1.5-3x slower
    on this project's CPU (exp / mask / segment-sum dominate, not matmuls). It is
    the longest chunk: a segment is cut into the fewest chunks of at most that
    length, all of one length (:func:`balanced_chunk`), so a 100-token sequence
    runs as two chunks of 50, not two of 64 with 28 positions of padding: the
    quadratic in-chunk work is ``chunks * chunk^2``.
    Sequences longer than ``segment_len`` are processed in segments with the
    state carried, which is exact and keeps every temporary small: temporaries
    above ~32 MB are freshly mmapped by glibc and page-fault on every call (about
    2x slower at 16-64K tokens). Any length works: the tail is padded with
    ``dt = 0`` (decay 1, no input), which leaves the state unchanged.
    ``cpu_kernel_ok`` lets a CPU float call take a C++ kernel (same results up to rounding): one that needs
    a gradient (training) the plain recurrence with its backward (:func:`mdm.nn.ssd_recurrent.ssd_recurrent`),
    one that needs none (sampling, evaluation) the fused forward scan (``csrc/ssd_scan.cpp``); without them,
    step 1 of this form takes its own (:func:`decayed_scores`). Why the recurrence for training: one scan's
    forward and backward at the moving-digits preset's shapes (batch 16, 167 positions, 8 heads of 32,
    d_state 32, one thread) took 8.7 ms against this form's 28.8 ms, and it won at every length measured,
    up to 4096 (246 ms against 1.83 s), so it is taken at any length (``benchmarks/results/ssd-ab-recurrent.md``).

    Args and returns as :func:`ssd_ref`.
    """
    b, l, h, p, g, n = _check_inputs(x, dt, A, B, C, D, initial_state)
    if chunk_size < 1 or segment_len < chunk_size:
        raise ValueError(f"ssd_chunked: need 1 <= chunk_size <= segment_len, got {chunk_size}, {segment_len}")
    needs_grad = _needs_grad((x, dt, A, B, C, D, initial_state))
    kernel = (cpu_kernel("ssd_recurrent" if needs_grad else "ssd_scan") if cpu_kernel_ok and kernel_applies(x)
              else None)
    if kernel is not None and needs_grad:
        return ssd_recurrent(kernel, x, input_step(dt, A, discretization), dt * A, B, C, D, initial_state)
    if kernel is not None:
        return _ssd_scan_kernel(kernel, x, dt, A, B, C, D, initial_state, discretization,
                                balanced_chunk(l, chunk_size))
    segment_len -= segment_len % chunk_size
    a = dt * A  # log of A_bar, Eq. 12
    xs = x * input_step(dt, A, discretization)[..., None]  # Eq. 13 applied to the input
    state = initial_state  # None: zeros, which _ssd_chunks skips
    ys = []
    for start in range(0, l, segment_len):
        stop = min(start + segment_len, l)
        seg_xs, seg_a, seg_B, seg_C = xs[:, start:stop], a[:, start:stop], B[:, start:stop], C[:, start:stop]
        chunk = balanced_chunk(stop - start, chunk_size)
        pad = (-(stop - start)) % chunk
        if pad:
            seg_xs = F.pad(seg_xs, (0, 0, 0, 0, 0, pad))
            seg_a = F.pad(seg_a, (0, 0, 0, pad))
            seg_B = F.pad(seg_B, (0, 0, 0, 0, 0, pad))
            seg_C = F.pad(seg_C, (0, 0, 0, 0, 0, pad))
        y, state = _ssd_chunks(seg_xs, seg_a, seg_B, seg_C, state, chunk, cpu_kernel_ok)
        ys.append(y[:, : stop - start])
    y = torch.cat(ys, dim=1) if ys else x.new_zeros(b, 0, h, p)
    if D is not None:
        y = y + D[:, None] * x
    return y, x.new_zeros(b, h, p, n) if state is None else state


@functools.cache
def _mamba_ssm_kernel():
    """The ``mamba_ssm`` Triton scan if it imports, else None (cached, imported lazily)."""
    try:
        from mamba_ssm.ops.triton.ssd_combined import mamba_chunk_scan_combined
    except Exception:  # ImportError, or a CUDA/Triton mismatch raised at import
        return None
    return mamba_chunk_scan_combined


def ssd(x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None = None,
        initial_state: Tensor | None = None,
        discretization: Discretization | str = Discretization.ZOH,
        chunk_size: int = 64, use_kernel: bool = True, cpu_kernel_ok: bool = True) -> tuple[Tensor, Tensor]:
    """The scan used by the blocks: ``mamba_ssm``'s kernel on CUDA if available, else :func:`ssd_chunked`
    (with its CPU kernel when ``cpu_kernel_ok``).

    The kernel implements Euler (``x * dt``). For ZOH we hand it ``x * dt_eff / dt``
    so that its ``dt * x`` equals ``dt_eff * x`` while its decay stays ``exp(dt A)``,
    and add the D skip ourselves (the kernel's would use the rescaled x).
    """
    kernel = _mamba_ssm_kernel() if (use_kernel and x.is_cuda) else None
    if kernel is None:
        return ssd_chunked(x, dt, A, B, C, D, initial_state, discretization, chunk_size,
                           cpu_kernel_ok=cpu_kernel_ok)
    _check_inputs(x, dt, A, B, C, D, initial_state)
    x_in = x
    if Discretization(discretization) is Discretization.ZOH:
        x_in = x * (input_step(dt, A, discretization) / dt)[..., None]
    y, final_state = kernel(x_in, dt, A, B, C, chunk_size=max(chunk_size, 64), D=None,
                            initial_states=initial_state, return_final_states=True)
    if D is not None:
        y = y + D[:, None] * x
    return y, final_state
