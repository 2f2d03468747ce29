// Register-blocked float32 GEMM for one thread; see small_gemm.h. The AVX-512 kernel is
// compiled for that target only and picked at run time; other CPUs get the portable loop.
#include "small_gemm.h"

#include <algorithm>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define SPSR_HAVE_AVX512_KERNEL 1
#endif

namespace spsr_fast {
namespace {

// C[0..m) = A B by rows, vectorisable over C's columns.
void gemm_portable(int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b,
                   int64_t ldb, float* c, int64_t ldc) {
  for (int64_t i = 0; i < m; ++i) {
    float* row = c + i * ldc;
    std::fill(row, row + n, 0.f);
    for (int64_t p = 0; p < k; ++p) {
      const float scale = a[i * lda + p];
      const float* brow = b + p * ldb;
      for (int64_t j = 0; j < n; ++j) row[j] += scale * brow[j];
    }
  }
}

#ifdef SPSR_HAVE_AVX512_KERNEL

bool cpu_has_avx512f() {
  static const bool has = __builtin_cpu_supports("avx512f");
  return has;
}

// kRows rows x kVectors*16 columns of C (the last vector masked by `tail`), accumulated over k.
template <int kRows, int kVectors>
__attribute__((target("avx512f"))) void block_kernel(int64_t k, const float* a, int64_t lda,
                                                     const float* b, int64_t ldb, float* c,
                                                     int64_t ldc, __mmask16 tail) {
  // Fully unrolled so the accumulators live in registers (not on the stack).
  __m512 acc[kRows][kVectors];
#pragma GCC unroll 16
  for (int r = 0; r < kRows; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < kVectors; ++v) acc[r][v] = _mm512_setzero_ps();
  for (int64_t p = 0; p < k; ++p) {
    __m512 bv[kVectors];
#pragma GCC unroll 4
    for (int v = 0; v < kVectors; ++v) {
      bv[v] = v + 1 < kVectors ? _mm512_loadu_ps(b + p * ldb + 16 * v)
                               : _mm512_maskz_loadu_ps(tail, b + p * ldb + 16 * v);
    }
#pragma GCC unroll 16
    for (int r = 0; r < kRows; ++r) {
      const __m512 av = _mm512_set1_ps(a[r * lda + p]);
#pragma GCC unroll 4
      for (int v = 0; v < kVectors; ++v) acc[r][v] = _mm512_fmadd_ps(av, bv[v], acc[r][v]);
    }
  }
#pragma GCC unroll 16
  for (int r = 0; r < kRows; ++r) {
#pragma GCC unroll 4
    for (int v = 0; v < kVectors; ++v) {
      float* dst = c + r * ldc + 16 * v;
      if (v + 1 < kVectors) {
        _mm512_storeu_ps(dst, acc[r][v]);
      } else {
        _mm512_mask_storeu_ps(dst, tail, acc[r][v]);
      }
    }
  }
}

// Rows in blocks of kRows (the rest one by one) for one column panel of kVectors vectors.
template <int kRows, int kVectors>
void panel(int64_t m, int64_t k, const float* a, int64_t lda, const float* b, int64_t ldb, float* c,
           int64_t ldc, __mmask16 tail) {
  int64_t i = 0;
  for (; i + kRows <= m; i += kRows)
    block_kernel<kRows, kVectors>(k, a + i * lda, lda, b, ldb, c + i * ldc, ldc, tail);
  for (; i < m; ++i) block_kernel<1, kVectors>(k, a + i * lda, lda, b, ldb, c + i * ldc, ldc, tail);
}

void gemm_avx512(int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b,
                 int64_t ldb, float* c, int64_t ldc) {
  // Column panels of up to 64 (4 vectors); 24 accumulators per block either way.
  for (int64_t j = 0; j < n; j += 64) {
    const int64_t width = std::min<int64_t>(64, n - j);
    const int vectors = static_cast<int>((width + 15) / 16);
    const int last = static_cast<int>(width - 16 * (vectors - 1));
    const __mmask16 tail = static_cast<__mmask16>((1u << last) - 1u);
    switch (vectors) {
      case 1: panel<12, 1>(m, k, a, lda, b + j, ldb, c + j, ldc, tail); break;
      case 2: panel<12, 2>(m, k, a, lda, b + j, ldb, c + j, ldc, tail); break;
      case 3: panel<8, 3>(m, k, a, lda, b + j, ldb, c + j, ldc, tail); break;
      default: panel<6, 4>(m, k, a, lda, b + j, ldb, c + j, ldc, tail); break;
    }
  }
}

#endif  // SPSR_HAVE_AVX512_KERNEL

}  // namespace

void small_gemm_f32(int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b,
                    int64_t ldb, float* c, int64_t ldc) {
#ifdef SPSR_HAVE_AVX512_KERNEL
  if (cpu_has_avx512f()) {
    gemm_avx512(m, n, k, a, lda, b, ldb, c, ldc);
    return;
  }
#endif
  gemm_portable(m, n, k, a, lda, b, ldb, c, ldc);
}

}  // namespace spsr_fast
