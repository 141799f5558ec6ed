// Causal depthwise conv1d + SiLU on channel-last (batch, length, channels) inputs, forward and backward.
//
// The Mamba-2 block's conv over (x, B, C) (mdm/nn/causal_conv.py holds the PyTorch reference):
//     pre[t, c] = bias[c] + sum_j w[j, c] * xpad[t + j, c],   out = silu(pre),
// where xpad is the k - 1 context positions followed by the l inputs. On a CPU at ~100 tokens the
// PyTorch form spends most of its time around the arithmetic (a transpose, a cat, oneDNN's depthwise
// weight gradient, SiLU's saved input); here each pass is one loop over the rows, vectorised along the
// contiguous channels, and the backward recomputes `pre` instead of saving it.
#include <torch/extension.h>

#include <ATen/Parallel.h>
#include <ATen/cpu/vec/vec.h>

#include <cmath>
#include <vector>

namespace {

// The input row of padded position `u` (0 <= u < l + k - 1) of batch `b`.
template <typename T>
inline const T* padded_row(const T* x, const T* ctx, int64_t b, int64_t u, int64_t k, int64_t c,
                           int64_t sxb, int64_t sxl) {
  return u < k - 1 ? ctx + (b * (k - 1) + u) * c : x + b * sxb + (u - (k - 1)) * sxl;
}

// d[i] += a[i] * x[i] for i in [0, c).
template <typename T>
inline void multiply_add(T* d, const T* a, const T* x, int64_t c) {
  using Vec = at::vec::Vectorized<T>;
  int64_t i = 0;
  for (; i + Vec::size() <= c; i += Vec::size())
    at::vec::fmadd(Vec::loadu(a + i), Vec::loadu(x + i), Vec::loadu(d + i)).store(d + i);
  for (; i < c; ++i) d[i] += a[i] * x[i];
}

// pre-activation of row (b, t) into `pre` (c values).
template <typename T>
inline void pre_activation(T* pre, const T* x, const T* ctx, const T* w, const T* bias, int64_t b, int64_t t,
                           int64_t k, int64_t c, int64_t sxb, int64_t sxl) {
  for (int64_t i = 0; i < c; ++i) pre[i] = bias[i];
  for (int64_t j = 0; j < k; ++j) {
    const T* xs = padded_row(x, ctx, b, t + j, k, c, sxb, sxl);
    multiply_add(pre, w + j * c, xs, c);
  }
}

// out[i] = silu(p[i]) over c values (may be the same array): vectorised, with ATen's exp (Sleef where the
// build targets AVX2, so as exact as PyTorch's own SiLU).
template <typename T>
inline void silu(T* out, const T* p, int64_t c) {
  using Vec = at::vec::Vectorized<T>;
  const Vec one(T(1));
  int64_t i = 0;
  for (; i + Vec::size() <= c; i += Vec::size()) {
    const Vec v = Vec::loadu(p + i);
    (v / (one + v.neg().exp())).store(out + i);
  }
  for (; i < c; ++i) out[i] = p[i] / (T(1) + std::exp(-p[i]));
}

// g[i] = go[i] * silu'(p[i]) with silu'(p) = s (1 + p (1 - s)), s = sigmoid(p); g may be p's array.
template <typename T>
inline void silu_grad(T* g, const T* p, const T* go, int64_t c) {
  using Vec = at::vec::Vectorized<T>;
  const Vec one(T(1));
  int64_t i = 0;
  for (; i + Vec::size() <= c; i += Vec::size()) {
    const Vec v = Vec::loadu(p + i);
    const Vec s = one / (one + v.neg().exp());
    (Vec::loadu(go + i) * s * (one + v * (one - s))).store(g + i);
  }
  for (; i < c; ++i) {
    const T s = T(1) / (T(1) + std::exp(-p[i]));
    g[i] = go[i] * s * (T(1) + p[i] * (T(1) - s));
  }
}

void check(const torch::Tensor& x, const torch::Tensor& ctx, const torch::Tensor& w, const torch::Tensor& bias) {
  TORCH_CHECK(x.device().is_cpu() && x.dim() == 3 && x.stride(2) == 1, "x: a CPU (b, l, c) tensor, channels contiguous");
  TORCH_CHECK(ctx.is_contiguous() && ctx.dim() == 3 && ctx.size(0) == x.size(0) && ctx.size(2) == x.size(2),
              "context: a contiguous (b, k - 1, c) tensor");
  TORCH_CHECK(w.is_contiguous() && w.dim() == 2 && w.size(0) == ctx.size(1) + 1 && w.size(1) == x.size(2),
              "weight: a contiguous (k, c) tensor");
  TORCH_CHECK(bias.is_contiguous() && bias.dim() == 1 && bias.size(0) == x.size(2), "bias: a contiguous (c,) tensor");
  TORCH_CHECK(ctx.device().is_cpu() && w.device().is_cpu() && bias.device().is_cpu(),
              "context, weight and bias must be CPU tensors, as x");
  TORCH_CHECK(ctx.scalar_type() == x.scalar_type() && w.scalar_type() == x.scalar_type() &&
                  bias.scalar_type() == x.scalar_type(),
              "x, context, weight and bias must share one dtype");
}

torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& ctx, const torch::Tensor& w,
                      const torch::Tensor& bias) {
  check(x, ctx, w, bias);
  const int64_t nb = x.size(0), l = x.size(1), c = x.size(2), k = w.size(0);
  auto out = torch::empty({nb, l, c}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "causal_conv_silu_forward", [&] {
    const scalar_t *xp = x.data_ptr<scalar_t>(), *cp = ctx.data_ptr<scalar_t>();
    const scalar_t *wp = w.data_ptr<scalar_t>(), *bp = bias.data_ptr<scalar_t>();
    scalar_t* op = out.data_ptr<scalar_t>();
    const int64_t sxb = x.stride(0), sxl = x.stride(1);
    at::parallel_for(0, nb * l, 8, [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        scalar_t* o = op + r * c;
        pre_activation(o, xp, cp, wp, bp, r / l, r % l, k, c, sxb, sxl);
        silu(o, o, c);
      }
    });
  });
  return out;
}

