// Index width of the CUDA kernels' grid-stride loops, on the host so that the CPU build and
// its tests check the same predicate the launchers use.
#pragma once

#include <cstdint>
#include <limits>

namespace spsr_fast {

// `for (index_t e = start; e < n; e += stride)`: every thread's last step computes
// e + stride with e as large as n - 1, so a 32-bit index is safe only while n - 1 + stride
// fits in int32 (n < INT32_MAX alone lets that step wrap, and the loop never ends).
constexpr bool grid_stride_fits_int32(int64_t n, int64_t stride) {
  return n >= 0 && stride > 0 && n - 1 + stride <= std::numeric_limits<int32_t>::max();
}

}  // namespace spsr_fast
