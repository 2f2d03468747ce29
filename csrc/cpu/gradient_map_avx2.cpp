// AVX2 versions of the fp32 gradient_map inner loops (see gradient_map_simd.h). No ATen
// header is included here, so nothing compiled for AVX2 can leak into generic code.
// The arithmetic order matches the scalar code: (v*v + h*h) + eps, no FMA contraction.
#include "gradient_map_simd.h"

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#define SPSR_HAVE_AVX2_PATH 1
#define SPSR_AVX2 __attribute__((target("avx2")))
#endif

namespace spsr_fast {
namespace gradient_map_simd {

#ifdef SPSR_HAVE_AVX2_PATH

bool cpu_has_avx2() {
  static const bool has = __builtin_cpu_supports("avx2");
  return has;
}

namespace {
constexpr float kEps = 1e-6f;

SPSR_AVX2 inline __m256 magnitude(__m256 v, __m256 h) {
  const __m256 sum = _mm256_add_ps(_mm256_mul_ps(v, v), _mm256_mul_ps(h, h));
  return _mm256_sqrt_ps(_mm256_add_ps(sum, _mm256_set1_ps(kEps)));
}
}  // namespace

SPSR_AVX2 int64_t forward_interior_avx2(const float* up, const float* mid, const float* down,
                                        int64_t lo, int64_t hi, int64_t step, float* out) {
  int64_t t = lo;
  for (; t + 8 <= hi; t += 8) {
    const __m256 v = _mm256_sub_ps(_mm256_loadu_ps(down + t), _mm256_loadu_ps(up + t));
    const __m256 h = _mm256_sub_ps(_mm256_loadu_ps(mid + t + step), _mm256_loadu_ps(mid + t - step));
    _mm256_storeu_ps(out + t, magnitude(v, h));
  }
  return t;
}

SPSR_AVX2 int64_t scaled_diffs_interior_avx2(const float* up, const float* mid, const float* down,
                                             const float* grad, int64_t lo, int64_t hi, int64_t step,
                                             float* dv, float* dh) {
  int64_t t = lo;
  for (; t + 8 <= hi; t += 8) {
    const __m256 v = _mm256_sub_ps(_mm256_loadu_ps(down + t), _mm256_loadu_ps(up + t));
    const __m256 h = _mm256_sub_ps(_mm256_loadu_ps(mid + t + step), _mm256_loadu_ps(mid + t - step));
    const __m256 s = _mm256_div_ps(_mm256_loadu_ps(grad + t), magnitude(v, h));
    _mm256_storeu_ps(dv + t, _mm256_mul_ps(s, v));
    _mm256_storeu_ps(dh + t, _mm256_mul_ps(s, h));
  }
  return t;
}

SPSR_AVX2 int64_t combine_avx2(const float* dv_up, const float* dv_down, const float* dh_mid,
                               int64_t len, int64_t step, float* out) {
  int64_t t = 0;
  for (; t + 8 <= len; t += 8) {
    __m256 acc = _mm256_sub_ps(_mm256_loadu_ps(dv_up + t), _mm256_loadu_ps(dv_down + t));
    acc = _mm256_add_ps(acc, _mm256_loadu_ps(dh_mid + t - step));
    acc = _mm256_sub_ps(acc, _mm256_loadu_ps(dh_mid + t + step));
    _mm256_storeu_ps(out + t, acc);
  }
  return t;
}

#else  // not x86-64: the generic loops do all the work

bool cpu_has_avx2() { return false; }
int64_t forward_interior_avx2(const float*, const float*, const float*, int64_t lo, int64_t, int64_t,
                              float*) { return lo; }
int64_t scaled_diffs_interior_avx2(const float*, const float*, const float*, const float*, int64_t lo,
                                   int64_t, int64_t, float*, float*) { return lo; }
int64_t combine_avx2(const float*, const float*, const float*, int64_t, int64_t, float*) { return 0; }

#endif

}  // namespace gradient_map_simd
}  // namespace spsr_fast
