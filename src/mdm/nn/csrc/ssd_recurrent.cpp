// The SSD scan as its plain recurrence, forward and backward, for training on CPU (mdm/nn/ssd_recurrent.py wraps
// it in autograd; mdm/nn/ssd.py holds the sequential reference ssd_ref it is tested against). Per (batch, head),
// with u_t = step_t x_t (step = dt_eff, Eq. 13) and alpha_t = exp(a_t), a = dt A:
//     H_t = alpha_t H_{t-1} + u_t B_t^T          (H: head_dim x d_state)
//     y_t = H_t C_t + D x_t
// Backward, with G_t the gradient reaching H_t (dy_t C_t^T, plus the final state's gradient at the last position):
//     g_t   = alpha_{t+1} g_{t+1} + G_t           (the adjoint, run from the last position back)
//     du_t  = g_t B_t,   dB_t = sum over the group's heads of g_t^T u_t,   dC_t = sum of H_t^T dy_t
//     da_t  = sum_{k >= t} (C_k . H_k^T dy_k + [k last] <dH_final, H_k> - u_k . du_k)
//     dH_in = alpha_0 g_0                       (H_in: the state entering position 0)
// The da line is d/da of the decays exp(a_{j+1} + ... + a_t) written through the cumulative log-decays (as the
// decayed_scores kernel's backward does): it needs no H_{t-1} in the reverse pass, so the backward is two sweeps
// per head, one forward (rebuilding H_t to read dC and the C . H^T dy terms) and one reverse (the adjoint); it keeps
// one state per 32 positions (where the da sum restarts) and one scalar per position, a thread. Why not the chunked
// form: at the presets' ~100-200 positions its ~40 tensor ops a call (batched matmuls on small blocks, layout
// copies, masks) cost more than the recurrence's 2 (forward) and 5 (backward) multiply-adds per state entry and
// position, and here the 32 x 32 state stays in L1.
#include <torch/extension.h>

#include <ATen/Parallel.h>
#include <ATen/cpu/vec/vec.h>

#include <cmath>
#include <type_traits>
#include <vector>

