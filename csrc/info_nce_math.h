// Per-element math of info_nce (docs/ARCHITECTURE.md 2.3), shared by the CPU kernel and mirrored
// line for line by the Triton kernels (kernels/info_nce.py).
//
// Cosine similarity: queries and features are normalised inside the kernels,
//   u = x / max(|x|, 1e-12)   (F.normalize's eps; norms in the accumulation type)
// and the gradient w.r.t. x follows from the one w.r.t. u by `raw_grad` below.
//
// Row n (unit query q_n of image b) sees the candidates m in [0, L) of image b, laid
// out on a grid of width W: candidate m sits at (m / W, m % W). With logits
// s_nm = scale * <q_n, f_m> over unit vectors:
//   valid(n, m)  = m == pos_n  or  for every excluded centre c of row n:
//                  Chebyshev distance((m / W, m % W), c) >= radius
//   lse_n        = log sum_{m valid} exp(s_nm)          (online over candidate blocks)
//   loss_n       = lse_n - s_n,pos_n
//   dloss/ds_nm  = (exp(s_nm - lse_n) - [m == pos_n]) * g_n   for valid m, 0 otherwise
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>

#include "common.h"

namespace spsr_fast {
namespace info_nce_math {

#if !defined(__CUDA_ARCH__)
using std::exp;  // float and double overloads on the host; CUDA provides its own
using std::log;
#endif

constexpr double kNormEps = 1e-12;

// 1 / max(norm, eps): the factor that turns a vector into its unit vector.
template <typename acc_t>
SPSR_HD acc_t inverse_norm(acc_t norm) {
  return acc_t(1) / (norm > acc_t(kNormEps) ? norm : acc_t(kNormEps));
}

// Gradient w.r.t. one component of x, from the gradient w.r.t. u = x / max(|x|, eps):
// (du - u <u, du>) / |x| where the norm is above eps; du / eps where it was clamped (u is
// then linear in x). unit_dot = <u, du> over the vector.
template <typename acc_t>
SPSR_HD acc_t raw_grad(acc_t grad_unit, acc_t unit, acc_t unit_dot, acc_t norm) {
  if (norm > acc_t(kNormEps)) return (grad_unit - unit * unit_dot) / norm;
  return grad_unit / acc_t(kNormEps);
}

// Whether grid cell (row, col) lies inside the excluded square around (centre_row, centre_col).
SPSR_HD bool near_centre(int64_t row, int64_t col, int64_t centre_row, int64_t centre_col,
                         int64_t radius) {
  const int64_t dr = row - centre_row, dc = col - centre_col;
  return dr < radius && -dr < radius && dc < radius && -dc < radius;
}

// centres: K (row, col) pairs of one query. Whether candidate m enters its logsumexp.
SPSR_HD bool is_candidate(int64_t m, int64_t positive, int64_t grid_width, const int64_t* centres,
                          int64_t num_centres, int64_t radius) {
  if (m == positive) return true;
  const int64_t row = m / grid_width, col = m % grid_width;
  for (int64_t k = 0; k < num_centres; ++k) {
    if (near_centre(row, col, centres[2 * k], centres[2 * k + 1], radius)) return false;
  }
  return true;
}

// Whether some excluded square of a query reaches grid rows [row_lo, row_hi]: when it
// does not, every candidate of those rows is valid and the mask can be skipped.
SPSR_HD bool exclusion_reaches_rows(const int64_t* centres, int64_t num_centres, int64_t row_lo,
                                    int64_t row_hi, int64_t radius) {
  for (int64_t k = 0; k < num_centres; ++k) {
    const int64_t centre_row = centres[2 * k];
    if (centre_row + radius - 1 >= row_lo && centre_row - radius + 1 <= row_hi && radius > 0) return true;
  }
  return false;
}

// Running max and sum of exp(s - max) of one row, over candidate blocks. Starts at
// (-inf, 0); a block whose logits are all -inf (fully masked) leaves it unchanged.
template <typename acc_t>
struct OnlineLogSumExp {
  acc_t max = -std::numeric_limits<acc_t>::infinity();
  acc_t sum = acc_t(0);

  // Moves the reference point to max(max, block_max) before a block's exp(s - max) are added.
  SPSR_HD void raise_max(acc_t block_max) {
    if (block_max > max) {
      sum *= exp(max - block_max);
      max = block_max;
    }
  }
  SPSR_HD acc_t value() const { return max + log(sum); }
};

// Gradient of loss_n with respect to a valid logit s_nm (masked logits are -inf: exp gives 0).
template <typename acc_t>
SPSR_HD acc_t logit_grad(acc_t logit, acc_t lse, bool is_positive, acc_t grad_loss) {
  return (exp(logit - lse) - (is_positive ? acc_t(1) : acc_t(0))) * grad_loss;
}

}  // namespace info_nce_math
}  // namespace spsr_fast
