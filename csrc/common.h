// Helpers shared by every kernel of spsr_fast._C, host and device alike.
#pragma once

#if defined(__CUDACC__) || defined(__HIPCC__)
#define SPSR_HD __host__ __device__ __forceinline__
#else
#define SPSR_HD inline
#endif

// x86-64 function multi-versioning (target_clones: one clone per ISA, picked at load time
// through an ifunc) needs GCC on x86-64 Linux. Elsewhere (aarch64, clang, macOS) such
// functions are compiled once, for the target's baseline ISA.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && defined(__linux__)
#define SPSR_HAVE_X86_CLONES 1
#define SPSR_X86_CLONES(...) __attribute__((target_clones(__VA_ARGS__)))
#else
#define SPSR_X86_CLONES(...)
#endif