namespace {

// A (b, l, h, width) tensor read row by row: any strides but a contiguous last dimension (x, B and C arrive as
// views of the conv output, and a copy of each would cost more than this scan's own arithmetic).
template <typename T>
struct Rows {
  T* data;
  int64_t s0, s1, s2;
  T* at(int64_t bb, int64_t t, int64_t hh) const { return data + bb * s0 + t * s1 + hh * s2; }
};

template <typename T>
Rows<const T> rows_of(const torch::Tensor& t) {
  return {t.data_ptr<T>(), t.stride(0), t.stride(1), t.stride(2)};
}

// One block of J vectors of columns [0, J V) of the (rows x cols) state H (row stride ld), for every row i:
//     H[i] = alpha H[i] + rin[i] cin,    cout = sum_i rout[i] H[i]
// and with Dot also P[i] (+)= the lane-wise products H[i] * cdot (row sums taken later by row_sums). The block's
// vectors stay in registers across the rows; each row of H is loaded and stored once. Always inlined: called,
// gcc stored the accumulators to the stack at every row (the forward at the preset's shapes took twice as long).
template <typename T, int J, bool Dot>
__attribute__((always_inline)) inline void sweep_block(T* H, int64_t ld, int64_t rows, T alpha, const T* rin,
                                                       const T* cin, const T* rout, T* cout, const T* cdot, T* P,
                                                       bool accumulate) {
  using Vec = at::vec::Vectorized<T>;
  constexpr int64_t V = Vec::size();
  Vec in[J], acc[J], dot[J];
  for (int v = 0; v < J; ++v) {
    in[v] = Vec::loadu(cin + v * V), acc[v] = Vec(0);
    if (Dot) dot[v] = Vec::loadu(cdot + v * V);
  }
  const Vec decay(alpha);
  for (int64_t i = 0; i < rows; ++i) {
    T* row = H + i * ld;
    const Vec ri(rin[i]), ro(rout[i]);
    Vec part(0);
    for (int v = 0; v < J; ++v) {
      const Vec hv = at::vec::fmadd(decay, Vec::loadu(row + v * V), ri * in[v]);
      hv.store(row + v * V);
      acc[v] = at::vec::fmadd(ro, hv, acc[v]);
      if (Dot) part = at::vec::fmadd(hv, dot[v], part);
    }
    if (Dot) (accumulate ? part + Vec::loadu(P + i * V) : part).store(P + i * V);
  }
  for (int v = 0; v < J; ++v) acc[v].store(cout + v * V);
}

// sweep_block over all `cols` columns (a multiple of the vector width; the caller pads with zeros).
template <typename T, bool Dot>
void sweep(T* H, int64_t ld, int64_t rows, int64_t cols, T alpha, const T* rin, const T* cin, const T* rout, T* cout,
           const T* cdot = nullptr, T* P = nullptr) {
  constexpr int64_t V = at::vec::Vectorized<T>::size();
  int64_t c = 0;
  for (; c + 4 * V <= cols; c += 4 * V)
    sweep_block<T, 4, Dot>(H + c, ld, rows, alpha, rin, cin + c, rout, cout + c, Dot ? cdot + c : nullptr, P, c > 0);
  for (; c < cols; c += V)
    sweep_block<T, 1, Dot>(H + c, ld, rows, alpha, rin, cin + c, rout, cout + c, Dot ? cdot + c : nullptr, P, c > 0);
}

// out[i] = the sum of the V lanes of P[i] (rows of V values): du_t, p sums a position. With AVX2, eight rows of
// floats at a time by a tree of horizontal adds. (This, dot() below and inlining sweep_block took the backward at
// the preset's shapes from 7.5 to 4.6 ms a call: scalar lane sums are chains of dependent adds.)
template <typename T>
inline void row_sums(const T* P, int64_t rows, T* out) {
  constexpr int64_t V = at::vec::Vectorized<T>::size();
  int64_t i = 0;
#if defined(CPU_CAPABILITY_AVX2)
  if constexpr (std::is_same_v<T, float>) {
    for (; i + 8 <= rows; i += 8) {
      const float* q = P + i * 8;
      const __m256 s01 = _mm256_hadd_ps(_mm256_loadu_ps(q), _mm256_loadu_ps(q + 8));
      const __m256 s23 = _mm256_hadd_ps(_mm256_loadu_ps(q + 16), _mm256_loadu_ps(q + 24));
      const __m256 s45 = _mm256_hadd_ps(_mm256_loadu_ps(q + 32), _mm256_loadu_ps(q + 40));
      const __m256 s67 = _mm256_hadd_ps(_mm256_loadu_ps(q + 48), _mm256_loadu_ps(q + 56));
      // lanes: rows 0-3 of the low halves, then of the high halves; rows 4-7 likewise
      const __m256 s0123 = _mm256_hadd_ps(s01, s23), s4567 = _mm256_hadd_ps(s45, s67);
      const __m256 low = _mm256_permute2f128_ps(s0123, s4567, 0x20);
      const __m256 high = _mm256_permute2f128_ps(s0123, s4567, 0x31);
      _mm256_storeu_ps(out + i, _mm256_add_ps(low, high));
    }
  }
#endif
  for (; i < rows; ++i) {
    T s = 0;
    for (int64_t lane = 0; lane < V; ++lane) s += P[i * V + lane];
    out[i] = s;
  }
}

inline int64_t padded(int64_t m, int64_t V) { return (m + V - 1) / V * V; }

// A task reads one head's row of x (and dy) per position, h * p values apart, and writes one of y (dx): a stride
// the hardware prefetcher does not follow, so without this each position waited for its rows from L3 (at the
// moving-digits preset's shapes, 2.7 MB a tensor, the forward took 5.4 ms a call without it, 3.2 ms with it).
constexpr int64_t kAhead = 4;  // positions

template <typename T>
inline void prefetch_row(const T* row, int64_t width, bool write) {
  for (int64_t i = 0; i < width; i += 64 / int64_t(sizeof(T)))
    write ? __builtin_prefetch(row + i, 1) : __builtin_prefetch(row + i, 0);
}

// a . b over m values, vectorised (a scalar loop is one chain of m dependent adds).
template <typename T>
T dot(const T* a, const T* b, int64_t m) {
  using Vec = at::vec::Vectorized<T>;
  constexpr int64_t V = Vec::size();
  Vec acc(0);
  int64_t i = 0;
  for (; i + V <= m; i += V) acc = at::vec::fmadd(Vec::loadu(a + i), Vec::loadu(b + i), acc);
  T lanes[V];
  acc.store(lanes);
  T s = 0;
  for (int64_t lane = 0; lane < V; ++lane) s += lanes[lane];
  for (; i < m; ++i) s += a[i] * b[i];
  return s;
}

// Forward: one task a (batch, head); the state is kept (d_state x head_dim) so that y_t = sum_k C_tk H[k] is a sum
// of rows, with no sums across vector lanes.
template <typename T>
void forward_scan(Rows<const T> x, const T* step, const T* a, Rows<const T> B, Rows<const T> C, const T* D,
                  const T* h0, T* y, T* hT, int64_t b, int64_t l, int64_t h, int64_t p, int64_t g, int64_t n) {
  const int64_t r = h / g, pp = padded(p, at::vec::Vectorized<T>::size());
  at::parallel_for(0, b * h, 1, [&](int64_t begin, int64_t end) {
    std::vector<T> H(n * pp), u(pp, T(0)), yv(pp);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t bb = task / h, hh = task % h, gg = hh / r;
      std::fill(H.begin(), H.end(), T(0));
      if (h0)
        for (int64_t e = 0; e < p; ++e)
          for (int64_t k = 0; k < n; ++k) H[k * pp + e] = h0[task * p * n + e * n + k];
      for (int64_t t = 0; t < l; ++t) {
        const int64_t at_t = (bb * l + t) * h + hh;
        const T* xt = x.at(bb, t, hh);
        if (t + kAhead < l) {
          prefetch_row(x.at(bb, t + kAhead, hh), p, false);
          prefetch_row(y + (at_t + kAhead * h) * p, p, true);
        }
        for (int64_t e = 0; e < p; ++e) u[e] = step[at_t] * xt[e];
        sweep<T, false>(H.data(), pp, n, pp, T(std::exp(a[at_t])), B.at(bb, t, gg), u.data(), C.at(bb, t, gg),
                        yv.data());
        T* yt = y + at_t * p;
        for (int64_t e = 0; e < p; ++e) yt[e] = D ? yv[e] + D[hh] * xt[e] : yv[e];
      }
      for (int64_t e = 0; e < p; ++e)
        for (int64_t k = 0; k < n; ++k) hT[task * p * n + e * n + k] = H[k * pp + e];
    }
  });
}

