// Helpers shared by every kernel of spsr_fast._C, host and device alike.
#pragma once

#if defined(__CUDACC__) || defined(__HIPCC__)
#define SPSR_HD __host__ __device__ __forceinline__
#else
#define SPSR_HD inline
#endif
