// Register-blocked bf16 x bf16 -> float32 GEMM for one thread; see small_gemm_bf16.h.
//
// The AVX512_BF16 kernel keeps a block of C in 24 zmm accumulators and, per pair of k,
// broadcasts one 32-bit pair of A per row against 1..4 vectors of B (VDPBF16PS: 32
// multiply-adds per instruction, twice an fp32 FMA's 16). It is compiled for that target
// only and picked at run time; other CPUs get the portable loop (exact products, float sums).
#include "small_gemm_bf16.h"

#include <algorithm>
#include <cstring>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define SPSR_HAVE_AVX512_BF16_KERNEL 1
#endif

namespace spsr_fast {
namespace {

void gemm_portable(int64_t m, int64_t n, int64_t k_pairs, const uint16_t* a, int64_t lda,
                   const uint16_t* b, int64_t ldb, float* c, int64_t ldc) {
  for (int64_t i = 0; i < m; ++i) {
    float* row = c + i * ldc;
    std::fill(row, row + n, 0.f);
    for (int64_t p = 0; p < 2 * k_pairs; ++p) {
      const float scale = bf16_bits_to_float(a[i * lda + p]);
      const uint16_t* brow = b + (p / 2) * 2 * ldb + p % 2;
      for (int64_t j = 0; j < n; ++j) row[j] += scale * bf16_bits_to_float(brow[2 * j]);
    }
  }
}

#ifdef SPSR_HAVE_AVX512_BF16_KERNEL

#define SPSR_BF16_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))

// kRows rows x kVectors*16 columns of C (the last vector stored masked by `tail`).
template <int kRows, int kVectors>
SPSR_BF16_TARGET void block_kernel(int64_t k_pairs, const uint16_t* a, int64_t lda, const uint16_t* b,
                                   int64_t ldb, float* c, int64_t ldc, __mmask16 tail) {
  __m512 acc[kRows][kVectors];
#pragma GCC unroll 16
  for (int r = 0; r < kRows; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < kVectors; ++v) acc[r][v] = _mm512_setzero_ps();
  for (int64_t p = 0; p < k_pairs; ++p) {
    const uint16_t* brow = b + p * 2 * ldb;
    __m512bh bv[kVectors];
#pragma GCC unroll 4
    for (int v = 0; v < kVectors; ++v) bv[v] = (__m512bh)_mm512_loadu_si512(brow + 32 * v);
#pragma GCC unroll 16
    for (int r = 0; r < kRows; ++r) {
      int32_t pair;
      std::memcpy(&pair, a + r * lda + 2 * p, sizeof pair);
      const __m512bh av = (__m512bh)_mm512_set1_epi32(pair);
#pragma GCC unroll 4
      for (int v = 0; v < kVectors; ++v) acc[r][v] = _mm512_dpbf16_ps(acc[r][v], av, bv[v]);
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

// The last `rows` (< kRows) rows in one block of exactly that many.
template <int kRows, int kVectors>
SPSR_BF16_TARGET void remainder(int rows, int64_t k_pairs, const uint16_t* a, int64_t lda, const uint16_t* b,
                                int64_t ldb, float* c, int64_t ldc, __mmask16 tail) {
  if constexpr (kRows > 1) {
    if (rows == kRows - 1) return block_kernel<kRows - 1, kVectors>(k_pairs, a, lda, b, ldb, c, ldc, tail);
    remainder<kRows - 1, kVectors>(rows, k_pairs, a, lda, b, ldb, c, ldc, tail);
  }
}

// Rows in blocks of kRows, the rest in one block of its own size, for one column panel.
template <int kRows, int kVectors>
SPSR_BF16_TARGET void panel(int64_t m, int64_t k_pairs, const uint16_t* a, int64_t lda, const uint16_t* b,
                            int64_t ldb, float* c, int64_t ldc, __mmask16 tail) {
  int64_t i = 0;
  for (; i + kRows <= m; i += kRows)
    block_kernel<kRows, kVectors>(k_pairs, a + i * lda, lda, b, ldb, c + i * ldc, ldc, tail);
  if (i < m) remainder<kRows, kVectors>(static_cast<int>(m - i), k_pairs, a + i * lda, lda, b, ldb, c + i * ldc, ldc, tail);
}

SPSR_BF16_TARGET void gemm_avx512_bf16(int64_t m, int64_t n, int64_t k_pairs, const uint16_t* a, int64_t lda,
                                       const uint16_t* b, int64_t ldb, float* c, int64_t ldc) {
  // Column panels of up to 64 (4 vectors): 24 accumulators per block whatever the width.
  for (int64_t j = 0; j < n; j += 64) {
    const int64_t width = std::min<int64_t>(64, n - j);
    const int vectors = static_cast<int>((width + 15) / 16);
    const int last = static_cast<int>(width - 16 * (vectors - 1));
    const __mmask16 tail = static_cast<__mmask16>((1u << last) - 1u);
    const uint16_t* bj = b + 2 * j;
    switch (vectors) {
      case 1: panel<16, 1>(m, k_pairs, a, lda, bj, ldb, c + j, ldc, tail); break;
      case 2: panel<12, 2>(m, k_pairs, a, lda, bj, ldb, c + j, ldc, tail); break;
      case 3: panel<8, 3>(m, k_pairs, a, lda, bj, ldb, c + j, ldc, tail); break;
      default: panel<6, 4>(m, k_pairs, a, lda, bj, ldb, c + j, ldc, tail); break;
    }
  }
}

#endif  // SPSR_HAVE_AVX512_BF16_KERNEL

}  // namespace

bool cpu_has_avx512_bf16() {
#ifdef SPSR_HAVE_AVX512_BF16_KERNEL
  static const bool has = __builtin_cpu_supports("avx512bf16") && __builtin_cpu_supports("avx512bw") &&
                           __builtin_cpu_supports("avx512vl");
  return has;
#else
  return false;
#endif
}

void small_gemm_bf16(int64_t m, int64_t n, int64_t k_pairs, const uint16_t* a, int64_t lda,
                     const uint16_t* b, int64_t ldb, float* c, int64_t ldc) {
#ifdef SPSR_HAVE_AVX512_BF16_KERNEL
  if (cpu_has_avx512_bf16()) {
    gemm_avx512_bf16(m, n, k_pairs, a, lda, b, ldb, c, ldc);
    return;
  }
#endif
  gemm_portable(m, n, k_pairs, a, lda, b, ldb, c, ldc);
}

}  // namespace spsr_fast