// Returns (d x (b, l, c), d context (b, k - 1, c), d weight (k, c), d bias (c,)).
std::vector<torch::Tensor> backward(const torch::Tensor& grad_out, const torch::Tensor& x, const torch::Tensor& ctx,
                                    const torch::Tensor& w, const torch::Tensor& bias) {
  check(x, ctx, w, bias);
  TORCH_CHECK(grad_out.is_contiguous() && grad_out.sizes() == x.sizes(), "grad_out: contiguous, x's shape");
  const int64_t nb = x.size(0), l = x.size(1), c = x.size(2), k = w.size(0);
  auto g = torch::empty({nb, l, c}, x.options());  // d loss / d pre
  auto dx = torch::empty({nb, l, c}, x.options());
  auto dctx = torch::empty({nb, k - 1, c}, x.options());
  auto dw = torch::empty({k, c}, x.options());
  auto dbias = torch::empty({c}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "causal_conv_silu_backward", [&] {
    const scalar_t *xp = x.data_ptr<scalar_t>(), *cp = ctx.data_ptr<scalar_t>();
    const scalar_t *wp = w.data_ptr<scalar_t>(), *bp = bias.data_ptr<scalar_t>();
    const scalar_t* gop = grad_out.data_ptr<scalar_t>();
    scalar_t *gp = g.data_ptr<scalar_t>(), *dxp = dx.data_ptr<scalar_t>(), *dcp = dctx.data_ptr<scalar_t>();
    scalar_t *dwp = dw.data_ptr<scalar_t>(), *dbp = dbias.data_ptr<scalar_t>();
    const int64_t sxb = x.stride(0), sxl = x.stride(1);
    // 1. g = grad_out * silu'(pre), silu'(p) = s (1 + p (1 - s)) with s = sigmoid(p); pre recomputed.
    at::parallel_for(0, nb * l, 8, [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        scalar_t* gr = gp + r * c;
        pre_activation(gr, xp, cp, wp, bp, r / l, r % l, k, c, sxb, sxl);
        silu_grad(gr, gr, gop + r * c, c);
      }
    });
    // 2. d xpad[u] = sum_j w[j] g[u - j] over the rows t = u - j that exist.
    const int64_t lp = l + k - 1;
    at::parallel_for(0, nb * lp, 8, [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        const int64_t b = r / lp, u = r % lp;
        scalar_t* d = u < k - 1 ? dcp + (b * (k - 1) + u) * c : dxp + (b * l + u - (k - 1)) * c;
        for (int64_t i = 0; i < c; ++i) d[i] = 0;
        for (int64_t j = 0; j < k; ++j) {
          const int64_t t = u - j;
          if (t < 0 || t >= l) continue;
          multiply_add(d, wp + j * c, gp + (b * l + t) * c, c);
        }
      }
    });
    // 3. d w[j] = sum_(b, t) g[t] xpad[t + j] and d bias = sum_(b, t) g[t]: each thread owns a range of
    //    channels, so nothing is reduced across threads.
    at::parallel_for(0, c, 16, [&](int64_t c0, int64_t c1) {
      for (int64_t i = c0; i < c1; ++i) dbp[i] = 0;
      for (int64_t j = 0; j < k; ++j)
        for (int64_t i = c0; i < c1; ++i) dwp[j * c + i] = 0;
      for (int64_t b = 0; b < nb; ++b) {
        for (int64_t t = 0; t < l; ++t) {
          const scalar_t* gr = gp + (b * l + t) * c;
          for (int64_t i = c0; i < c1; ++i) dbp[i] += gr[i];
          for (int64_t j = 0; j < k; ++j)
            multiply_add(dwp + j * c + c0, gr + c0, padded_row(xp, cp, b, t + j, k, c, sxb, sxl) + c0, c1 - c0);
        }
      }
    });
  });
  return {dx, dctx, dw, dbias};
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &forward, "causal depthwise conv1d + SiLU, channel-last");
  m.def("backward", &backward, "its gradients (x, context, weight, bias)");
}
