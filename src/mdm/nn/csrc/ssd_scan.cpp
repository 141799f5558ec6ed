// The whole chunked SSD scan in one pass a head, forward only (mdm/nn/ssd.py holds the PyTorch reference,
// ssd_chunked, and the sequential ssd_ref that both are tested against). Per head, chunk by chunk:
//     y_i  = sum_{j <= i in the chunk} (C_i . B_j) exp(cs_i - cs_j) step_j x_j      (the in-chunk form)
//          + exp(cs_i) C_i . H                                                      (the state entering it)
//          + D x_i                                                                  (the skip, Eq. 11)
//     H   <- exp(cs_last) H + sum_j exp(cs_last - cs_j) step_j x_j B_j^T            (the state leaving it)
// with cs the cumulative log-decays a = dt A inside the chunk, summed in float64 as segsum() does, and
// step = dt_eff (Eq. 13). The PyTorch form does this as ~40 tensor ops a call, most of them layout copies
// and small elementwise passes, each costing more than its arithmetic at the presets' lengths. No autograd:
// sampling and evaluation run here; training keeps the PyTorch form with its decayed_scores kernel.
#include <torch/extension.h>

#include <ATen/Parallel.h>
#include <ATen/cpu/vec/vec.h>

#include <algorithm>
#include <cmath>
#include <vector>

