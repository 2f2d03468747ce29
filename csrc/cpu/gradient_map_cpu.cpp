// CPU kernels of gradient_map. NCHW and NHWC tensors go through a row kernel that
// reads each row of x once, vectorised over the contiguous inner dimension (AVX2 for
// fp32 when the CPU has it, at::vec otherwise); other strides go through the
// per-element math of gradient_map_math.h (the same functions the CUDA kernel runs).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/vec.h>
#include <torch/library.h>

#include <algorithm>
#include <type_traits>
#include <vector>

#include "../gradient_map_checks.h"
#include "../gradient_map_math.h"
#include "gradient_map_simd.h"

namespace spsr_fast {
namespace {

namespace gm = gradient_map_math;

// A row of an image in memory order: `len` values, horizontal neighbours `step` apart
// (step = 1 in an NCHW plane, step = C in an NHWC image). Reads outside are zero.
template <typename acc_t, typename scalar_t>
inline acc_t load(const scalar_t* row, int64_t t, int64_t len) {
  return (t >= 0 && t < len) ? static_cast<acc_t>(row[t]) : acc_t(0);
}

// Geometry of one tensor viewed as planes of rows (see `load`).
struct RowView {
  int64_t planes, rows, len, step;  // input rows of x
  int64_t out_rows, out_len;        // rows of the padded output
  int64_t shift;                    // out element = x element + shift
};

RowView row_view(const at::Tensor& x, int64_t padding, bool channels_last) {
  const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const int64_t step = channels_last ? C : 1;
  const int64_t shift = (padding - 1) * step;
  RowView v;
  v.planes = channels_last ? B : B * C;
  v.rows = H;
  v.len = W * step;
  v.step = step;
  v.out_rows = H + 2 * padding - 2;
  v.out_len = v.len + 2 * shift;
  v.shift = shift;
  return v;
}

// Values t in [lo, hi) of a row whose neighbours are all inside the row.
inline void interior_range(int64_t len, int64_t step, int64_t* lo, int64_t* hi) {
  *lo = std::min(step, len);
  *hi = std::max(len - step, *lo);
}

// One output row from the x rows above, at and below its centre row.
template <typename scalar_t>
void forward_row(const scalar_t* up, const scalar_t* mid, const scalar_t* down,
                 const RowView& g, scalar_t* out) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t len = g.len, step = g.step, shift = g.shift;
  auto value_at = [&](int64_t t) {
    const acc_t v = load<acc_t>(down, t, len) - load<acc_t>(up, t, len);
    const acc_t h = load<acc_t>(mid, t + step, len) - load<acc_t>(mid, t - step, len);
    return gm::magnitude(v, h);
  };
  int64_t lo, hi;
  interior_range(len, step, &lo, &hi);
  for (int64_t t = -shift; t < lo; ++t) out[t + shift] = static_cast<scalar_t>(value_at(t));
  int64_t t = lo;
  if constexpr (std::is_same_v<scalar_t, float>) {
    if (gradient_map_simd::cpu_has_avx2()) {
      t = gradient_map_simd::forward_interior_avx2(up, mid, down, lo, hi, step, out + shift);
    }
  }
  if constexpr (std::is_same_v<scalar_t, acc_t>) {
    using Vec = at::vec::Vectorized<acc_t>;
    const Vec eps(static_cast<acc_t>(gm::kEps));
    for (; t + Vec::size() <= hi; t += Vec::size()) {
      const Vec v = Vec::loadu(down + t) - Vec::loadu(up + t);
      const Vec h = Vec::loadu(mid + t + step) - Vec::loadu(mid + t - step);
      (v * v + h * h + eps).sqrt().store(out + t + shift);
    }
  }
  for (; t < hi; ++t) {
    const acc_t v = static_cast<acc_t>(down[t]) - static_cast<acc_t>(up[t]);
    const acc_t h = static_cast<acc_t>(mid[t + step]) - static_cast<acc_t>(mid[t - step]);
    out[t + shift] = static_cast<scalar_t>(gm::magnitude(v, h));
  }
  for (t = hi; t < len + shift; ++t) out[t + shift] = static_cast<scalar_t>(value_at(t));
}

template <typename scalar_t>
void forward_rows(const at::Tensor& x, at::Tensor& out, int64_t padding, bool channels_last) {
  const RowView g = row_view(x, padding, channels_last);
  const scalar_t* xp = x.const_data_ptr<scalar_t>();
  scalar_t* op = out.mutable_data_ptr<scalar_t>();
  const std::vector<scalar_t> zeros(g.len, scalar_t(0));
  auto row = [&](int64_t plane, int64_t i) -> const scalar_t* {
    return (i < 0 || i >= g.rows) ? zeros.data() : xp + (plane * g.rows + i) * g.len;
  };
  const int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(1, g.out_len));
  at::parallel_for(0, g.planes * g.out_rows, grain, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const int64_t plane = r / g.out_rows, a = r % g.out_rows;
      const int64_t i = a + 1 - padding;  // centre row in x
      forward_row(row(plane, i - 1), row(plane, i), row(plane, i + 1), g, op + r * g.out_len);
    }
  });
}

