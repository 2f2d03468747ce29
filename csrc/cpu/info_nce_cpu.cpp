// CPU kernels of info_nce: blocked online logsumexp, never an N x L matrix.
//
// Queries are grouped by image (stable sort), normalised, pre-scaled by `scale` and
// padded to a multiple of the SIMD width in one (N, Dp) buffer. A candidate block of
// kBlockN features is normalised on load and transposed into a per-thread (D, kBlockN)
// buffer, and logits of four queries at a time are computed from it in registers. No
// normalised copy of the features exists: their normalisation's backward is applied by
// each block's owner in the backward task.
//   forward:  one task per tile of <= kBlockM queries of one image; it streams that
//             image's candidate blocks keeping the running max/sum of each row.
//   backward: one task per (image, candidate block); it recomputes the logits of every
//             query of the image against its block, owns the block's feature gradient,
//             and adds query gradients into a per-thread buffer (summed at the end), so
//             each logit is recomputed once and no two threads write the same memory.
// Per-element semantics: csrc/info_nce_math.h. Memory: O((N + L) * D + threads * block).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "../info_nce_checks.h"
#include "../info_nce_math.h"

// The hot loops are compiled twice, for AVX2+FMA and for the baseline ISA, and picked at
// load time (GCC function multi-versioning, common.h); elsewhere only the baseline exists.
#define SPSR_CPU_CLONES SPSR_X86_CLONES("arch=x86-64-v3", "default")
#define SPSR_ALWAYS_INLINE inline __attribute__((always_inline))
// 32-byte vectors only cross inlined calls, so the AVX-without-AVX ABI note does not apply.
#pragma GCC diagnostic ignored "-Wpsabi"