namespace {

// out[0:p] = base[0:p] + sum_q w[q] * rows[q * stride + 0:p], `count` rows: one output row of a product; gemm
// below uses it for the rows and columns left over by its 4-row blocks. Four vectors of columns at a time stay
// in registers across the rows. base may be null (zeros) or alias out.
template <typename T>
void weighted_rows(T* out, const T* base, const T* w, const T* rows, int64_t stride, int64_t count, int64_t p) {
  using Vec = at::vec::Vectorized<T>;
  constexpr int64_t V = Vec::size();
  int64_t e = 0;
  for (; e + 4 * V <= p; e += 4 * V) {
    // Two sets of accumulators, even and odd rows (meant to hide the FMA latency; measured no faster at 2048
    // tokens than one set; not yet reverted and re-measured).
    Vec a0(0), a1(0), a2(0), a3(0), b0(0), b1(0), b2(0), b3(0);
    if (base) {
      a0 = Vec::loadu(base + e), a1 = Vec::loadu(base + e + V);
      a2 = Vec::loadu(base + e + 2 * V), a3 = Vec::loadu(base + e + 3 * V);
    }
    int64_t q = 0;
    for (; q + 1 < count; q += 2) {
      const Vec wq(w[q]), wr(w[q + 1]);
      const T* row = rows + q * stride + e;
      const T* next = row + stride;
      a0 = at::vec::fmadd(wq, Vec::loadu(row), a0);
      b0 = at::vec::fmadd(wr, Vec::loadu(next), b0);
      a1 = at::vec::fmadd(wq, Vec::loadu(row + V), a1);
      b1 = at::vec::fmadd(wr, Vec::loadu(next + V), b1);
      a2 = at::vec::fmadd(wq, Vec::loadu(row + 2 * V), a2);
      b2 = at::vec::fmadd(wr, Vec::loadu(next + 2 * V), b2);
      a3 = at::vec::fmadd(wq, Vec::loadu(row + 3 * V), a3);
      b3 = at::vec::fmadd(wr, Vec::loadu(next + 3 * V), b3);
    }
    if (q < count) {
      const Vec wq(w[q]);
      const T* row = rows + q * stride + e;
      a0 = at::vec::fmadd(wq, Vec::loadu(row), a0);
      a1 = at::vec::fmadd(wq, Vec::loadu(row + V), a1);
      a2 = at::vec::fmadd(wq, Vec::loadu(row + 2 * V), a2);
      a3 = at::vec::fmadd(wq, Vec::loadu(row + 3 * V), a3);
    }
    (a0 + b0).store(out + e), (a1 + b1).store(out + e + V);
    (a2 + b2).store(out + e + 2 * V), (a3 + b3).store(out + e + 3 * V);
  }
  for (; e + V <= p; e += V) {
    Vec acc = base ? Vec::loadu(base + e) : Vec(0);
    for (int64_t q = 0; q < count; ++q) acc = at::vec::fmadd(Vec(w[q]), Vec::loadu(rows + q * stride + e), acc);
    acc.store(out + e);
  }
  for (; e < p; ++e) {
    T acc = base ? base[e] : T(0);
    for (int64_t q = 0; q < count; ++q) acc += w[q] * rows[q * stride + e];
    out[e] = acc;
  }
}

// out (M x p, row stride ldo) = [out +] A (M x K, row stride lda) @ R (K x p, row stride ldr). Blocks of four rows
// and two vectors of columns keep eight accumulators in registers, each row of R loaded once for four rows of
// out (weighted_rows alone reloads it for every row); the leftover rows and columns go through weighted_rows.
// `K_of(i0)` gives the rows of R a block starting at row i0 needs (all K, or fewer for a triangular A).
template <typename T, typename KOf>
void gemm(T* out, int64_t ldo, const T* A, int64_t lda, const T* R, int64_t ldr, int64_t M, int64_t p,
          bool accumulate, KOf K_of) {
  using Vec = at::vec::Vectorized<T>;
  constexpr int64_t V = Vec::size();
  int64_t i0 = 0;
  for (; i0 + 4 <= M; i0 += 4) {
    const int64_t K = K_of(i0 + 3);
    int64_t e = 0;
    for (; e + 2 * V <= p; e += 2 * V) {
      Vec acc[4][2];
      for (int ii = 0; ii < 4; ++ii)
        for (int v = 0; v < 2; ++v)
          acc[ii][v] = accumulate ? Vec::loadu(out + (i0 + ii) * ldo + e + v * V) : Vec(0);
      for (int64_t k = 0; k < K; ++k) {
        const Vec r0 = Vec::loadu(R + k * ldr + e), r1 = Vec::loadu(R + k * ldr + e + V);
        for (int ii = 0; ii < 4; ++ii) {
          const Vec a(A[(i0 + ii) * lda + k]);
          acc[ii][0] = at::vec::fmadd(a, r0, acc[ii][0]);
          acc[ii][1] = at::vec::fmadd(a, r1, acc[ii][1]);
        }
      }
      for (int ii = 0; ii < 4; ++ii)
        for (int v = 0; v < 2; ++v) acc[ii][v].store(out + (i0 + ii) * ldo + e + v * V);
    }
    if (e < p)
      for (int64_t i = i0; i < i0 + 4; ++i)
        weighted_rows<T>(out + i * ldo + e, accumulate ? out + i * ldo + e : nullptr, A + i * lda, R + e, ldr,
                         K, p - e);
  }
  for (int64_t i = i0; i < M; ++i)
    weighted_rows<T>(out + i * ldo, accumulate ? out + i * ldo : nullptr, A + i * lda, R, ldr, K_of(i), p);
}

// out[0:m] = exp(float(src[0:m])), vectorised exp (ATen's Sleef where the build targets AVX2).
template <typename T>
inline void exp_into(T* out, const double* src, int64_t m) {
  using Vec = at::vec::Vectorized<T>;
  for (int64_t j = 0; j < m; ++j) out[j] = T(src[j]);
  int64_t j = 0;
  for (; j + Vec::size() <= m; j += Vec::size()) Vec::loadu(out + j).exp().store(out + j);
  for (; j < m; ++j) out[j] = std::exp(out[j]);
}

template <typename T>
void scan(const T* xp, const T* sp, const T* ap, const T* Bp, const T* Cp, const T* Dp, const T* h0, T* yp, T* hp,
          int64_t b, int64_t l, int64_t h, int64_t p, int64_t g, int64_t n, int64_t chunk) {
  const int64_t r = h / g, chunks = (l + chunk - 1) / chunk;
  // 1. C_i . B_j inside every chunk, once per group (its r heads share it): CB[(bb, gg, c)] is (chunk x chunk),
  //    C @ B^T with B^T copied out of the chunk first.
  std::vector<T> CB(b * g * chunks * chunk * chunk);
  at::parallel_for(0, b * g * chunks, 1, [&](int64_t begin, int64_t end) {
    std::vector<T> Bt(n * chunk);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t c = task % chunks, bg = task / chunks, bb = bg / g, gg = bg % g;
      const int64_t t0 = c * chunk, m = std::min(chunk, l - t0);
      for (int64_t j = 0; j < m; ++j)
        for (int64_t k = 0; k < n; ++k) Bt[k * chunk + j] = Bp[((bb * l + t0 + j) * g + gg) * n + k];
      T* cb = CB.data() + task * chunk * chunk;
      gemm<T>(cb, chunk, Cp + ((bb * l + t0) * g + gg) * n, g * n, Bt.data(), chunk, m, m, false,
              [n](int64_t) { return n; });
    }
  });
  // 2. One task a (batch, head): its chunks in order, carrying the state H (n x p, rows along d_state).
  at::parallel_for(0, b * h, 1, [&](int64_t begin, int64_t end) {
    std::vector<double> cs(chunk), diff(chunk);
    std::vector<T> w(chunk), steps(chunk), H(n * p), Bk(n * chunk), E(chunk * n), W(chunk * chunk);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t bb = task / h, hh = task % h, gg = hh / r;
      if (h0) {  // (p, n) -> (n, p)
        for (int64_t e = 0; e < p; ++e)
          for (int64_t k = 0; k < n; ++k) H[k * p + e] = h0[task * p * n + e * n + k];
      } else {
        std::fill(H.begin(), H.end(), T(0));
      }
      bool state_zero = !h0;
      const int64_t xstride = h * p;  // from one position to the next in x and y
      for (int64_t c = 0; c < chunks; ++c) {
        const int64_t t0 = c * chunk, m = std::min(chunk, l - t0);
        const T* x0 = xp + ((bb * l + t0) * h + hh) * p;
        T* y0 = yp + ((bb * l + t0) * h + hh) * p;  // y and x rows are xstride apart
        const T* cb = CB.data() + ((bb * g + gg) * chunks + c) * chunk * chunk;
        double run = 0;
        for (int64_t i = 0; i < m; ++i) {
          cs[i] = run += double(ap[(bb * l + t0 + i) * h + hh]);
          steps[i] = sp[(bb * l + t0 + i) * h + hh];
        }
        // y = D x, then + E H with E_ik = exp(cs_i) C_ik (the state entering the chunk, read out and decayed),
        // then + W x with W_ij = (C_i . B_j) exp(cs_i - cs_j) step_j for j <= i (the chunk's own positions).
        for (int64_t i = 0; i < m; ++i)
          for (int64_t e = 0; e < p; ++e) y0[i * xstride + e] = Dp ? Dp[hh] * x0[i * xstride + e] : T(0);
        if (!state_zero) {
          for (int64_t i = 0; i < m; ++i) {
            const T into = T(std::exp(cs[i]));
            const T* Ci = Cp + ((bb * l + t0 + i) * g + gg) * n;
            for (int64_t k = 0; k < n; ++k) E[i * n + k] = into * Ci[k];
          }
          gemm<T>(y0, xstride, E.data(), n, H.data(), p, m, p, true, [n](int64_t) { return n; });
        }
        for (int64_t i = 0; i < m; ++i) {
          T* wi = W.data() + i * chunk;
          for (int64_t j = 0; j <= i; ++j) diff[j] = cs[i] - cs[j];
          exp_into(wi, diff.data(), i + 1);
          for (int64_t j = 0; j <= i; ++j) wi[j] *= cb[i * chunk + j] * steps[j];
          for (int64_t j = i + 1; j < std::min(m, (i | 3) + 1); ++j) wi[j] = 0;  // up to the end of its block
        }
        gemm<T>(y0, xstride, W.data(), chunk, x0, xstride, m, p, true, [](int64_t i) { return i + 1; });
        // The state leaving the chunk: H = exp(cs_last) H + Bk x with Bk_kj = exp(cs_last - cs_j) step_j B_jk.
        for (int64_t j = 0; j < m; ++j) diff[j] = cs[m - 1] - cs[j];
        exp_into(w.data(), diff.data(), m);
        const T* B0 = Bp + ((bb * l + t0) * g + gg) * n;
        for (int64_t j = 0; j < m; ++j) {
          const T wj = w[j] * steps[j];
          for (int64_t k = 0; k < n; ++k) Bk[k * chunk + j] = wj * B0[j * g * n + k];
        }
        if (!state_zero) {
          const T through = T(std::exp(cs[m - 1]));
          for (auto& v : H) v *= through;
        }
        gemm<T>(H.data(), p, Bk.data(), chunk, x0, xstride, n, p, !state_zero, [m](int64_t) { return m; });
        state_zero = false;
      }
      for (int64_t e = 0; e < p; ++e)
        for (int64_t k = 0; k < n; ++k) hp[task * p * n + e * n + k] = H[k * p + e];
    }
  });
}