// g*v/y and g*h/y for every centre of centre row c, into buffers indexed t + step for
// t in [-step, len + step) (centre columns -1 .. W).
template <typename scalar_t, typename acc_t>
void scaled_diffs_row(const scalar_t* up, const scalar_t* mid, const scalar_t* down,
                      const scalar_t* grad_row, const RowView& g, acc_t* dv, acc_t* dh) {
  const int64_t len = g.len, step = g.step, shift = g.shift;
  auto at_centre = [&](int64_t t) {
    if (t < -shift || t >= len + shift) {  // centre column without an output pixel
      dv[t + step] = dh[t + step] = acc_t(0);
      return;
    }
    const acc_t v = load<acc_t>(down, t, len) - load<acc_t>(up, t, len);
    const acc_t h = load<acc_t>(mid, t + step, len) - load<acc_t>(mid, t - step, len);
    const acc_t s = static_cast<acc_t>(grad_row[t + shift]) / gm::magnitude(v, h);
    dv[t + step] = s * v;
    dh[t + step] = s * h;
  };
  int64_t lo, hi;
  interior_range(len, step, &lo, &hi);
  for (int64_t t = -step; t < lo; ++t) at_centre(t);
  int64_t t = lo;
  if constexpr (std::is_same_v<scalar_t, float>) {
    if (gradient_map_simd::cpu_has_avx2()) {
      t = gradient_map_simd::scaled_diffs_interior_avx2(up, mid, down, grad_row + shift, lo, hi, step,
                                                        dv + step, dh + step);
    }
  }
  if constexpr (std::is_same_v<scalar_t, acc_t>) {
    using Vec = at::vec::Vectorized<acc_t>;
    const Vec eps(static_cast<acc_t>(gm::kEps));
    for (; t + Vec::size() <= hi; t += Vec::size()) {
      const Vec v = Vec::loadu(down + t) - Vec::loadu(up + t);
      const Vec h = Vec::loadu(mid + t + step) - Vec::loadu(mid + t - step);
      const Vec s = Vec::loadu(grad_row + t + shift) / (v * v + h * h + eps).sqrt();
      (s * v).store(dv + t + step);
      (s * h).store(dh + t + step);
    }
  }
  for (; t < hi; ++t) at_centre(t);
  for (t = hi; t < len + step; ++t) at_centre(t);
}

