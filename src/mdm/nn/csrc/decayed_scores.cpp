// The SSD's in-chunk "attention" matrix, forward and backward (mdm/nn/ssd.py holds the PyTorch reference):
//     M[b, c, g, r, i, j] = CB[b, c, g, i, j] * exp(a[j+1] + ... + a[i])   for j <= i,   0 above,
// with the segment sums taken as float64 differences of a cumulative sum, as segsum() does. The PyTorch
// form builds the (s x s) segment sums, a mask and the decays as separate float64/float32 tensors per head
// and multiplies by CB; here each head's matrix is one pass, and the backward recomputes the decays.
#include <torch/extension.h>

#include <ATen/Parallel.h>
#include <ATen/cpu/vec/vec.h>

#include <cmath>
#include <vector>

namespace {

// cs[i] = a[0] + ... + a[i] in double, for one head's s log-decays (stride `step` apart).
template <typename T>
inline void cumulative(double* cs, const T* a, int64_t s) {
  double run = 0;
  for (int64_t i = 0; i < s; ++i) cs[i] = run += double(a[i]);
}

// row[j] = exp(float(cs[i] - cs[j])) for j <= i (the decays of row i), vectorised exp.
template <typename T>
inline void decay_row(T* row, const double* cs, int64_t i) {
  using Vec = at::vec::Vectorized<T>;
  for (int64_t j = 0; j <= i; ++j) row[j] = T(cs[i] - cs[j]);
  int64_t j = 0;
  for (; j + Vec::size() <= i + 1; j += Vec::size()) Vec::loadu(row + j).exp().store(row + j);
  for (; j <= i; ++j) row[j] = std::exp(row[j]);
}

void check(const torch::Tensor& CB, const torch::Tensor& a) {
  TORCH_CHECK(CB.device().is_cpu() && CB.is_contiguous() && CB.dim() == 5 && CB.size(3) == CB.size(4),
              "CB: a contiguous CPU (b, c, g, s, s) tensor");
  TORCH_CHECK(a.is_contiguous() && a.dim() == 5 && a.size(0) == CB.size(0) && a.size(1) == CB.size(1) &&
                  a.size(2) == CB.size(2) && a.size(4) == CB.size(3),
              "a: a contiguous (b, c, g, r, s) tensor");
  TORCH_CHECK(a.device().is_cpu(), "a must be a CPU tensor, as CB");
  TORCH_CHECK(a.scalar_type() == CB.scalar_type(), "CB and a must share one dtype");
}

torch::Tensor forward(const torch::Tensor& CB, const torch::Tensor& a) {
  check(CB, a);
  const int64_t groups = CB.size(0) * CB.size(1) * CB.size(2), r = a.size(3), s = a.size(4);
  auto M = torch::empty({a.size(0), a.size(1), a.size(2), r, s, s}, CB.options());
  AT_DISPATCH_FLOATING_TYPES(CB.scalar_type(), "decayed_scores_forward", [&] {
    const scalar_t *cbp = CB.data_ptr<scalar_t>(), *ap = a.data_ptr<scalar_t>();
    scalar_t* mp = M.data_ptr<scalar_t>();
    at::parallel_for(0, groups * r, 1, [&](int64_t begin, int64_t end) {
      std::vector<double> cs(s);
      for (int64_t q = begin; q < end; ++q) {  // q: one head of one chunk
        const scalar_t* cb = cbp + (q / r) * s * s;
        cumulative(cs.data(), ap + q * s, s);
        scalar_t* m = mp + q * s * s;
        for (int64_t i = 0; i < s; ++i) {
          scalar_t* row = m + i * s;
          decay_row(row, cs.data(), i);
          for (int64_t j = 0; j <= i; ++j) row[j] *= cb[i * s + j];
          for (int64_t j = i + 1; j < s; ++j) row[j] = 0;
        }
      }
    });
  });
  return M;
}

// Returns (d CB (b, c, g, s, s), d a (b, c, g, r, s)) from d M.
std::vector<torch::Tensor> backward(const torch::Tensor& grad_M, const torch::Tensor& CB, const torch::Tensor& a) {
  check(CB, a);
  TORCH_CHECK(grad_M.is_contiguous() && grad_M.dim() == 6 && grad_M.size(3) == a.size(3), "grad_M: contiguous, M's shape");
  const int64_t groups = CB.size(0) * CB.size(1) * CB.size(2), r = a.size(3), s = a.size(4);
  auto dCB = torch::zeros_like(CB);
  auto da = torch::empty_like(a);
  AT_DISPATCH_FLOATING_TYPES(CB.scalar_type(), "decayed_scores_backward", [&] {
    const scalar_t *cbp = CB.data_ptr<scalar_t>(), *ap = a.data_ptr<scalar_t>(), *gp = grad_M.data_ptr<scalar_t>();
    scalar_t *dcbp = dCB.data_ptr<scalar_t>(), *dap = da.data_ptr<scalar_t>();
    // One task a (chunk, group): its r heads add into the same d CB, so nothing is shared across threads.
    at::parallel_for(0, groups, 1, [&](int64_t begin, int64_t end) {
      std::vector<double> cs(s);
      std::vector<scalar_t> row(s), d_cs(s);
      for (int64_t e = begin; e < end; ++e) {
        const scalar_t* cb = cbp + e * s * s;
        scalar_t* dcb = dcbp + e * s * s;
        for (int64_t q = e * r; q < (e + 1) * r; ++q) {
          cumulative(cs.data(), ap + q * s, s);
          const scalar_t* g = gp + q * s * s;
          std::fill(d_cs.begin(), d_cs.end(), scalar_t(0));
          for (int64_t i = 0; i < s; ++i) {
            decay_row(row.data(), cs.data(), i);
            scalar_t row_sum = 0;
            for (int64_t j = 0; j <= i; ++j) {
              const scalar_t gl = g[i * s + j] * row[j];  // d M * L
              dcb[i * s + j] += gl;
              const scalar_t dS = gl * cb[i * s + j];  // d (segment sum) = d M * M
              row_sum += dS;
              d_cs[j] -= dS;  // S[i, j] = cs[i] - cs[j]
            }
            d_cs[i] += row_sum;
          }
          // a[k] enters cs[i] for every i >= k: d a is the reversed cumulative sum of d cs.
          scalar_t run = 0;
          for (int64_t k = s - 1; k >= 0; --k) dap[q * s + k] = run += d_cs[k];
        }
      }
    });
  });
  return {dCB, da};
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &forward, "the SSD's decayed in-chunk scores CB * exp(segsum(a))");
  m.def("backward", &backward, "their gradients (CB, a)");
}