// da_t is a running sum over the later positions, of differences; its rounding errors add up along it. Every
// kRestart positions the backward restarts it from <g_t, H_t>, computed whole from a copy of H_t kept by the forward
// sweep, so they add up over at most kRestart positions (as the chunked form's, whose sums restart every chunk).
// In float32 at 1024 positions, dA was 3.7e-4 off (of its largest entry) without the restarts.
constexpr int64_t kRestart = 32;

// Backward: one task a (batch, group), its heads in turn, so that dB and dC (shared by the group's heads) are
// summed without races or per-head buffers, in a fixed order (deterministic at any thread count). The state and
// the adjoint are kept (head_dim x d_state) here: dC_t = sum_e dy_te H[e] and dB_t = sum_e u_te g[e] are sums of
// rows; du_t = g B_t is the one sum across lanes (row_sums).
template <typename T>
void backward_scan(const T* dy, const T* dhT, Rows<const T> x, const T* step, const T* a, Rows<const T> B,
                   Rows<const T> C, const T* D, const T* h0, T* dx, T* dstep, T* da, T* dB, T* dC, double* dD,
                   T* dh0, int64_t b, int64_t l, int64_t h, int64_t p, int64_t g, int64_t n) {
  constexpr int64_t V = at::vec::Vectorized<T>::size();
  const int64_t r = h / g, np = padded(n, V);
  at::parallel_for(0, b * g, 1, [&](int64_t begin, int64_t end) {
    std::vector<T> H(p * np), Bt(np, T(0)), Ct(np, T(0)), dv(np), u(p), du(p), P(p * V);
    std::vector<double> q(l);
    std::vector<T> saved(l / kRestart * p * np);  // H at every kRestart-th position, for da's restarts
    for (int64_t task = begin; task < end; ++task) {
      const int64_t bb = task / g, gg = task % g;
      for (int64_t hh = gg * r; hh < (gg + 1) * r; ++hh) {
        const int64_t bh = bb * h + hh;
        auto load_position = [&](int64_t t) {  // B_t, C_t (zero-padded) and u_t = step_t x_t
          std::copy_n(B.at(bb, t, gg), n, Bt.begin());
          std::copy_n(C.at(bb, t, gg), n, Ct.begin());
          const T* xt = x.at(bb, t, hh);
          for (int64_t e = 0; e < p; ++e) u[e] = step[(bb * l + t) * h + hh] * xt[e];
        };
        // 1. Forward sweep: H_t again; dC_t += H_t^T dy_t and q_t = C_t . H_t^T dy_t.
        std::fill(H.begin(), H.end(), T(0));
        if (h0)
          for (int64_t e = 0; e < p; ++e) std::copy_n(h0 + (bh * p + e) * n, n, H.begin() + e * np);
        for (int64_t t = 0; t < l; ++t) {
          load_position(t);
          const T* dyt = dy + ((bb * l + t) * h + hh) * p;
          if (t + kAhead < l) {
            prefetch_row(x.at(bb, t + kAhead, hh), p, false);
            prefetch_row(dyt + kAhead * h * p, p, false);
          }
          sweep<T, false>(H.data(), np, p, np, T(std::exp(a[(bb * l + t) * h + hh])), u.data(), Bt.data(), dyt,
                          dv.data());
          T* dCt = dC + ((bb * l + t) * g + gg) * n;
          for (int64_t k = 0; k < n; ++k) dCt[k] += dv[k];
          q[t] = double(dot(Ct.data(), dv.data(), n));
          if ((t + 1) % kRestart == 0) std::copy(H.begin(), H.end(), saved.begin() + t / kRestart * p * np);
        }
        if (dhT && l > 0) {  // the final state's gradient reaches H at the last position
          double s = 0;
          for (int64_t e = 0; e < p; ++e) s += double(dot(dhT + (bh * p + e) * n, H.data() + e * np, n));
          q[l - 1] += s;
        }
        // 2. Reverse sweep: the adjoint g, from dH_final back; du, dB, and da as a reversed running sum.
        std::fill(H.begin(), H.end(), T(0));
        if (dhT)
          for (int64_t e = 0; e < p; ++e) std::copy_n(dhT + (bh * p + e) * n, n, H.begin() + e * np);
        double run = 0, skip = 0;
        for (int64_t t = l - 1; t >= 0; --t) {
          const int64_t at_t = (bb * l + t) * h + hh;
          load_position(t);
          const T* dyt = dy + at_t * p;
          if (t >= kAhead) {
            prefetch_row(x.at(bb, t - kAhead, hh), p, false);
            prefetch_row(dyt - kAhead * h * p, p, false);
            prefetch_row(dx + (at_t - kAhead * h) * p, p, true);
          }
          const T decay = t + 1 < l ? T(std::exp(a[at_t + h])) : T(1);
          sweep<T, true>(H.data(), np, p, np, decay, dyt, Ct.data(), u.data(), dv.data(), Bt.data(), P.data());
          row_sums(P.data(), p, du.data());
          T* dBt = dB + ((bb * l + t) * g + gg) * n;
          for (int64_t k = 0; k < n; ++k) dBt[k] += dv[k];
          const T* xt = x.at(bb, t, hh);
          const T xdu = dot(xt, du.data(), p);
          T* dxt = dx + at_t * p;
          for (int64_t e = 0; e < p; ++e) dxt[e] = step[at_t] * du[e] + (D ? D[hh] * dyt[e] : T(0));
          if (D) skip += double(dot(xt, dyt, p));
          dstep[at_t] = xdu;
          if ((t + 1) % kRestart == 0 && t + 1 < l) {  // restart the running sum from <g_t, H_t>
            run = 0;
            for (int64_t e = 0; e < p; ++e)
              run += double(dot(H.data() + e * np, saved.data() + (t / kRestart * p + e) * np, n));
          } else {
            run += q[t];
          }
          run -= double(step[at_t]) * double(xdu);
          da[at_t] = T(run);
        }
        if (D) dD[bh] = skip;
        if (dh0) {
          const T first = l > 0 ? T(std::exp(a[(bb * l) * h + hh])) : T(1);
          for (int64_t e = 0; e < p; ++e)
            for (int64_t k = 0; k < n; ++k) dh0[(bh * p + e) * n + k] = first * H[e * np + k];
        }
      }
    }
  });
}