// x (b, l, h, p), step (b, l, h), a (b, l, h), B and C (b, l, g, n), D (h) or empty, state (b, h, p, n) or
// empty (zeros), chunk >= 1. Returns y (b, l, h, p) and the state after the last position (b, h, p, n).
std::vector<torch::Tensor> forward(const torch::Tensor& x, const torch::Tensor& step, const torch::Tensor& a,
                                   const torch::Tensor& B, const torch::Tensor& C, const torch::Tensor& D,
                                   const torch::Tensor& state, int64_t chunk) {
  TORCH_CHECK(x.device().is_cpu() && x.dim() == 4 && x.is_contiguous(), "x: a contiguous CPU (b, l, h, p) tensor");
  const int64_t b = x.size(0), l = x.size(1), h = x.size(2), p = x.size(3);
  TORCH_CHECK(B.dim() == 4 && B.size(0) == b && B.size(1) == l && B.size(2) > 0 && h % B.size(2) == 0,
              "B: (b, l, g, n) with g dividing h");
  const int64_t g = B.size(2), n = B.size(3);
  for (const auto* t : {&step, &a})
    TORCH_CHECK(t->device().is_cpu() && t->is_contiguous() && t->sizes() == at::IntArrayRef({b, l, h}),
                "step and a: contiguous CPU (b, l, h) tensors");
  for (const auto* t : {&B, &C})
    TORCH_CHECK(t->device().is_cpu() && t->is_contiguous() && t->sizes() == B.sizes(),
                "B and C: contiguous CPU (b, l, g, n) tensors");
  TORCH_CHECK(D.numel() == 0 || (D.device().is_cpu() && D.is_contiguous() && D.sizes() == at::IntArrayRef({h})),
              "D: a contiguous CPU (h,) tensor, or empty");
  TORCH_CHECK(state.numel() == 0 || (state.device().is_cpu() && state.is_contiguous() &&
                                     state.sizes() == at::IntArrayRef({b, h, p, n})),
              "state: a contiguous CPU (b, h, p, n) tensor, or empty");
  for (const auto* t : {&step, &a, &B, &C, &D, &state})
    TORCH_CHECK(t->numel() == 0 || t->scalar_type() == x.scalar_type(), "every input must share x's dtype");
  TORCH_CHECK(chunk >= 1, "chunk must be >= 1");
  auto y = torch::empty_like(x);
  auto final_state = state.numel() ? state.clone() : torch::zeros({b, h, p, n}, x.options());
  if (l == 0) return {y, final_state};
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "ssd_scan_forward", [&] {
    scan<scalar_t>(x.data_ptr<scalar_t>(), step.data_ptr<scalar_t>(), a.data_ptr<scalar_t>(), B.data_ptr<scalar_t>(),
                   C.data_ptr<scalar_t>(), D.numel() ? D.data_ptr<scalar_t>() : nullptr,
                   state.numel() ? state.data_ptr<scalar_t>() : nullptr, y.data_ptr<scalar_t>(),
                   final_state.data_ptr<scalar_t>(), b, l, h, p, g, n, chunk);
  });
  return {y, final_state};
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &forward, "the chunked SSD scan with its D skip, forward only: (y, final state)");
}
