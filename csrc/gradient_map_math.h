// Per-element math of gradient_map, shared verbatim by the CPU and CUDA kernels so
// that the CPU tests exercise the exact arithmetic the GPU runs.
//
// Geometry: with padding p in {1, 2}, output pixel (a, b) is centred on input pixel
// (a + 1 - p, b + 1 - p). At a centre (i, j):
//   v = x[i+1, j] - x[i-1, j],  h = x[i, j+1] - x[i, j-1],  y = sqrt(v^2 + h^2 + eps)
// with zeros outside the image. Backward, with dv = g*v/y and dh = g*h/y at each centre:
//   dx[i, j] = dv(i-1, j) - dv(i+1, j) + dh(i, j-1) - dh(i, j+1)
// where a term is zero when its centre has no output pixel.
#pragma once

#include <cstdint>
#include <cmath>

#include "common.h"

namespace spsr_fast {
namespace gradient_map_math {

constexpr double kEps = 1e-6;

// One image plane viewed through arbitrary strides; reads are zero outside [0,H)x[0,W).
// acc_t is the accumulation type: float for fp32/fp16/bf16, double for fp64.
template <typename scalar_t, typename acc_t>
struct Plane {
  const scalar_t* data;
  int64_t height, width, stride_h, stride_w;

  SPSR_HD acc_t at(int64_t i, int64_t j) const {
    if (i < 0 || i >= height || j < 0 || j >= width) return acc_t(0);
    return static_cast<acc_t>(data[i * stride_h + j * stride_w]);
  }
};

// Output pixels exist for centres in [1 - p, H + p - 1) along each axis.
SPSR_HD bool centre_has_output(int64_t c, int64_t size, int64_t padding) {
  return c >= 1 - padding && c < size + padding - 1;
}

template <typename acc_t>
SPSR_HD acc_t magnitude(acc_t v, acc_t h) { return sqrt(v * v + h * h + acc_t(kEps)); }

// Forward value at a centre.
template <typename scalar_t, typename acc_t>
SPSR_HD acc_t forward_at(const Plane<scalar_t, acc_t>& x, int64_t i, int64_t j) {
  const acc_t v = x.at(i + 1, j) - x.at(i - 1, j);
  const acc_t h = x.at(i, j + 1) - x.at(i, j - 1);
  return magnitude(v, h);
}

// g * v / y and g * h / y at a centre (zero where the centre has no output pixel).
template <typename scalar_t, typename grad_t, typename acc_t>
SPSR_HD void scaled_diffs_at(const Plane<scalar_t, acc_t>& x, const Plane<grad_t, acc_t>& grad_out,
                             int64_t i, int64_t j, int64_t padding, acc_t* dv, acc_t* dh) {
  if (!centre_has_output(i, x.height, padding) || !centre_has_output(j, x.width, padding)) {
    *dv = acc_t(0);
    *dh = acc_t(0);
    return;
  }
  const acc_t v = x.at(i + 1, j) - x.at(i - 1, j);
  const acc_t h = x.at(i, j + 1) - x.at(i, j - 1);
  // grad_out is indexed by output pixel: centre + p - 1.
  const acc_t g = grad_out.at(i + padding - 1, j + padding - 1);
  const acc_t s = g / magnitude(v, h);
  *dv = s * v;
  *dh = s * h;
}

// Input gradient at input pixel (i, j).
template <typename scalar_t, typename grad_t, typename acc_t>
SPSR_HD acc_t backward_at(const Plane<scalar_t, acc_t>& x, const Plane<grad_t, acc_t>& grad_out,
                          int64_t i, int64_t j, int64_t padding) {
  acc_t dv_up, dh_unused, dv_down, dh_left, dh_right, dv_unused;
  scaled_diffs_at(x, grad_out, i - 1, j, padding, &dv_up, &dh_unused);
  scaled_diffs_at(x, grad_out, i + 1, j, padding, &dv_down, &dh_unused);
  scaled_diffs_at(x, grad_out, i, j - 1, padding, &dv_unused, &dh_left);
  scaled_diffs_at(x, grad_out, i, j + 1, padding, &dv_unused, &dh_right);
  return dv_up - dv_down + dh_left - dh_right;
}

}  // namespace gradient_map_math
}  // namespace spsr_fast