void check_inputs(const torch::Tensor& x, const torch::Tensor& step, const torch::Tensor& a, const torch::Tensor& B,
                  const torch::Tensor& C, const torch::Tensor& D, const torch::Tensor& state) {
  TORCH_CHECK(x.device().is_cpu() && x.dim() == 4 && x.stride(3) == 1,
              "x: a CPU (b, l, h, p) tensor with a contiguous last dimension");
  const int64_t b = x.size(0), l = x.size(1), h = x.size(2), p = x.size(3);
  TORCH_CHECK(B.dim() == 4 && B.size(0) == b && B.size(1) == l && B.size(2) > 0 && h % B.size(2) == 0,
              "B: (b, l, g, n) with g dividing h");
  for (const auto* t : {&B, &C})
    TORCH_CHECK(t->device().is_cpu() && t->stride(3) == 1 && t->sizes() == B.sizes(),
                "B and C: CPU (b, l, g, n) tensors with a contiguous last dimension");
  for (const auto* t : {&step, &a})
    TORCH_CHECK(t->device().is_cpu() && t->is_contiguous() && t->sizes() == at::IntArrayRef({b, l, h}),
                "step and a: contiguous CPU (b, l, h) tensors");
  TORCH_CHECK(D.numel() == 0 || (D.device().is_cpu() && D.is_contiguous() && D.sizes() == at::IntArrayRef({h})),
              "D: a contiguous CPU (h,) tensor, or empty");
  TORCH_CHECK(state.numel() == 0 || (state.device().is_cpu() && state.is_contiguous() &&
                                     state.sizes() == at::IntArrayRef({b, h, p, B.size(3)})),
              "state: a contiguous CPU (b, h, p, n) tensor, or empty");
  for (const auto* t : {&step, &a, &B, &C, &D, &state})
    TORCH_CHECK(t->numel() == 0 || t->scalar_type() == x.scalar_type(), "every input must share x's dtype");
}

