// C = A B for the small row-major float32 GEMMs of the Winograd convolution (A: m x k tiles
// by input channels, B: k x n weights, n <= a few hundred), run by one thread.
//
// Why not BLAS: these GEMMs run inside our own parallel loop, one per thread, and MKL's
// sgemm serialises concurrent callers (its packing runs in an OpenMP critical section), so
// two threads ran no faster than one. This kernel keeps a register block of C in AVX-512
// accumulators (12 rows x 32 columns or 6 x 64) and streams A with broadcast FMAs.
#pragma once

#include <cstdint>

namespace spsr_fast {

void small_gemm_f32(int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b,
                    int64_t ldb, float* c, int64_t ldc);

}  // namespace spsr_fast