namespace spsr_fast {
namespace {

namespace nm = info_nce_math;

constexpr int64_t kBlockM = 64;    // queries per forward task and per backward sweep
constexpr int64_t kBlockN = 128;   // candidates per block
constexpr int64_t kGroup = 4;      // queries whose logits are computed together

// 32-byte SIMD vectors through the GCC/Clang vector extension.
template <typename T>
struct Simd;
template <>
struct Simd<float> {
  typedef float vec __attribute__((vector_size(32)));
  typedef int32_t ivec __attribute__((vector_size(32)));
  static constexpr int64_t kLanes = 8;
};
template <>
struct Simd<double> {
  typedef double vec __attribute__((vector_size(32)));
  typedef int64_t ivec __attribute__((vector_size(32)));
  static constexpr int64_t kLanes = 4;
};

template <typename T>
SPSR_ALWAYS_INLINE typename Simd<T>::vec vload(const T* p) {
  typename Simd<T>::vec v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}
template <typename T>
SPSR_ALWAYS_INLINE void vstore(T* p, typename Simd<T>::vec v) {
  std::memcpy(p, &v, sizeof(v));
}
template <typename T>
SPSR_ALWAYS_INLINE typename Simd<T>::vec vsplat(T x) {
  return typename Simd<T>::vec{} + x;
}

// exp on a vector; exactly 0 for x < -87 (and -inf), so masked logits drop out.
// float: Cephes' expf (range reduction by ln 2, degree-6 polynomial), ~1 ulp.
SPSR_ALWAYS_INLINE Simd<float>::vec vexp(Simd<float>::vec x) {
  using vec = Simd<float>::vec;
  using ivec = Simd<float>::ivec;
  const ivec underflow = x < -87.0f;
  x = x > 88.3762626647949f ? vsplat(88.3762626647949f) : x;
  x = x < -87.0f ? vsplat(-87.0f) : x;
  const vec n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;  // round to nearest
  const vec r = x - n * 0.693359375f + n * 2.12194440e-4f;
  vec p = vsplat(1.9875691500e-4f);
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const ivec bits = (__builtin_convertvector(n, ivec) + 127) << 23;
  const vec result = p * (vec)bits;
  return underflow ? vsplat(0.0f) : result;
}
// double (gradcheck precision): the library exp, lane by lane.
SPSR_ALWAYS_INLINE Simd<double>::vec vexp(Simd<double>::vec x) {
  for (int i = 0; i < 4; ++i) x[i] = std::exp(x[i]);
  return x;
}

template <typename T>
SPSR_ALWAYS_INLINE T hmax(typename Simd<T>::vec v) {
  T m = v[0];
  for (int64_t i = 1; i < Simd<T>::kLanes; ++i) m = v[i] > m ? v[i] : m;
  return m;
}
template <typename T>
SPSR_ALWAYS_INLINE T hsum(typename Simd<T>::vec v) {
  T s = v[0];
  for (int64_t i = 1; i < Simd<T>::kLanes; ++i) s += v[i];
  return s;
}

// logits[k * kBlockN + j] = <q[k], ft[:, j]> for the kGroup rows of q (stride dp).
template <typename T>
SPSR_ALWAYS_INLINE void group_logits_impl(const T* q, int64_t dp, int64_t d, const T* ft, T* logits) {
  using vec = typename Simd<T>::vec;
  constexpr int64_t kL = Simd<T>::kLanes;
  for (int64_t j = 0; j < kBlockN; j += kL) {
    vec a0{}, a1{}, a2{}, a3{};
    for (int64_t c = 0; c < d; ++c) {
      const vec f = vload(ft + c * kBlockN + j);
      a0 += q[c] * f;
      a1 += q[dp + c] * f;
      a2 += q[2 * dp + c] * f;
      a3 += q[3 * dp + c] * f;
    }
    vstore(logits + j, a0);
    vstore(logits + kBlockN + j, a1);
    vstore(logits + 2 * kBlockN + j, a2);
    vstore(logits + 3 * kBlockN + j, a3);
  }
}

// Block max, then sum of exp(logit - new max) of one row into the online state.
template <typename T>
SPSR_ALWAYS_INLINE void accumulate_row_impl(const T* logits, nm::OnlineLogSumExp<T>* state) {
  using vec = typename Simd<T>::vec;
  constexpr int64_t kL = Simd<T>::kLanes;
  vec m = vload(logits);
  for (int64_t j = kL; j < kBlockN; j += kL) {
    const vec x = vload(logits + j);
    m = x > m ? x : m;
  }
  state->raise_max(hmax<T>(m));
  if (state->max == -std::numeric_limits<T>::infinity()) return;
  const vec ref = vsplat(state->max);
  vec s{};
  for (int64_t j = 0; j < kBlockN; j += kL) s += vexp(vload(logits + j) - ref);
  state->sum += hsum<T>(s);
}

// row[j] <- (exp(row[j] - lse) - [j == positive]) * grad, in place.
template <typename T>
SPSR_ALWAYS_INLINE void logit_grads_impl(T* row, T lse, T grad, int64_t positive) {
  using vec = typename Simd<T>::vec;
  constexpr int64_t kL = Simd<T>::kLanes;
  const vec ref = vsplat(lse), g = vsplat(grad);
  for (int64_t j = 0; j < kBlockN; j += kL) vstore(row + j, vexp(vload(row + j) - ref) * g);
  if (positive >= 0 && positive < kBlockN) row[positive] -= grad;
}

// out[r][:dp] += sum_j grads[r * grad_stride + j * grad_step] * rows[j][:dp], for r < n_out,
// j < n_in; dp is a multiple of the SIMD width. Used both ways round: query gradients
// (out = queries, rows = features) and feature gradients (out = features, rows = queries).
template <typename T>
SPSR_ALWAYS_INLINE void accumulate_products_impl(T* out, int64_t n_out, const T* grads, int64_t grad_stride,
                                                 int64_t grad_step, const T* rows, int64_t n_in, int64_t dp) {
  using vec = typename Simd<T>::vec;
  constexpr int64_t kL = Simd<T>::kLanes;
  for (int64_t r = 0; r < n_out; ++r) {
    const T* g = grads + r * grad_stride;
    int64_t c = 0;
    for (; c + 4 * kL <= dp; c += 4 * kL) {  // four vectors of the output row in registers
      vec a0 = vload(out + r * dp + c), a1 = vload(out + r * dp + c + kL);
      vec a2 = vload(out + r * dp + c + 2 * kL), a3 = vload(out + r * dp + c + 3 * kL);
      for (int64_t j = 0; j < n_in; ++j) {
        const T gj = g[j * grad_step];
        const T* x = rows + j * dp + c;
        a0 += gj * vload(x);
        a1 += gj * vload(x + kL);
        a2 += gj * vload(x + 2 * kL);
        a3 += gj * vload(x + 3 * kL);
      }
      vstore(out + r * dp + c, a0);
      vstore(out + r * dp + c + kL, a1);
      vstore(out + r * dp + c + 2 * kL, a2);
      vstore(out + r * dp + c + 3 * kL, a3);
    }
    for (; c < dp; c += kL) {
      vec a = vload(out + r * dp + c);
      for (int64_t j = 0; j < n_in; ++j) a += g[j * grad_step] * vload(rows + j * dp + c);
      vstore(out + r * dp + c, a);
    }
  }
}

// Entry points: float ones get the AVX2 clone, double ones (gradcheck) only the baseline.
SPSR_CPU_CLONES void group_logits(const float* q, int64_t dp, int64_t d, const float* ft, float* out) {
  group_logits_impl(q, dp, d, ft, out);
}
void group_logits(const double* q, int64_t dp, int64_t d, const double* ft, double* out) {
  group_logits_impl(q, dp, d, ft, out);
}
SPSR_CPU_CLONES void accumulate_row(const float* logits, nm::OnlineLogSumExp<float>* state) {
  accumulate_row_impl(logits, state);
}
void accumulate_row(const double* logits, nm::OnlineLogSumExp<double>* state) {
  accumulate_row_impl(logits, state);
}
SPSR_CPU_CLONES void logit_grads(float* row, float lse, float grad, int64_t positive) {
  logit_grads_impl(row, lse, grad, positive);
}
void logit_grads(double* row, double lse, double grad, int64_t positive) {
  logit_grads_impl(row, lse, grad, positive);
}
SPSR_CPU_CLONES void accumulate_products(float* out, int64_t n_out, const float* grads, int64_t grad_stride,
                                         int64_t grad_step, const float* rows, int64_t n_in, int64_t dp) {
  accumulate_products_impl(out, n_out, grads, grad_stride, grad_step, rows, n_in, dp);
}
void accumulate_products(double* out, int64_t n_out, const double* grads, int64_t grad_stride,
                         int64_t grad_step, const double* rows, int64_t n_in, int64_t dp) {
  accumulate_products_impl(out, n_out, grads, grad_stride, grad_step, rows, n_in, dp);
}

// Queries grouped by image, as every task reads them.
template <typename acc_t>
struct Sorted {
  at::Tensor order;        // (N) sorted position -> original row
  at::Tensor queries;      // (N + kGroup, dp) acc_t, unit vectors * scale, zero padding
  at::Tensor norms;        // (N, 1) acc_t, |q| of each sorted row
  at::Tensor positive;     // (N) int64
  at::Tensor centres;      // (N, K, 2) int64
  std::vector<int64_t> image_begin;  // (B + 1) first sorted row of each image
  int64_t dp = 0;
};

template <typename acc_t>
Sorted<acc_t> sort_by_image(const at::Tensor& queries, const at::Tensor& image_index,
                            const at::Tensor& positive_index, const at::Tensor& excluded_centres,
                            int64_t num_images, double scale) {
  Sorted<acc_t> s;
  const int64_t N = queries.size(0), D = queries.size(1);
  constexpr int64_t kL = Simd<acc_t>::kLanes;
  s.dp = std::max<int64_t>(kL, (D + kL - 1) / kL * kL);
  s.order = std::get<1>(at::sort(image_index, /*stable=*/true, /*dim=*/0, /*descending=*/false));
  const auto acc = c10::CppTypeToScalarType<acc_t>::value;
  const at::Tensor sorted = queries.index_select(0, s.order).to(acc);
  s.norms = at::linalg_vector_norm(sorted, 2, {1}, /*keepdim=*/true);
  s.queries = at::zeros({N + kGroup, s.dp}, queries.options().dtype(acc));
  s.queries.narrow(0, 0, N).narrow(1, 0, D).copy_(sorted * (scale / s.norms.clamp_min(nm::kNormEps)));
  s.positive = positive_index.index_select(0, s.order).contiguous();
  s.centres = excluded_centres.index_select(0, s.order).contiguous();
  const at::Tensor counts = at::bincount(image_index, {}, num_images).cumsum(0);
  const int64_t* c = counts.const_data_ptr<int64_t>();
  s.image_begin.assign(num_images + 1, 0);
  for (int64_t b = 0; b < num_images; ++b) s.image_begin[b + 1] = c[b];
  return s;
}

struct Geometry {
  int64_t L, D, K, grid_width, radius;
};

// Unit features of one image's candidates [j0, j0 + n) as acc_t, both ways round:
// ft (D, kBlockN) for the logits, and (optionally) rows (kBlockN, dp) with their norms
// for the backward. Columns n.. of ft are zero; rows n.. are zero.
template <typename scalar_t, typename acc_t>
void load_block(const at::Tensor& features, int64_t b, int64_t j0, int64_t n, int64_t dp, acc_t* ft,
                acc_t* rows, acc_t* norms) {
  const scalar_t* f = features.const_data_ptr<scalar_t>();
  const int64_t sb = features.stride(0), sl = features.stride(1), sd = features.stride(2);
  const int64_t D = features.size(2);
  std::fill(ft, ft + D * kBlockN, acc_t(0));
  if (rows) std::fill(rows, rows + kBlockN * dp, acc_t(0));
  for (int64_t j = 0; j < n; ++j) {
    const scalar_t* src = f + b * sb + (j0 + j) * sl;
    acc_t squares = 0;
    for (int64_t c = 0; c < D; ++c) squares += static_cast<acc_t>(src[c * sd]) * static_cast<acc_t>(src[c * sd]);
    const acc_t norm = std::sqrt(squares), inv = nm::inverse_norm(norm);
    for (int64_t c = 0; c < D; ++c) {
      const acc_t v = static_cast<acc_t>(src[c * sd]) * inv;
      ft[c * kBlockN + j] = v;
      if (rows) rows[j * dp + c] = v;
    }
    if (norms) norms[j] = norm;
  }
}

// df[j] <- gradient w.r.t. the raw feature, from the one w.r.t. its unit vector rows[j].
template <typename acc_t>
void unit_to_raw_grads(acc_t* grads, const acc_t* units, const acc_t* norms, int64_t n, int64_t d, int64_t dp) {
  for (int64_t j = 0; j < n; ++j) {
    acc_t* g = grads + j * dp;
    const acc_t* u = units + j * dp;
    acc_t dot = 0;
    for (int64_t c = 0; c < d; ++c) dot += u[c] * g[c];
    for (int64_t c = 0; c < d; ++c) g[c] = nm::raw_grad(g[c], u[c], dot, norms[j]);
  }
}

// Turns a row of raw logits of candidates [j0, j0 + n) into masked ones: -inf past n and
// where the candidate is excluded for this query (math: info_nce_math.h).
template <typename acc_t>
void mask_row(acc_t* logits, int64_t j0, int64_t n, int64_t positive, const int64_t* centres,
              const Geometry& g) {
  constexpr acc_t kNegInf = -std::numeric_limits<acc_t>::infinity();
  for (int64_t j = n; j < kBlockN; ++j) logits[j] = kNegInf;
  if (n == 0 || !nm::exclusion_reaches_rows(centres, g.K, j0 / g.grid_width, (j0 + n - 1) / g.grid_width,
                                            g.radius)) {
    return;
  }
  for (int64_t j = 0; j < n; ++j) {
    if (!nm::is_candidate(j0 + j, positive, g.grid_width, centres, g.K, g.radius)) logits[j] = kNegInf;
  }
}

// A forward task: rows [r0, r1) of the sorted order, all of image b.
struct RowTile {
  int64_t image, r0, r1;
};

std::vector<RowTile> row_tiles(const std::vector<int64_t>& image_begin) {
  std::vector<RowTile> tiles;
  for (size_t b = 0; b + 1 < image_begin.size(); ++b) {
    for (int64_t r = image_begin[b]; r < image_begin[b + 1]; r += kBlockM) {
      tiles.push_back({static_cast<int64_t>(b), r, std::min(r + kBlockM, image_begin[b + 1])});
    }
  }
  return tiles;
}

template <typename scalar_t, typename acc_t>
void forward_kernel(const Sorted<acc_t>& s, const at::Tensor& features, const Geometry& g, at::Tensor& loss,
                    at::Tensor& lse) {
  const std::vector<RowTile> tiles = row_tiles(s.image_begin);
  const acc_t* q = s.queries.template const_data_ptr<acc_t>();
  const int64_t* pos = s.positive.template const_data_ptr<int64_t>();
  const int64_t* centres = s.centres.template const_data_ptr<int64_t>();
  const int64_t* order = s.order.template const_data_ptr<int64_t>();
  acc_t* loss_out = loss.mutable_data_ptr<acc_t>();
  acc_t* lse_out = lse.mutable_data_ptr<acc_t>();
  const int64_t dp = s.dp;
  at::parallel_for(0, static_cast<int64_t>(tiles.size()), 1, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> ft(g.D * kBlockN), logits(kGroup * kBlockN);
    std::vector<nm::OnlineLogSumExp<acc_t>> state(kBlockM);
    std::vector<acc_t> positive_logit(kBlockM);
    for (int64_t t = begin; t < end; ++t) {
      const RowTile tile = tiles[t];
      std::fill(state.begin(), state.end(), nm::OnlineLogSumExp<acc_t>{});
      for (int64_t j0 = 0; j0 < g.L; j0 += kBlockN) {
        const int64_t n = std::min(kBlockN, g.L - j0);
        load_block<scalar_t>(features, tile.image, j0, n, dp, ft.data(), static_cast<acc_t*>(nullptr),
                             static_cast<acc_t*>(nullptr));
        for (int64_t r = tile.r0; r < tile.r1; r += kGroup) {
          group_logits(q + r * dp, dp, g.D, ft.data(), logits.data());
          for (int64_t k = 0; k < kGroup && r + k < tile.r1; ++k) {
            acc_t* row = logits.data() + k * kBlockN;
            const int64_t p = pos[r + k] - j0;
            if (p >= 0 && p < n) positive_logit[r + k - tile.r0] = row[p];
            mask_row(row, j0, n, pos[r + k], centres + (r + k) * g.K * 2, g);
            accumulate_row(row, &state[r + k - tile.r0]);
          }
        }
      }
      for (int64_t r = tile.r0; r < tile.r1; ++r) {
        const acc_t value = state[r - tile.r0].value();
        lse_out[order[r]] = value;
        loss_out[order[r]] = value - positive_logit[r - tile.r0];
      }
    }
  });
}

template <typename scalar_t, typename acc_t>
void backward_kernel(const Sorted<acc_t>& s, const at::Tensor& features, const Geometry& g,
                     const at::Tensor& lse_sorted, const at::Tensor& grad_sorted, at::Tensor& dq_partial,
                     at::Tensor& df) {
  const int64_t B = features.size(0);
  const int64_t blocks = (g.L + kBlockN - 1) / kBlockN;
  const acc_t* q = s.queries.template const_data_ptr<acc_t>();
  const int64_t* pos = s.positive.template const_data_ptr<int64_t>();
  const int64_t* centres = s.centres.template const_data_ptr<int64_t>();
  const acc_t* lse = lse_sorted.const_data_ptr<acc_t>();
  const acc_t* grad = grad_sorted.const_data_ptr<acc_t>();
  const int64_t dp = s.dp, N_rows = dq_partial.size(1);
  acc_t* dq_all = dq_partial.mutable_data_ptr<acc_t>();
  acc_t* df_out = df.mutable_data_ptr<acc_t>();  // (B, L, dp)
  at::parallel_for(0, B * blocks, 1, [&](int64_t begin, int64_t end) {
    acc_t* dq = dq_all + at::get_thread_num() * N_rows * dp;
    std::vector<acc_t> ft(g.D * kBlockN), rows(kBlockN * dp), norms(kBlockN), grads(kBlockM * kBlockN);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / blocks, j0 = (task % blocks) * kBlockN;
      const int64_t n = std::min(kBlockN, g.L - j0);
      load_block<scalar_t>(features, b, j0, n, dp, ft.data(), rows.data(), norms.data());
      acc_t* df_block = df_out + (b * g.L + j0) * dp;
      for (int64_t r0 = s.image_begin[b]; r0 < s.image_begin[b + 1]; r0 += kBlockM) {
        const int64_t m = std::min(kBlockM, s.image_begin[b + 1] - r0);
        for (int64_t r = r0; r < r0 + m; r += kGroup) {
          acc_t* out = grads.data() + (r - r0) * kBlockN;
          group_logits(q + r * dp, dp, g.D, ft.data(), out);
          for (int64_t k = 0; k < kGroup && r + k < r0 + m; ++k) {
            acc_t* row = out + k * kBlockN;
            mask_row(row, j0, n, pos[r + k], centres + (r + k) * g.K * 2, g);
            logit_grads(row, lse[r + k], grad[r + k], pos[r + k] - j0);
          }
        }
        // dq[r] += sum_j G[r, j] f_j ;  df[j] += sum_r G[r, j] (scale q_r)
        accumulate_products(dq + r0 * dp, m, grads.data(), kBlockN, 1, rows.data(), n, dp);
        accumulate_products(df_block, n, grads.data(), 1, kBlockN, q + r0 * dp, m, dp);
      }
      unit_to_raw_grads(df_block, rows.data(), norms.data(), n, g.D, dp);
    }
  });
}