template <typename scalar_t>
void backward_rows(const at::Tensor& grad, const at::Tensor& x, at::Tensor& dx, int64_t padding,
                   bool channels_last) {
  using acc_t = at::opmath_type<scalar_t>;
  const RowView g = row_view(x, padding, channels_last);
  const scalar_t* xp = x.const_data_ptr<scalar_t>();
  const scalar_t* gp = grad.const_data_ptr<scalar_t>();
  scalar_t* dxp = dx.mutable_data_ptr<scalar_t>();
  const std::vector<scalar_t> zeros(g.len, scalar_t(0));
  auto row = [&](int64_t plane, int64_t i) -> const scalar_t* {
    return (i < 0 || i >= g.rows) ? zeros.data() : xp + (plane * g.rows + i) * g.len;
  };
  // Each task walks a chunk of rows keeping the scaled differences of three centre
  // rows in a ring, so every centre is computed once per chunk (plus two at its edges).
  const int64_t rows_per_chunk = 32;
  const int64_t chunks = (g.rows + rows_per_chunk - 1) / rows_per_chunk;
  const int64_t buf_len = g.len + 2 * g.step;
  at::parallel_for(0, g.planes * chunks, 1, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> dv(3 * buf_len), dh(3 * buf_len);
    auto slot = [&](int64_t c) { return ((c % 3) + 3) % 3 * buf_len; };
    auto fill_centre = [&](int64_t plane, int64_t c) {
      acc_t* v = dv.data() + slot(c);
      acc_t* h = dh.data() + slot(c);
      if (!gm::centre_has_output(c, g.rows, padding)) {
        std::fill(v, v + buf_len, acc_t(0));
        std::fill(h, h + buf_len, acc_t(0));
        return;
      }
      const scalar_t* grad_row = gp + (plane * g.out_rows + c + padding - 1) * g.out_len;
      scaled_diffs_row(row(plane, c - 1), row(plane, c), row(plane, c + 1), grad_row, g, v, h);
    };
    for (int64_t task = begin; task < end; ++task) {
      const int64_t plane = task / chunks;
      const int64_t i0 = (task % chunks) * rows_per_chunk;
      const int64_t i1 = std::min(g.rows, i0 + rows_per_chunk);
      fill_centre(plane, i0 - 1);
      fill_centre(plane, i0);
      for (int64_t i = i0; i < i1; ++i) {
        fill_centre(plane, i + 1);
        const acc_t* dv_up = dv.data() + slot(i - 1) + g.step;
        const acc_t* dv_down = dv.data() + slot(i + 1) + g.step;
        const acc_t* dh_mid = dh.data() + slot(i) + g.step;
        scalar_t* out = dxp + (plane * g.rows + i) * g.len;
        int64_t t = 0;
        if constexpr (std::is_same_v<scalar_t, float>) {
          if (gradient_map_simd::cpu_has_avx2()) {
            t = gradient_map_simd::combine_avx2(dv_up, dv_down, dh_mid, g.len, g.step, out);
          }
        }
        if constexpr (std::is_same_v<scalar_t, acc_t>) {
          using Vec = at::vec::Vectorized<acc_t>;
          for (; t + Vec::size() <= g.len; t += Vec::size()) {
            (Vec::loadu(dv_up + t) - Vec::loadu(dv_down + t) + Vec::loadu(dh_mid + t - g.step) -
             Vec::loadu(dh_mid + t + g.step))
                .store(out + t);
          }
        }
        for (; t < g.len; ++t) {
          out[t] = static_cast<scalar_t>(dv_up[t] - dv_down[t] + dh_mid[t - g.step] -
                                         dh_mid[t + g.step]);
        }
      }
    }
  });
}

// Arbitrary strides: one output element at a time through gradient_map_math.h.
template <typename scalar_t>
void forward_strided(const at::Tensor& x, at::Tensor& out, int64_t padding) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t C = x.size(1), H = x.size(2), W = x.size(3);
  const int64_t Ho = out.size(2), Wo = out.size(3);
  const scalar_t* xp = x.const_data_ptr<scalar_t>();
  scalar_t* op = out.mutable_data_ptr<scalar_t>();  // contiguous NCHW
  at::parallel_for(0, out.numel(), 4096, [&](int64_t begin, int64_t end) {
    for (int64_t e = begin; e < end; ++e) {
      const int64_t b_ = e / (C * Ho * Wo), c = (e / (Ho * Wo)) % C;
      const int64_t a = (e / Wo) % Ho, col = e % Wo;
      const gm::Plane<scalar_t, acc_t> plane{xp + b_ * x.stride(0) + c * x.stride(1), H, W,
                                             x.stride(2), x.stride(3)};
      op[e] = static_cast<scalar_t>(gm::forward_at(plane, a + 1 - padding, col + 1 - padding));
    }
  });
}

