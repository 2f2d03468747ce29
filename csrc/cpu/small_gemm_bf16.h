// C = A B for the per-position GEMMs of the bf16 Winograd convolution (winograd_packed.h):
// A: m tiles x k input channels in bf16, B: k x n weights in bf16, C in float32, run by one
// thread. bf16 values travel as their raw 16 bits (uint16_t).
//
// B is packed in pairs of k (the layout of the bf16 dot-product instruction, VDPBF16PS, which
// multiplies two pairs of bf16 and adds both products to one float32 lane): element (k, j) at
// b[(k / 2) * 2 * ldb + 2 * j + k % 2], ldb = n rounded up to 16, zeros past n and past k.
// A's rows are read as k / 2 pairs, so k is even (a zero column pads an odd k).
#pragma once

#include <cstdint>

namespace spsr_fast {

// Whether this CPU has the AVX512_BF16 dot-product instruction that the fast kernel needs.
bool cpu_has_avx512_bf16();

// Columns of B as packed (n rounded up to a whole 16-float vector).
inline int64_t bf16_packed_columns(int64_t n) { return (n + 15) / 16 * 16; }

// C[0..m)[0..n) = A B; k_pairs = k / 2 (k even), lda in bf16 elements, ldb as above.
void small_gemm_bf16(int64_t m, int64_t n, int64_t k_pairs, const uint16_t* a, int64_t lda,
                     const uint16_t* b, int64_t ldb, float* c, int64_t ldc);

// float32 -> bf16 bits, rounding to nearest even (as the hardware conversion does).
inline uint16_t float_to_bf16_bits(float value) {
  uint32_t bits;
  __builtin_memcpy(&bits, &value, sizeof bits);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x40u);  // NaN stays NaN
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>(bits >> 16);
}

inline float bf16_bits_to_float(uint16_t bits) {
  const uint32_t wide = static_cast<uint32_t>(bits) << 16;
  float value;
  __builtin_memcpy(&value, &wide, sizeof value);
  return value;
}

}  // namespace spsr_fast