std::tuple<at::Tensor, at::Tensor> info_nce_cpu(const at::Tensor& queries, const at::Tensor& features,
                                                const at::Tensor& image_index, const at::Tensor& positive_index,
                                                const at::Tensor& excluded_centres, int64_t grid_width,
                                                int64_t radius, double scale) {
  check_info_nce_inputs(queries, features, image_index, positive_index, excluded_centres, grid_width, radius);
  const at::ScalarType acc = info_nce_acc_type(queries.scalar_type());
  at::Tensor loss = at::empty({queries.size(0)}, queries.options().dtype(acc));
  at::Tensor lse = at::empty({queries.size(0)}, queries.options().dtype(acc));
  if (queries.size(0) == 0) return {loss, lse};
  const Geometry g{features.size(1), features.size(2), excluded_centres.size(1), grid_width, radius};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, queries.scalar_type(), "info_nce_cpu", [&] {
    using acc_t = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;
    const Sorted<acc_t> s = sort_by_image<acc_t>(queries, image_index, positive_index, excluded_centres,
                                                 features.size(0), scale);
    forward_kernel<scalar_t, acc_t>(s, features, g, loss, lse);
  });
  return {loss, lse};
}

std::tuple<at::Tensor, at::Tensor> info_nce_backward_cpu(
    const at::Tensor& grad_loss, const at::Tensor& queries, const at::Tensor& features,
    const at::Tensor& image_index, const at::Tensor& positive_index, const at::Tensor& excluded_centres,
    const at::Tensor& lse, int64_t grid_width, int64_t radius, double scale) {
  check_info_nce_inputs(queries, features, image_index, positive_index, excluded_centres, grid_width, radius);
  check_info_nce_backward(grad_loss, queries, lse);
  const int64_t N = queries.size(0), B = features.size(0), L = features.size(1), D = features.size(2);
  if (N == 0) return {at::zeros_like(queries), at::zeros_like(features, at::MemoryFormat::Contiguous)};
  const at::ScalarType acc = info_nce_acc_type(queries.scalar_type());
  const Geometry g{L, D, excluded_centres.size(1), grid_width, radius};
  at::Tensor dq, df;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, queries.scalar_type(), "info_nce_backward_cpu", [&] {
    using acc_t = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;
    const Sorted<acc_t> s = sort_by_image<acc_t>(queries, image_index, positive_index, excluded_centres, B, scale);
    const at::Tensor lse_sorted = lse.to(acc).index_select(0, s.order).contiguous();
    const at::Tensor grad_sorted = grad_loss.to(acc).index_select(0, s.order).contiguous();
    at::Tensor dq_partial = at::zeros({at::get_num_threads(), N + kGroup, s.dp}, queries.options().dtype(acc));
    at::Tensor df_padded = at::zeros({B, L, s.dp}, queries.options().dtype(acc));
    backward_kernel<scalar_t, acc_t>(s, features, g, lse_sorted, grad_sorted, dq_partial, df_padded);
    // sum the per-thread query gradients (w.r.t. the scaled unit queries), then
    // d/dq of q / max(|q|, eps) (info_nce_math.h raw_grad, in tensor ops), unsort
    const at::Tensor grad_unit = dq_partial.sum(0).narrow(0, 0, N).narrow(1, 0, D).mul_(scale);
    const at::Tensor unit = s.queries.narrow(0, 0, N).narrow(1, 0, D) / scale;
    const at::Tensor dot = (unit * grad_unit).sum(1, /*keepdim=*/true);
    const at::Tensor dq_sorted = at::where(s.norms > nm::kNormEps, (grad_unit - unit * dot) / s.norms,
                                           grad_unit / nm::kNormEps);
    dq = at::empty({N, D}, queries.options());
    dq.index_copy_(0, s.order, dq_sorted.to(queries.scalar_type()));
    df = df_padded.narrow(2, 0, D).to(queries.scalar_type()).contiguous();
  });
  return {dq, df};
}

}  // namespace

TORCH_LIBRARY_IMPL(spsr_fast, CPU, m) {
  m.impl("info_nce", &info_nce_cpu);
  m.impl("info_nce_backward", &info_nce_backward_cpu);
}

}  // namespace spsr_fast
