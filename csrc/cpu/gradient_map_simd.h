// AVX2 inner loops of the fp32 gradient_map row kernels, compiled in their own
// translation unit with a target attribute and picked at run time, so the extension
// still runs on CPUs without AVX2. Each returns the first index it did not process.
#pragma once

#include <cstdint>

namespace spsr_fast {
namespace gradient_map_simd {

bool cpu_has_avx2();

// out[t] = sqrt((down[t]-up[t])^2 + (mid[t+step]-mid[t-step])^2 + eps), t in [lo, hi).
int64_t forward_interior_avx2(const float* up, const float* mid, const float* down, int64_t lo,
                              int64_t hi, int64_t step, float* out);

// s = grad[t] / y; dv[t] = s*v, dh[t] = s*h, t in [lo, hi).
int64_t scaled_diffs_interior_avx2(const float* up, const float* mid, const float* down,
                                   const float* grad, int64_t lo, int64_t hi, int64_t step,
                                   float* dv, float* dh);

// out[t] = dv_up[t] - dv_down[t] + dh_mid[t-step] - dh_mid[t+step], t in [0, len).
int64_t combine_avx2(const float* dv_up, const float* dv_down, const float* dh_mid, int64_t len,
                     int64_t step, float* out);

}  // namespace gradient_map_simd
}  // namespace spsr_fast