// x (b, l, h, p), step and a (b, l, h), B and C (b, l, g, n), D (h) or empty, state (b, h, p, n) or empty (zeros).
// Returns y (b, l, h, p) with the D skip, and the state after the last position (b, h, p, n).
std::vector<torch::Tensor> forward(const torch::Tensor& x, const torch::Tensor& step, const torch::Tensor& a,
                                   const torch::Tensor& B, const torch::Tensor& C, const torch::Tensor& D,
                                   const torch::Tensor& state) {
  check_inputs(x, step, a, B, C, D, state);
  const int64_t b = x.size(0), l = x.size(1), h = x.size(2), p = x.size(3), g = B.size(2), n = B.size(3);
  auto y = torch::empty({b, l, h, p}, x.options());
  auto final_state = torch::empty({b, h, p, n}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "ssd_recurrent_forward", [&] {
    forward_scan<scalar_t>(rows_of<scalar_t>(x), step.data_ptr<scalar_t>(), a.data_ptr<scalar_t>(),
                           rows_of<scalar_t>(B), rows_of<scalar_t>(C),
                           D.numel() ? D.data_ptr<scalar_t>() : nullptr,
                           state.numel() ? state.data_ptr<scalar_t>() : nullptr, y.data_ptr<scalar_t>(),
                           final_state.data_ptr<scalar_t>(), b, l, h, p, g, n);
  });
  return {y, final_state};
}