template <typename scalar_t>
void backward_strided(const at::Tensor& grad, const at::Tensor& x, at::Tensor& dx,
                      int64_t padding) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t C = x.size(1), H = x.size(2), W = x.size(3);
  const int64_t Ho = grad.size(2), Wo = grad.size(3);
  const scalar_t* xp = x.const_data_ptr<scalar_t>();
  const scalar_t* gp = grad.const_data_ptr<scalar_t>();
  scalar_t* dxp = dx.mutable_data_ptr<scalar_t>();  // contiguous NCHW
  at::parallel_for(0, dx.numel(), 4096, [&](int64_t begin, int64_t end) {
    for (int64_t e = begin; e < end; ++e) {
      const int64_t b_ = e / (C * H * W), c = (e / (H * W)) % C;
      const int64_t i = (e / W) % H, j = e % W;
      const gm::Plane<scalar_t, acc_t> xplane{xp + b_ * x.stride(0) + c * x.stride(1), H, W,
                                              x.stride(2), x.stride(3)};
      const gm::Plane<scalar_t, acc_t> gplane{gp + b_ * grad.stride(0) + c * grad.stride(1), Ho,
                                              Wo, grad.stride(2), grad.stride(3)};
      dxp[e] = static_cast<scalar_t>(gm::backward_at(xplane, gplane, i, j, padding));
    }
  });
}

at::Tensor gradient_map_cpu(const at::Tensor& x, int64_t padding) {
  check_gradient_map_input(x, padding);
  const at::MemoryFormat layout = gradient_map_layout(x);
  const bool strided = layout == at::MemoryFormat::Preserve;
  at::Tensor out = at::empty(gradient_map_output_shape(x, padding),
                             x.options().memory_format(strided ? at::MemoryFormat::Contiguous : layout));
  if (out.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "gradient_map_cpu", [&] {
    if (strided) {
      forward_strided<scalar_t>(x, out, padding);
    } else {
      forward_rows<scalar_t>(x, out, padding, layout == at::MemoryFormat::ChannelsLast);
    }
  });
  return out;
}

at::Tensor gradient_map_backward_cpu(const at::Tensor& grad_out, const at::Tensor& x,
                                     int64_t padding) {
  check_gradient_map_backward(grad_out, x, padding);
  const at::MemoryFormat layout = gradient_map_layout(x);
  const bool strided = layout == at::MemoryFormat::Preserve;
  const at::MemoryFormat out_layout = strided ? at::MemoryFormat::Contiguous : layout;
  at::Tensor dx = at::empty(x.sizes(), x.options().memory_format(out_layout));
  if (dx.numel() == 0) return dx;
  // The row kernel wants grad in x's layout; autograd often hands in expanded views.
  const at::Tensor grad = strided ? grad_out.to(x.scalar_type())
                                  : grad_out.to(x.scalar_type()).contiguous(out_layout);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "gradient_map_backward_cpu", [&] {
    if (strided) {
      backward_strided<scalar_t>(grad, x, dx, padding);
    } else {
      backward_rows<scalar_t>(grad, x, dx, padding, layout == at::MemoryFormat::ChannelsLast);
    }
  });
  return dx;
}

}  // namespace

TORCH_LIBRARY_IMPL(spsr_fast, CPU, m) {
  m.impl("gradient_map", &gradient_map_cpu);
  m.impl("gradient_map_backward", &gradient_map_backward_cpu);
}

}  // namespace spsr_fast