// The gradients of forward's inputs from dy (b, l, h, p, contiguous) and d_final (b, h, p, n, contiguous, or empty
// for zeros): dx, dstep, da, dB, dC, dD (empty without D) and d_state (empty without a state).
std::vector<torch::Tensor> backward(const torch::Tensor& dy, const torch::Tensor& d_final, const torch::Tensor& x,
                                    const torch::Tensor& step, const torch::Tensor& a, const torch::Tensor& B,
                                    const torch::Tensor& C, const torch::Tensor& D, const torch::Tensor& state) {
  check_inputs(x, step, a, B, C, D, state);
  const int64_t b = x.size(0), l = x.size(1), h = x.size(2), p = x.size(3), g = B.size(2), n = B.size(3);
  TORCH_CHECK(dy.is_contiguous() && dy.sizes() == x.sizes() && dy.scalar_type() == x.scalar_type(),
              "dy: a contiguous tensor of x's shape and dtype");
  TORCH_CHECK(d_final.numel() == 0 || (d_final.is_contiguous() && d_final.sizes() == at::IntArrayRef({b, h, p, n}) &&
                                       d_final.scalar_type() == x.scalar_type()),
              "d_final: a contiguous (b, h, p, n) tensor of x's dtype, or empty");
  auto dx = torch::empty({b, l, h, p}, x.options());
  auto dstep = torch::empty({b, l, h}, x.options()), da = torch::empty({b, l, h}, x.options());
  auto dB = torch::zeros({b, l, g, n}, x.options()), dC = torch::zeros({b, l, g, n}, x.options());
  std::vector<double> dD_parts(b * h, 0.0);
  auto d_state = state.numel() ? torch::empty({b, h, p, n}, x.options()) : torch::empty({0}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "ssd_recurrent_backward", [&] {
    backward_scan<scalar_t>(dy.data_ptr<scalar_t>(), d_final.numel() ? d_final.data_ptr<scalar_t>() : nullptr,
                            rows_of<scalar_t>(x), step.data_ptr<scalar_t>(), a.data_ptr<scalar_t>(),
                            rows_of<scalar_t>(B), rows_of<scalar_t>(C),
                            D.numel() ? D.data_ptr<scalar_t>() : nullptr,
                            state.numel() ? state.data_ptr<scalar_t>() : nullptr, dx.data_ptr<scalar_t>(),
                            dstep.data_ptr<scalar_t>(), da.data_ptr<scalar_t>(), dB.data_ptr<scalar_t>(),
                            dC.data_ptr<scalar_t>(), dD_parts.data(),
                            state.numel() ? d_state.data_ptr<scalar_t>() : nullptr, b, l, h, p, g, n);
  });
  auto dD = torch::empty({D.numel() ? h : 0}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "ssd_recurrent_dD", [&] {  // over the batch, in order
    for (int64_t hh = 0; hh < dD.numel(); ++hh) {
      double s = 0;
      for (int64_t bb = 0; bb < b; ++bb) s += dD_parts[bb * h + hh];
      dD.data_ptr<scalar_t>()[hh] = scalar_t(s);
    }
  });
  return {dx, dstep, da, dB, dC, dD, d_state};
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &forward, "the SSD recurrence with its D skip: (y, final state)");
  m.def("backward", &backward, "its gradients: (dx, dstep, da, dB, dC, dD, d_state)");
}
