// Winograd F(2x2, 3x3) and F(4x4, 3x3) convolutions with packed weights, bf16 or float32
// GEMMs; see winograd_packed.h.
//
// F(2x2, 3x3), the transforms of csrc/cpu/winograd_conv3x3.cpp (cross-correlation, as torch's
// conv2d):
//   B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1]   V = B^T d B   (d: 4x4 input tile)
//   G   = [1 0 0; .5 .5 .5; .5 -.5 .5; 0 0 1]        U = G g G^T   (g: 3x3 weight)
//   A^T = [1 1 1 0; 0 1 -1 -1]                       Y = A^T M A,  M = V (.) U per position
// F(4x4, 3x3) (36 products per 16 outputs instead of 64; bf16 or float32 factors) on
// the points 0, 1, -1, 1/2, -2 and infinity, which keep the transforms' coefficients small: with
// bf16 factors its error on features of photographs is about torch's bf16 convolution's on
// average (at most 1.2x measured) and up to 2.2x at the worst pixel (the usual points 0, +-1,
// +-2: 4-5x); on white noise about 5x. Through a whole nf 64 RRDBNet on a photograph the error
// is F(2x2)'s (max 5.9e-4 vs 5.5e-4, mean equal). Matrices: see kF4G below.
// V is computed in float32 from the float32 input; the bf16 variant rounds it once to bf16
// (U likewise at packing time); M is accumulated in float32 and A^T M A, bias and epilogue
// run in float32. So a bf16 output differs from the float32 convolution only by the two bf16
// roundings of the products' factors (relative 2^-9 each), not by rounding any activation.
// The float32 variant runs the float32 kernel's GEMM (small_gemm.h) on the same transforms,
// with the upsampling read in; in F(4x4) its error against float64 is a few times F(2x2)'s,
// still below torch's float32 convolution's (measured in tests/test_cpu_bf16_engine.py).
//
// Work is split like the float32 kernel: chunks of tiles sized so a chunk's V and M stay in
// the core's L2; threads take whole chunks. The transforms run 16 channels per AVX-512 vector
// with masks for the tails; without AVX512_BF16 everything runs as portable scalar code
// (correct, slow: the engine does not choose bf16 on such CPUs).
#include "winograd_packed.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <array>
#include <atomic>
#include <memory>
#include <condition_variable>
#include <mutex>
#include <cstdlib>
#include <string>
#include <type_traits>
#include <vector>

#include "small_gemm.h"
#include "small_gemm_bf16.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define SPSR_HAVE_AVX512_BF16_TRANSFORMS 1
#define SPSR_BF16_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))
#endif

namespace spsr_fast {
namespace {

// Output tiles are kM x kM pixels (2 or 4), input tiles (kM + 2) x (kM + 2): as many positions.
template <int kM>
constexpr int64_t kSideOf = kM + 2;
template <int kM>
constexpr int64_t kPositionsOf = (kM + 2) * (kM + 2);
constexpr int64_t kPositions = kPositionsOf<2>;  // conv_chain and the float32 variant: F(2x2, 3x3)
constexpr int64_t kChunkBytes = 640 << 10;
// V of the bands a dense block's wavefront keeps (dense_block_wavefront). Measured on an nf 64
// RRDB, one thread, per RRDB: 64x64 input 7.1 ms (the whole image's V, 6 MiB: 6.9), 128x128
// 30.6 ms (2 MiB: 30.0, 1 MiB: 36.0; the whole image's V, 25 MiB: 52.6: out of the L3).
constexpr int64_t kWavefrontRingBytes = int64_t(4) << 20;

struct Geometry {  // the convolution's grid: the output's size (the upsampled input's)
  int64_t batch, height, width, tile, tiles_h, tiles_w;  // tile: the output tile's side
  int64_t tiles() const { return batch * tiles_h * tiles_w; }
};

Geometry geometry(int64_t batch, int64_t height, int64_t width, int64_t tile) {
  return {batch, height, width, tile, (height + tile - 1) / tile, (width + tile - 1) / tile};
}

// The float32 input of a conv whose output grid starts at (oy, ox) of the full-size grid: grid
// pixel (y, x) reads source pixel ((y + oy) >> shift) - sy, ((x + ox) >> shift) - sx) (shift 1:
// nearest upsampling), and zero outside the source's height x width (the padding).
struct Source {
  const float* data;
  int64_t sb, sh, sw;
  int shift;
  int64_t height, width;   // of the source
  int64_t oy = 0, ox = 0;  // where the grid starts, in full-size (upsampled) coordinates
  int64_t sy = 0, sx = 0;  // where the source starts, in full-size source coordinates
  int64_t row(int64_t y) const { return ((y + oy) >> shift) - sy; }  // outside: < 0 or >= height
  int64_t column(int64_t x) const { return ((x + ox) >> shift) - sx; }
};

Source source_of(const at::Tensor& t, int shift) {
  return {t.data_ptr<float>(), t.stride(0), t.stride(2), t.stride(3), shift, t.size(2), t.size(3)};
}

struct Pixels {  // a float32 (B, C, H, W) view with channel stride 1
  float* data;
  int64_t sb, sh, sw;
  float* at(int64_t b, int64_t y, int64_t x) const { return data + b * sb + y * sh + x * sw; }
};

struct Tile {
  int64_t b, y0, x0;  // top-left output pixel
};

Tile tile_at(const Geometry& g, int64_t t) {
  return {t / (g.tiles_h * g.tiles_w), g.tile * (t / g.tiles_w % g.tiles_h), g.tile * (t % g.tiles_w)};
}

// The (kM + 2)^2 input pixels of a tile (zeros outside the grid: the padding).
template <int kM>
void input_pointers(const Source& in, const Tile& tile, const float* zeros, const float* d[kPositionsOf<kM>]) {
  constexpr int64_t side = kSideOf<kM>;
  int64_t columns[side];
  bool column_inside[side];
  for (int64_t s = 0; s < side; ++s) {
    columns[s] = in.column(tile.x0 - 1 + s);
    column_inside[s] = columns[s] >= 0 && columns[s] < in.width;
  }
  for (int64_t r = 0; r < side; ++r) {
    const int64_t row = in.row(tile.y0 - 1 + r);
    const bool row_inside = row >= 0 && row < in.height;
    const float* base = in.data + tile.b * in.sb + row * in.sh;
    for (int64_t s = 0; s < side; ++s) {
      d[side * r + s] = row_inside && column_inside[s] ? base + columns[s] * in.sw : zeros;
    }
  }
}

// The kM^2 output pixels of a tile (the sink for those past the image's edge) and its residuals.
template <int kM>
struct OutputPointers {
  float* o[kM * kM];
  const float* r1[kM * kM];
  const float* r2[kM * kM];
};

template <int kM>
OutputPointers<kM> output_pointers(const Geometry& g, const Tile& tile, const Pixels& out, const Pixels& res1,
                                   const Pixels& res2, float* sink, const float* zeros) {
  OutputPointers<kM> p;
  for (int64_t k = 0; k < kM * kM; ++k) {
    const int64_t y = tile.y0 + k / kM, x = tile.x0 + k % kM;
    const bool inside = y < g.height && x < g.width;
    p.o[k] = inside ? out.at(tile.b, y, x) : sink;
    p.r1[k] = inside ? res1.at(tile.b, y, x) : zeros;
    p.r2[k] = inside ? res2.at(tile.b, y, x) : zeros;
  }
  return p;
}

// The GEMM precision: what V holds and which kernel multiplies it by U.
struct Bf16Products {
  using Element = uint16_t;  // bf16 bits
  static int64_t row(int64_t in_channels) { return (in_channels + 1) / 2 * 2; }  // a zero column pads odd C_in
  static Element portable(float value) { return float_to_bf16_bits(value); }
  static void gemm(int64_t n, int64_t out_channels, int64_t depth, int64_t ldv, const Element* v, const Element* u,
                   int64_t ldu, float* m, int64_t ldm) {
    small_gemm_bf16(n, out_channels, depth / 2, v, ldv, u, ldu, m, ldm);
  }
};

struct Fp32Products {
  using Element = float;
  static int64_t row(int64_t in_channels) { return in_channels; }
  static Element portable(float value) { return value; }
  static void gemm(int64_t n, int64_t out_channels, int64_t depth, int64_t ldv, const Element* v, const Element* u,
                   int64_t ldu, float* m, int64_t ldm) {
    small_gemm_f32(n, out_channels, depth, v, ldv, u, ldu, m, ldm);
  }
};

struct ChunkArgs {
  Source in;
  Pixels out, res1, res2;
  Geometry g;
  int64_t in_channels;  // channels of `in` to transform
  int64_t v_columns;    // columns of V they fill: in_channels, rounded up to even for bf16 (a zero column)
  int64_t v_offset;     // the first of those columns (a WinogradCache fills them conv by conv)
  int64_t v_row;        // V's row stride
  int64_t depth;        // columns of V the GEMMs read (their k)
  int64_t out_channels;
  int64_t ldm;  // M's row: out_channels rounded up to 16 (the output transform reads whole vectors)
  const void* u;
  int64_t ldu;  // U's row (packed columns)
  const float* bias;
  float scale, slope;
  const float* zeros;
};

// ---- F(4x4, 3x3) matrices (see the top of the file) ------------------------------------
//   B^T = [1 -3/2 -2 3/2 1 0; 0 -2 1 5 2 0; 0 2 -5 1 2 0; 0 -2 -1 2 1 0; 0 1 -2 -1 2 0;
//          0 1 -3/2 -2 3/2 1]
//   A^T = [1 1 1 1 1 0; 0 1 -1 1/2 -2 0; 0 1 1 1/4 4 0; 0 1 -1 1/8 -8 1]
// B^T and A^T run as the factored sums of f4_input_1d / f4_output_1d (the same operations, fused
// multiply-adds included, in the portable and the AVX-512 code, so both round alike); G only
// transforms weights, in float64.
constexpr double kF4G[6][3] = {{1, 0, 0},
                               {1. / 6, 1. / 6, 1. / 6},
                               {-1. / 6, 1. / 6, -1. / 6},
                               {-16. / 15, -8. / 15, -4. / 15},
                               {1. / 30, -1. / 15, 2. / 15},
                               {0, 0, 1}};

// ---- portable scalar path -------------------------------------------------------------

// t = B^T d over six values.
inline void f4_input_1d(const float d[6], float t[6]) {
  const float d41 = d[4] - d[1], d31 = d[3] - d[1], d42 = d[4] - d[2];
  t[0] = std::fma(1.5f, d31, std::fma(-2.f, d[2], d[0] + d[4]));
  t[1] = std::fma(5.f, d[3], std::fma(2.f, d41, d[2]));
  t[2] = std::fma(-5.f, d[2], std::fma(2.f, d[1] + d[4], d[3]));
  t[3] = std::fma(2.f, d31, d42);
  t[4] = std::fma(2.f, d42, d[1] - d[3]);
  t[5] = std::fma(1.5f, d42, std::fma(-2.f, d[3], d[1] + d[5]));
}

// y = A^T m over six values.
inline void f4_output_1d(const float m[6], float y[4]) {
  const float sum12 = m[1] + m[2], diff12 = m[1] - m[2];
  y[0] = (m[0] + sum12) + (m[3] + m[4]);
  y[1] = std::fma(-2.f, m[4], std::fma(.5f, m[3], diff12));
  y[2] = std::fma(4.f, m[4], std::fma(.25f, m[3], sum12));
  y[3] = std::fma(-8.f, m[4], std::fma(.125f, m[3], diff12)) + m[5];
}

template <typename P>
void input_transform_portable_f4(const ChunkArgs& a, int64_t first, int64_t n, typename P::Element* v) {
  const int64_t position_stride = n * a.v_row;
  for (int64_t i = 0; i < n; ++i) {
    const float* d[36];
    input_pointers<4>(a.in, tile_at(a.g, first + i), a.zeros, d);
    typename P::Element* out = v + i * a.v_row + a.v_offset;
    for (int64_t c = 0; c < a.v_columns; ++c) {
      const bool real = c < a.in_channels;
      float t[36];  // B^T d, t[6 r + s]
      for (int s = 0; s < 6; ++s) {
        float column[6], transformed[6];
        for (int k = 0; k < 6; ++k) column[k] = real ? d[6 * k + s][c] : 0.f;
        f4_input_1d(column, transformed);
        for (int r = 0; r < 6; ++r) t[6 * r + s] = transformed[r];
      }
      for (int r = 0; r < 6; ++r) {  // (B^T d) B
        float row[6];
        f4_input_1d(t + 6 * r, row);
        for (int s = 0; s < 6; ++s) out[(6 * r + s) * position_stride + c] = P::portable(row[s]);
      }
    }
  }
}

// out = epilogue(y + bias) for one output pixel of one channel.
template <ConvEpilogue kEpilogue>
float apply_epilogue(float y, const ChunkArgs& a, int64_t c, const float* r1, const float* r2) {
  float value = y + a.bias[c];
  if constexpr (kEpilogue == ConvEpilogue::kBiasLeakyRelu) {
    value = value > 0.f ? value : value * a.slope;
  } else if constexpr (kEpilogue == ConvEpilogue::kResidual) {
    value = r1[c] + a.scale * value;
  } else if constexpr (kEpilogue == ConvEpilogue::kResidual2) {
    value = r2[c] + a.scale * (r1[c] + a.scale * value);
  }
  return value;
}

template <ConvEpilogue kEpilogue>
void output_transform_portable_f4(const ChunkArgs& a, int64_t first, int64_t n, const float* m, float* sink) {
  const int64_t position_stride = n * a.ldm;
  for (int64_t i = 0; i < n; ++i) {
    const OutputPointers<4> p = output_pointers<4>(a.g, tile_at(a.g, first + i), a.out, a.res1, a.res2, sink, a.zeros);
    const float* tile = m + i * a.ldm;
    for (int64_t c = 0; c < a.out_channels; ++c) {
      float u[24];  // A^T M, u[6 r + s]
      for (int s = 0; s < 6; ++s) {
        float column[6], transformed[4];
        for (int k = 0; k < 6; ++k) column[k] = tile[(6 * k + s) * position_stride + c];
        f4_output_1d(column, transformed);
        for (int r = 0; r < 4; ++r) u[6 * r + s] = transformed[r];
      }
      for (int r = 0; r < 4; ++r) {  // (A^T M) A
        float y[4];
        f4_output_1d(u + 6 * r, y);
        for (int s = 0; s < 4; ++s) {
          p.o[4 * r + s][c] = apply_epilogue<kEpilogue>(y[s], a, c, p.r1[4 * r + s], p.r2[4 * r + s]);
        }
      }
    }
  }
}

template <typename P>
void input_transform_portable(const ChunkArgs& a, int64_t first, int64_t n, typename P::Element* v) {
  const int64_t position_stride = n * a.v_row;
  for (int64_t i = 0; i < n; ++i) {
    const float* d[kPositions];
    input_pointers<2>(a.in, tile_at(a.g, first + i), a.zeros, d);
    typename P::Element* out = v + i * a.v_row + a.v_offset;
    for (int64_t c = 0; c < a.v_columns; ++c) {
      float t[kPositions];  // B^T d
      const bool real = c < a.in_channels;
      for (int64_t s = 0; s < 4; ++s) {
        const float d0 = real ? d[s][c] : 0.f, d1 = real ? d[4 + s][c] : 0.f;
        const float d2 = real ? d[8 + s][c] : 0.f, d3 = real ? d[12 + s][c] : 0.f;
        t[s] = d0 - d2;
        t[4 + s] = d1 + d2;
        t[8 + s] = d2 - d1;
        t[12 + s] = d1 - d3;
      }
      for (int64_t r = 0; r < 4; ++r) {  // (B^T d) B
        const float* row = t + 4 * r;
        out[(4 * r + 0) * position_stride + c] = P::portable(row[0] - row[2]);
        out[(4 * r + 1) * position_stride + c] = P::portable(row[1] + row[2]);
        out[(4 * r + 2) * position_stride + c] = P::portable(row[2] - row[1]);
        out[(4 * r + 3) * position_stride + c] = P::portable(row[1] - row[3]);
      }
    }
  }
}

template <ConvEpilogue kEpilogue>
void output_transform_portable(const ChunkArgs& a, int64_t first, int64_t n, const float* m, float* sink) {
  const int64_t position_stride = n * a.ldm;
  for (int64_t i = 0; i < n; ++i) {
    const OutputPointers<2> p = output_pointers<2>(a.g, tile_at(a.g, first + i), a.out, a.res1, a.res2, sink, a.zeros);
    const float* tile = m + i * a.ldm;
    for (int64_t c = 0; c < a.out_channels; ++c) {
      float q[kPositions];
      for (int64_t k = 0; k < kPositions; ++k) q[k] = tile[k * position_stride + c];
      float s8[8];  // A^T M: two rows of four
      for (int64_t s = 0; s < 4; ++s) {
        s8[s] = q[s] + q[4 + s] + q[8 + s];
        s8[4 + s] = q[4 + s] - q[8 + s] - q[12 + s];
      }
      const float y[4] = {s8[0] + s8[1] + s8[2], s8[1] - s8[2] - s8[3], s8[4] + s8[5] + s8[6],
                          s8[5] - s8[6] - s8[7]};
      for (int64_t k = 0; k < 4; ++k) p.o[k][c] = apply_epilogue<kEpilogue>(y[k], a, c, p.r1[k], p.r2[k]);
    }
  }
}

// ---- AVX-512 path ---------------------------------------------------------------------

#ifdef SPSR_HAVE_AVX512_BF16_TRANSFORMS

SPSR_BF16_TARGET inline __mmask16 lanes_below(int64_t count) {
  return count >= 16 ? static_cast<__mmask16>(0xffff) : static_cast<__mmask16>((1u << count) - 1u);
}

SPSR_BF16_TARGET inline void store_v(uint16_t* dst, __mmask16 mask, __m512 value) {
  _mm256_mask_storeu_epi16(dst, mask, (__m256i)_mm512_cvtneps_pbh(value));
}

SPSR_BF16_TARGET inline void store_v(float* dst, __mmask16 mask, __m512 value) {
  _mm512_mask_storeu_ps(dst, mask, value);
}

// out = epilogue(y + bias) for 16 channels of one output pixel.
template <ConvEpilogue kEpilogue>
SPSR_BF16_TARGET inline void store_epilogue(__m512 y, __m512 bias, __m512 scale, __m512 slope, __mmask16 mask,
                                            const float* r1, const float* r2, float* out) {
  __m512 value = _mm512_add_ps(y, bias);
  if constexpr (kEpilogue == ConvEpilogue::kBiasLeakyRelu) {
    const __mmask16 negative = _mm512_cmp_ps_mask(value, _mm512_setzero_ps(), _CMP_LT_OQ);
    value = _mm512_mask_mul_ps(value, negative, value, slope);
  } else if constexpr (kEpilogue == ConvEpilogue::kResidual) {
    value = _mm512_fmadd_ps(scale, value, _mm512_maskz_loadu_ps(mask, r1));
  } else if constexpr (kEpilogue == ConvEpilogue::kResidual2) {
    value = _mm512_fmadd_ps(scale, value, _mm512_maskz_loadu_ps(mask, r1));
    value = _mm512_fmadd_ps(scale, value, _mm512_maskz_loadu_ps(mask, r2));
  }
  _mm512_mask_storeu_ps(out, mask, value);
}

// F(4x4, 3x3), 1-D, as the scalar f4_input_1d / f4_output_1d (same operations, same order).
SPSR_BF16_TARGET inline void f4_input_1d(const __m512 d[6], __m512 t[6]) {
  const __m512 two = _mm512_set1_ps(2.f), three_halves = _mm512_set1_ps(1.5f), five = _mm512_set1_ps(5.f);
  const __m512 d41 = _mm512_sub_ps(d[4], d[1]), d31 = _mm512_sub_ps(d[3], d[1]), d42 = _mm512_sub_ps(d[4], d[2]);
  t[0] = _mm512_fmadd_ps(three_halves, d31, _mm512_fnmadd_ps(two, d[2], _mm512_add_ps(d[0], d[4])));
  t[1] = _mm512_fmadd_ps(five, d[3], _mm512_fmadd_ps(two, d41, d[2]));
  t[2] = _mm512_fnmadd_ps(five, d[2], _mm512_fmadd_ps(two, _mm512_add_ps(d[1], d[4]), d[3]));
  t[3] = _mm512_fmadd_ps(two, d31, d42);
  t[4] = _mm512_fmadd_ps(two, d42, _mm512_sub_ps(d[1], d[3]));
  t[5] = _mm512_fmadd_ps(three_halves, d42, _mm512_fnmadd_ps(two, d[3], _mm512_add_ps(d[1], d[5])));
}

SPSR_BF16_TARGET inline void f4_output_1d(const __m512 m[6], __m512 y[4]) {
  const __m512 sum12 = _mm512_add_ps(m[1], m[2]), diff12 = _mm512_sub_ps(m[1], m[2]);
  y[0] = _mm512_add_ps(_mm512_add_ps(m[0], sum12), _mm512_add_ps(m[3], m[4]));
  y[1] = _mm512_fmadd_ps(_mm512_set1_ps(-2.f), m[4], _mm512_fmadd_ps(_mm512_set1_ps(.5f), m[3], diff12));
  y[2] = _mm512_fmadd_ps(_mm512_set1_ps(4.f), m[4], _mm512_fmadd_ps(_mm512_set1_ps(.25f), m[3], sum12));
  y[3] = _mm512_add_ps(_mm512_fmadd_ps(_mm512_set1_ps(-8.f), m[4], _mm512_fmadd_ps(_mm512_set1_ps(.125f), m[3], diff12)),
                       m[5]);
}

// One tile's V for 16 channels from channel c (d: its input pixels, ps: V's position stride).
template <typename P>
SPSR_BF16_TARGET inline void input_tile_f2(const float* const d[16], int64_t c, __mmask16 load, __mmask16 store,
                                           typename P::Element* out, int64_t ps) {
  __m512 t[16];  // B^T d
#pragma GCC unroll 4
  for (int s = 0; s < 4; ++s) {
    const __m512 d0 = _mm512_maskz_loadu_ps(load, d[s] + c), d1 = _mm512_maskz_loadu_ps(load, d[4 + s] + c);
    const __m512 d2 = _mm512_maskz_loadu_ps(load, d[8 + s] + c), d3 = _mm512_maskz_loadu_ps(load, d[12 + s] + c);
    t[s] = _mm512_sub_ps(d0, d2);
    t[4 + s] = _mm512_add_ps(d1, d2);
    t[8 + s] = _mm512_sub_ps(d2, d1);
    t[12 + s] = _mm512_sub_ps(d1, d3);
  }
#pragma GCC unroll 4
  for (int r = 0; r < 4; ++r) {  // (B^T d) B
    const __m512* row = t + 4 * r;
    typename P::Element* dst = out + 4 * r * ps + c;
    store_v(dst, store, _mm512_sub_ps(row[0], row[2]));
    store_v(dst + ps, store, _mm512_add_ps(row[1], row[2]));
    store_v(dst + 2 * ps, store, _mm512_sub_ps(row[2], row[1]));
    store_v(dst + 3 * ps, store, _mm512_sub_ps(row[1], row[3]));
  }
}

template <typename P>
SPSR_BF16_TARGET inline void input_tile_f4(const float* const d[36], int64_t c, __mmask16 load, __mmask16 store,
                                           typename P::Element* out, int64_t ps) {
  __m512 t[36];  // B^T d, t[6 r + s]
#pragma GCC unroll 6
  for (int s = 0; s < 6; ++s) {
    __m512 column[6], transformed[6];
#pragma GCC unroll 6
    for (int k = 0; k < 6; ++k) column[k] = _mm512_maskz_loadu_ps(load, d[6 * k + s] + c);
    f4_input_1d(column, transformed);
#pragma GCC unroll 6
    for (int r = 0; r < 6; ++r) t[6 * r + s] = transformed[r];
  }
#pragma GCC unroll 6
  for (int r = 0; r < 6; ++r) {  // (B^T d) B
    __m512 row[6];
    f4_input_1d(t + 6 * r, row);
    typename P::Element* dst = out + 6 * r * ps + c;
#pragma GCC unroll 6
    for (int s = 0; s < 6; ++s) store_v(dst + s * ps, store, row[s]);
  }
}

template <typename P, int kM>
SPSR_BF16_TARGET void input_transform_avx512(const ChunkArgs& a, int64_t first, int64_t n, typename P::Element* v) {
  const int64_t ps = n * a.v_row;  // position stride
  for (int64_t i = 0; i < n; ++i) {
    const float* d[kPositionsOf<kM>];
    input_pointers<kM>(a.in, tile_at(a.g, first + i), a.zeros, d);
    typename P::Element* out = v + i * a.v_row + a.v_offset;
    for (int64_t c = 0; c < a.v_columns; c += 16) {
      const __mmask16 load = lanes_below(a.in_channels - c), store = lanes_below(a.v_columns - c);
      if constexpr (kM == 2) {
        input_tile_f2<P>(d, c, load, store, out, ps);
      } else {
        input_tile_f4<P>(d, c, load, store, out, ps);
      }
    }
  }
}

// One tile's output pixels for 16 channels from channel c (tile: its M, ps: M's position stride).
template <ConvEpilogue kEpilogue>
SPSR_BF16_TARGET inline void output_tile_f2(const float* tile, int64_t ps, int64_t c, __mmask16 mask, __m512 bias,
                                            __m512 scale, __m512 slope, const OutputPointers<2>& p) {
  __m512 q[16];
#pragma GCC unroll 16
  for (int k = 0; k < 16; ++k) q[k] = _mm512_loadu_ps(tile + k * ps + c);  // M rows are padded
  __m512 s8[8];  // A^T M: two rows of four
#pragma GCC unroll 4
  for (int s = 0; s < 4; ++s) {
    s8[s] = _mm512_add_ps(_mm512_add_ps(q[s], q[4 + s]), q[8 + s]);
    s8[4 + s] = _mm512_sub_ps(_mm512_sub_ps(q[4 + s], q[8 + s]), q[12 + s]);
  }
  const __m512 y[4] = {_mm512_add_ps(_mm512_add_ps(s8[0], s8[1]), s8[2]),
                       _mm512_sub_ps(_mm512_sub_ps(s8[1], s8[2]), s8[3]),
                       _mm512_add_ps(_mm512_add_ps(s8[4], s8[5]), s8[6]),
                       _mm512_sub_ps(_mm512_sub_ps(s8[5], s8[6]), s8[7])};
#pragma GCC unroll 4
  for (int k = 0; k < 4; ++k) store_epilogue<kEpilogue>(y[k], bias, scale, slope, mask, p.r1[k] + c, p.r2[k] + c, p.o[k] + c);
}

template <ConvEpilogue kEpilogue>
SPSR_BF16_TARGET inline void output_tile_f4(const float* tile, int64_t ps, int64_t c, __mmask16 mask, __m512 bias,
                                            __m512 scale, __m512 slope, const OutputPointers<4>& p) {
  __m512 u[24];  // A^T M, u[6 r + s]
#pragma GCC unroll 6
  for (int s = 0; s < 6; ++s) {
    __m512 column[6], transformed[4];
#pragma GCC unroll 6
    for (int k = 0; k < 6; ++k) column[k] = _mm512_loadu_ps(tile + (6 * k + s) * ps + c);  // M rows are padded
    f4_output_1d(column, transformed);
#pragma GCC unroll 4
    for (int r = 0; r < 4; ++r) u[6 * r + s] = transformed[r];
  }
#pragma GCC unroll 4
  for (int r = 0; r < 4; ++r) {  // (A^T M) A
    __m512 y[4];
    f4_output_1d(u + 6 * r, y);
#pragma GCC unroll 4
    for (int s = 0; s < 4; ++s) {
      const int k = 4 * r + s;
      store_epilogue<kEpilogue>(y[s], bias, scale, slope, mask, p.r1[k] + c, p.r2[k] + c, p.o[k] + c);
    }
  }
}

template <ConvEpilogue kEpilogue, int kM>
SPSR_BF16_TARGET void output_transform_avx512(const ChunkArgs& a, int64_t first, int64_t n, const float* m,
                                              float* sink) {
  const int64_t ps = n * a.ldm;
  const __m512 scale = _mm512_set1_ps(a.scale), slope = _mm512_set1_ps(a.slope);
  for (int64_t i = 0; i < n; ++i) {
    const OutputPointers<kM> p =
        output_pointers<kM>(a.g, tile_at(a.g, first + i), a.out, a.res1, a.res2, sink, a.zeros);
    const float* tile = m + i * a.ldm;
    for (int64_t c = 0; c < a.out_channels; c += 16) {
      const __mmask16 mask = lanes_below(a.out_channels - c);
      const __m512 bias = _mm512_maskz_loadu_ps(mask, a.bias + c);
      if constexpr (kM == 2) {
        output_tile_f2<kEpilogue>(tile, ps, c, mask, bias, scale, slope, p);
      } else {
        output_tile_f4<kEpilogue>(tile, ps, c, mask, bias, scale, slope, p);
      }
    }
  }
}

#endif  // SPSR_HAVE_AVX512_BF16_TRANSFORMS

template <typename P, int kM>
void input_transform(const ChunkArgs& a, int64_t first, int64_t n, typename P::Element* v) {
  const bool native = winograd_packed_native();
#ifdef SPSR_HAVE_AVX512_BF16_TRANSFORMS
  if (native) return input_transform_avx512<P, kM>(a, first, n, v);
#endif
  (void)native;
  kM == 2 ? input_transform_portable<P>(a, first, n, v) : input_transform_portable_f4<P>(a, first, n, v);
}

template <ConvEpilogue kEpilogue, int kM>
void output_transform(const ChunkArgs& a, int64_t first, int64_t n, const float* m, float* sink) {
  const bool native = winograd_packed_native();
#ifdef SPSR_HAVE_AVX512_BF16_TRANSFORMS
  if (native) return output_transform_avx512<kEpilogue, kM>(a, first, n, m, sink);
#endif
  (void)native;
  kM == 2 ? output_transform_portable<kEpilogue>(a, first, n, m, sink)
          : output_transform_portable_f4<kEpilogue>(a, first, n, m, sink);
}

template <int kM>
void output_transform(ConvEpilogue kind, const ChunkArgs& a, int64_t first, int64_t n, const float* m,
                      float* sink) {
  switch (kind) {
    case ConvEpilogue::kBias: return output_transform<ConvEpilogue::kBias, kM>(a, first, n, m, sink);
    case ConvEpilogue::kBiasLeakyRelu:
      return output_transform<ConvEpilogue::kBiasLeakyRelu, kM>(a, first, n, m, sink);
    case ConvEpilogue::kResidual: return output_transform<ConvEpilogue::kResidual, kM>(a, first, n, m, sink);
    case ConvEpilogue::kResidual2: return output_transform<ConvEpilogue::kResidual2, kM>(a, first, n, m, sink);
  }
}

// Tiles per chunk: V and M (float32) of a chunk stay in the core's L2 with room for U and the
// input rows; a multiple of 24 so the GEMMs' row blocks (6, 8, 12, 16) come out whole.
int64_t chunk_tiles(int64_t v_row_bytes, int64_t ldm, int64_t positions = kPositions) {
  const int64_t per_tile = positions * (v_row_bytes + ldm * int64_t(sizeof(float)));
  return std::clamp<int64_t>(kChunkBytes / per_tile / 24 * 24, 24, 480);
}

int64_t chunk_count(int64_t tiles, int64_t chunk) { return (tiles + chunk - 1) / chunk; }

// The n tiles from `first`: transform their new channels into v (their V), the GEMMs (one per
// position), the output transform.
template <typename P, int kM = 2>
void run_tiles(const ChunkArgs& a, ConvEpilogue kind, int64_t first, int64_t n, typename P::Element* v,
               std::vector<float>& m, std::vector<float>& sink) {
  constexpr int64_t positions = kPositionsOf<kM>;
  const int64_t u_position_stride = a.depth * a.ldu;  // U: (positions, depth rows, ldu)
  if (static_cast<int64_t>(m.size()) < positions * n * a.ldm) m.resize(positions * n * a.ldm);
  if (static_cast<int64_t>(sink.size()) < a.ldm) sink.resize(a.ldm);
  input_transform<P, kM>(a, first, n, v);
  for (int64_t p = 0; p < positions; ++p) {
    P::gemm(n, a.out_channels, a.depth, a.v_row, v + p * n * a.v_row,
            static_cast<const typename P::Element*>(a.u) + p * u_position_stride, a.ldu, m.data() + p * n * a.ldm,
            a.ldm);
  }
  output_transform<kM>(kind, a, first, n, m.data(), sink.data());
}

// Runs items 0..count-1 on every intra-op thread, each thread claiming the next item when it
// is free: a thread the OS deschedules holds up at most the item it is running (a static split
// would leave its whole share waiting, and with other work on the machine that is the common
// case on 2 cores).
template <typename Run>
void claim_items(int64_t count, const Run& run) {
  std::atomic<int64_t> next{0};
  at::parallel_for(0, std::min<int64_t>(count, at::get_num_threads()), 1, [&](int64_t, int64_t) {
    for (int64_t i = next++; i < count; i = next++) run(i);
  });
}

// Every chunk, V in per-thread scratch kept between calls (no page faults, no clearing).
template <typename P, int kM>
void run_chunks(const ChunkArgs& a, ConvEpilogue kind) {
  constexpr int64_t positions = kPositionsOf<kM>;
  const int64_t chunk =
      std::min(chunk_tiles(a.v_row * int64_t(sizeof(typename P::Element)), a.ldm, positions), a.g.tiles());
  claim_items(chunk_count(a.g.tiles(), chunk), [&](int64_t index) {
    thread_local std::vector<typename P::Element> v;
    thread_local std::vector<float> m, sink;
    if (static_cast<int64_t>(v.size()) < positions * chunk * a.v_row) v.resize(positions * chunk * a.v_row);
    run_tiles<P, kM>(a, kind, index * chunk, std::min(chunk, a.g.tiles() - index * chunk), v.data(), m, sink);
  });
}

// Calls run(P{}, std::integral_constant<int, kM>{}) for a pack's GEMM precision (bf16:
// Bf16Products, else Fp32Products) and output tile (2 or 4): the one place that maps packs to
// kernel instantiations.
template <typename Run>
void with_pack_kernel(bool bf16, int64_t tile, const Run& run) {
  using F2 = std::integral_constant<int, 2>;
  using F4 = std::integral_constant<int, 4>;
  if (bf16) {
    tile == 4 ? run(Bf16Products{}, F4{}) : run(Bf16Products{}, F2{});
  } else {
    tile == 4 ? run(Fp32Products{}, F4{}) : run(Fp32Products{}, F2{});
  }
}

bool channels_innermost(const at::Tensor& t) { return t.stride(1) == 1 || t.size(1) == 1; }

void check_pixels(const at::Tensor& t, const at::Tensor& like, const char* name) {
  TORCH_CHECK(t.dim() == 4 && t.sizes() == like.sizes(), "winograd_packed: ", name, " has shape ", t.sizes(),
              ", expected ", like.sizes());
  TORCH_CHECK(t.scalar_type() == at::kFloat && t.device().is_cpu() && channels_innermost(t),
              "winograd_packed: ", name, " must be a float32 CPU tensor with channel stride 1");
}

Pixels pixels_of(const at::Tensor& t) {
  return {t.data_ptr<float>(), t.stride(0), t.stride(2), t.stride(3)};
}

// The output tile a pack (bf16 or float32) is for: 2 (16 positions) or 4 (36 positions).
int64_t pack_tile(const at::Tensor& pack) { return pack.dim() > 0 && pack.size(0) == kPositionsOf<4> ? 4 : 2; }

void check_float_pack(const at::Tensor& pack, int64_t depth, int64_t out_channels) {
  const int64_t positions = pack.dim() == 3 ? pack.size(0) : 0;
  TORCH_CHECK(pack.scalar_type() == at::kFloat && pack.is_contiguous() &&
                  (positions == kPositionsOf<2> || positions == kPositionsOf<4>) &&
                  pack.sizes() == at::IntArrayRef({positions, depth, out_channels}),
              "winograd_packed: the float32 pack must be contiguous (16 or 36, ", depth, ", ", out_channels, ") for ",
              depth, " -> ", out_channels, " channels, got ", pack.sizes(), " ", pack.scalar_type());
}

void check_bf16_pack(const at::Tensor& pack, int64_t depth, int64_t out_channels) {
  const int64_t columns = bf16_packed_columns(out_channels), positions = pack.dim() > 0 ? pack.size(0) : 0;
  TORCH_CHECK(pack.scalar_type() == at::kBFloat16 && pack.is_contiguous() &&
                  (positions == kPositionsOf<2> || positions == kPositionsOf<4>) &&
                  pack.sizes() == at::IntArrayRef({positions, depth / 2, columns, 2}),
              "winograd_packed: the bf16 pack must be contiguous bfloat16 (16 or 36, ", depth / 2, ", ", columns,
              ", 2) for ", depth, " -> ", out_channels, " channels, got ", pack.sizes(), " ", pack.scalar_type());
}

bool native_from_environment() {
  const char* value = std::getenv("SPSR_FAST_WINOGRAD_KERNEL");
  const std::string choice = value == nullptr ? "" : value;
  TORCH_CHECK(choice.empty() || choice == "auto" || choice == "portable",
              "SPSR_FAST_WINOGRAD_KERNEL must be 'auto' or 'portable', got '", choice, "'");
  return choice != "portable" && cpu_has_avx512_bf16();
}

void fill_output_args(ChunkArgs& a, const Geometry& g, at::Tensor& out, const at::Tensor& pack,
                      const at::Tensor& bias, const EpilogueArgs& epilogue, const float* zeros) {
  const bool residual = epilogue.kind == ConvEpilogue::kResidual || epilogue.kind == ConvEpilogue::kResidual2;
  if (residual) check_pixels(epilogue.res1, out, "res1");
  if (epilogue.kind == ConvEpilogue::kResidual2) check_pixels(epilogue.res2, out, "res2");
  TORCH_CHECK(bias.dim() == 1 && bias.size(0) == out.size(1) && bias.scalar_type() == at::kFloat &&
                  bias.is_contiguous(),
              "winograd_packed: bias must be contiguous float32 (", out.size(1), "), got ", bias.sizes());
  a.out = pixels_of(out);
  a.res1 = residual ? pixels_of(epilogue.res1) : a.out;
  a.res2 = epilogue.kind == ConvEpilogue::kResidual2 ? pixels_of(epilogue.res2) : a.out;
  a.g = g;
  a.out_channels = out.size(1);
  a.u = pack.data_ptr();
  a.bias = bias.data_ptr<float>();
  a.scale = static_cast<float>(epilogue.scale);
  a.slope = static_cast<float>(epilogue.negative_slope);
  a.zeros = zeros;
}

}  // namespace

bool winograd_packed_native() {
  static const bool native = native_from_environment();
  return native;
}

// U = G g G^T for F(4x4, 3x3) in float64, (36, C_in, C_out) float32.
at::Tensor winograd4_weight_transform(const at::Tensor& weight) {
  const int64_t out_channels = weight.size(0), in_channels = weight.size(1);
  const at::Tensor w = weight.to(at::kDouble).contiguous();
  at::Tensor u = at::empty({kPositionsOf<4>, in_channels, out_channels}, weight.options().dtype(at::kFloat));
  const double* src = w.data_ptr<double>();
  float* dst = u.data_ptr<float>();
  const int64_t position_stride = in_channels * out_channels;
  for (int64_t co = 0; co < out_channels; ++co) {
    for (int64_t ci = 0; ci < in_channels; ++ci) {
      const double* g = src + (co * in_channels + ci) * 9;
      double gg[6][3];  // G g
      for (int r = 0; r < 6; ++r) {
        for (int s = 0; s < 3; ++s) gg[r][s] = kF4G[r][0] * g[s] + kF4G[r][1] * g[3 + s] + kF4G[r][2] * g[6 + s];
      }
      for (int r = 0; r < 6; ++r) {  // (G g) G^T
        for (int s = 0; s < 6; ++s) {
          const double value = gg[r][0] * kF4G[s][0] + gg[r][1] * kF4G[s][1] + gg[r][2] * kF4G[s][2];
          dst[(6 * r + s) * position_stride + ci * out_channels + co] = static_cast<float>(value);
        }
      }
    }
  }
  return u;
}

at::Tensor winograd_bf16_pack_weight(const at::Tensor& weight, int64_t output_tile) {
  TORCH_CHECK(weight.dim() == 4 && weight.size(2) == 3 && weight.size(3) == 3,
              "winograd_packed: weight must be (C_out, C_in, 3, 3), got ", weight.sizes());
  TORCH_CHECK(output_tile == 2 || output_tile == 4, "winograd_packed: output_tile must be 2 or 4, got ", output_tile);
  const int64_t out_channels = weight.size(0), in_channels = weight.size(1);
  const int64_t pairs = (in_channels + 1) / 2, columns = bf16_packed_columns(out_channels);
  // U in float32 (F(2x2): exactly as the float32 kernel computes it), then rounded and packed in pairs
  const at::Tensor u = output_tile == 2 ? winograd_weight_transform(weight) : winograd4_weight_transform(weight);
  const int64_t positions = u.size(0);
  const float* src = u.data_ptr<float>();
  at::Tensor packed = at::zeros({positions, pairs, columns, 2}, u.options().dtype(at::kBFloat16));
  uint16_t* dst = reinterpret_cast<uint16_t*>(packed.data_ptr());
  for (int64_t p = 0; p < positions; ++p) {
    for (int64_t ci = 0; ci < in_channels; ++ci) {
      for (int64_t co = 0; co < out_channels; ++co) {
        dst[((p * pairs + ci / 2) * columns + co) * 2 + ci % 2] =
            float_to_bf16_bits(src[(p * in_channels + ci) * out_channels + co]);
      }
    }
  }
  return packed;
}

namespace {

// Conv k of a dense block at band b (of tile rows) reads x_{k-1} one pixel row into band b + 1,
// and the V columns conv k-1 wrote for band b; conv 1 at band b reuses the V ring slot of band
// b - kRingBands, which conv 5 must be done with. Anything else may run in any order.
constexpr int64_t kRingBands = 9;

// One dense block made ready to run: the convs' arguments, the chunks of tiles of each band,
// and where its ring of V bands lies (`ring_bytes`, lent by the caller: the blocks run one
// after another, so they share one ring).
struct DenseBlockPlan {
  std::array<ChunkArgs, 5> args;
  std::array<ConvEpilogue, 5> kinds;
  std::array<at::Tensor, 5> biases;
  std::vector<float> zeros;
  unsigned char* ring = nullptr;
  int64_t ring_bytes = 0;
  int64_t bands = 0, band_tiles = 0, band_v = 0, channels = 0, chunk = 0, tiles = 0;  // band_v: V elements
  bool bf16 = true;  // the packs' GEMM precision (all alike)
  int64_t tile = 2;  // output tile side: the packs' (all alike)
  int64_t positions = 16;  // (tile + 2)^2

  explicit DenseBlockPlan(const std::array<DenseConv, 5>& convs);
  int64_t chunks_in(int64_t band) const {
    return (std::min(tiles, (band + 1) * band_tiles) - band * band_tiles + chunk - 1) / chunk;
  }
  void run(int64_t conv, int64_t band, int64_t index, std::vector<float>& m, std::vector<float>& sink) const;
};

DenseBlockPlan::DenseBlockPlan(const std::array<DenseConv, 5>& convs) {
  const at::Tensor& first_input = convs[0].new_channels;
  const int64_t batch = first_input.size(0), height = first_input.size(2), width = first_input.size(3);
  int64_t max_columns = 0;
  bf16 = convs[0].pack.scalar_type() == at::kBFloat16;
  tile = pack_tile(convs[0].pack);
  for (const DenseConv& conv : convs) {
    const at::Tensor& added = conv.new_channels;
    TORCH_CHECK(added.dim() == 4 && added.size(0) == batch && added.size(2) == height && added.size(3) == width &&
                    added.scalar_type() == at::kFloat && channels_innermost(added),
                "dense_blocks_wavefront: new channels must be float32 (", batch, ", C, ", height, ", ", width,
                ") with channel stride 1, got ", added.sizes());
    TORCH_CHECK(!bf16 || added.size(1) % 2 == 0, "dense_blocks_wavefront: channel counts must be even with bf16 "
                "packs, got ", added.size(1));
    check_pixels(conv.out, conv.out, "out");
    TORCH_CHECK(conv.out.size(0) == batch && conv.out.size(2) == height && conv.out.size(3) == width,
                "dense_blocks_wavefront: out has shape ", conv.out.sizes());
    channels += added.size(1);
    TORCH_CHECK((conv.pack.scalar_type() == at::kBFloat16) == bf16,
                "dense_blocks_wavefront: the packs of a dense block must be all bf16 or all float32");
    if (bf16) {
      check_bf16_pack(conv.pack, channels, conv.out.size(1));
    } else {
      check_float_pack(conv.pack, channels, conv.out.size(1));
    }
    TORCH_CHECK(pack_tile(conv.pack) == tile, "dense_blocks_wavefront: the packs of a dense block must be for "
                "one output tile, got ", tile, " and ", pack_tile(conv.pack));
    max_columns = std::max(max_columns, bf16_packed_columns(conv.out.size(1)));
  }
  const Geometry g = geometry(batch, height, width, tile);
  positions = (tile + 2) * (tile + 2);
  tiles = g.tiles();
  if (tiles == 0) return;
  zeros.assign(std::max(channels, max_columns) + 16, 0.f);  // the zero padding
  int64_t filled = 0;
  for (size_t k = 0; k < convs.size(); ++k) {
    const DenseConv& conv = convs[k];
    ChunkArgs& a = args[k];
    const at::Tensor& added = conv.new_channels;
    a.in = source_of(added, 0);
    a.in_channels = a.v_columns = added.size(1);
    a.v_offset = filled;
    a.v_row = channels;
    a.depth = filled + added.size(1);
    a.ldm = bf16_packed_columns(conv.out.size(1));
    a.ldu = bf16 ? a.ldm : conv.out.size(1);
    biases[k] = conv.bias.contiguous();
    kinds[k] = conv.epilogue.kind;
    at::Tensor out = conv.out;
    fill_output_args(a, g, out, conv.pack, biases[k], conv.epilogue, zeros.data());
    filled += added.size(1);
  }
  const int64_t rows = g.batch * g.tiles_h;
  const int64_t element_bytes = bf16 ? sizeof(uint16_t) : sizeof(float);
  const int64_t row_bytes = positions * g.tiles_w * channels * element_bytes;
  const int64_t band_rows = std::clamp<int64_t>(kWavefrontRingBytes / (kRingBands * row_bytes), 1, rows);
  bands = (rows + band_rows - 1) / band_rows;
  band_tiles = band_rows * g.tiles_w;
  chunk = std::min(chunk_tiles(channels * element_bytes, max_columns, positions), band_tiles);
  band_v = positions * band_tiles * channels;
  ring_bytes = std::min(bands, kRingBands) * band_v * element_bytes;
}

void DenseBlockPlan::run(int64_t conv, int64_t band, int64_t index, std::vector<float>& m,
                         std::vector<float>& sink) const {
  const int64_t first = band * band_tiles + index * chunk;
  const int64_t n = std::min(chunk, std::min(tiles, (band + 1) * band_tiles) - first);
  // within a band the tiles' V are contiguous chunk by chunk, each chunk position-major
  const int64_t offset = (band % kRingBands) * band_v + index * chunk * positions * channels;
  with_pack_kernel(bf16, tile, [&](auto products, auto output_tile) {
    using P = decltype(products);
    auto* v = reinterpret_cast<typename P::Element*>(ring) + offset;
    run_tiles<P, decltype(output_tile)::value>(args[conv], kinds[conv], first, n, v, m, sink);
  });
}

inline void pause_briefly() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

// Hands out the chunks of a chain of dense blocks as their inputs become ready (the rules
// above; block i + 1 starts when block i is done). A thread waits only when no chunk at all is
// ready, so a thread the OS deschedules holds up at most the chunk it is running.
class WavefrontScheduler {
 public:
  explicit WavefrontScheduler(const std::vector<std::unique_ptr<DenseBlockPlan>>& plans) : plans_(plans) {
    start_block(0);
  }

  void work() {
    thread_local std::vector<float> m, sink;
    std::unique_lock<std::mutex> lock(mutex_);
    while (block_ < plans_.size()) {
      int64_t conv = -1;
      for (int64_t k = 4; k >= 0 && conv < 0; --k) {  // the latest conv first: frees ring slots soonest
        if (ready(k)) conv = k;
      }
      if (conv < 0) {
        // Spin a little before sleeping: the band being waited for is usually a chunk (tens of
        // microseconds) away, and a futex wake-up costs about as much (measured on the bundled
        // model at 64x64: sleeping at once made the bf16 forward's median 1.9x its best).
        const int64_t seen = progress_.load(std::memory_order_relaxed);
        lock.unlock();
        for (int spin = 0; spin < kSpinsBeforeSleep && progress_.load(std::memory_order_acquire) == seen; ++spin) {
          pause_briefly();
        }
        lock.lock();
        if (progress_.load(std::memory_order_relaxed) != seen) continue;
        ++waiting_;
        ready_.wait(lock);
        --waiting_;
        continue;
      }
      const size_t block = block_;
      const int64_t band = next_band_[conv], index = next_chunk_[conv];
      if (++next_chunk_[conv] == plans_[block]->chunks_in(band)) {
        next_chunk_[conv] = 0;
        ++next_band_[conv];
      }
      lock.unlock();
      plans_[block]->run(conv, band, index, m, sink);
      lock.lock();
      if (finish(conv, band)) {  // only a finished band readies chunks
        progress_.fetch_add(1, std::memory_order_release);
        if (waiting_ > 0) ready_.notify_all();
      }
    }
    progress_.fetch_add(1, std::memory_order_release);
    ready_.notify_all();  // the others, waiting for chunks that will never come
  }

 private:
  void start_block(size_t block) {
    block_ = block;
    if (block_ >= plans_.size()) return;
    const int64_t bands = plans_[block_]->bands;
    for (int64_t k = 0; k < 5; ++k) {
      next_band_[k] = next_chunk_[k] = done_bands_[k] = 0;
      done_chunks_[k].assign(bands, 0);
    }
    if (plans_[block_]->tiles == 0) start_block(block_ + 1);
  }

  bool ready(int64_t k) const {
    const DenseBlockPlan& plan = *plans_[block_];
    const int64_t band = next_band_[k];
    if (band >= plan.bands) return false;
    if (k > 0 && done_bands_[k - 1] <= std::min(band + 1, plan.bands - 1)) return false;
    return k > 0 || done_bands_[4] > band - kRingBands;  // conv 1: its ring slot is free
  }

  bool finish(int64_t k, int64_t band) {  // whether bands 0.. of conv k grew
    const DenseBlockPlan& plan = *plans_[block_];
    ++done_chunks_[k][band];
    const int64_t before = done_bands_[k];
    while (done_bands_[k] < plan.bands && done_chunks_[k][done_bands_[k]] == plan.chunks_in(done_bands_[k])) {
      ++done_bands_[k];
    }
    if (done_bands_[4] == plan.bands) start_block(block_ + 1);
    return done_bands_[k] != before;
  }

  const std::vector<std::unique_ptr<DenseBlockPlan>>& plans_;
  std::mutex mutex_;
  std::condition_variable ready_;
  size_t block_ = 0;
  int64_t waiting_ = 0;  // threads in ready_.wait
  std::atomic<int64_t> progress_{0};  // bumped whenever chunks may have become ready
  static constexpr int kSpinsBeforeSleep = 20000;  // about 100 us of pause instructions
  std::array<int64_t, 5> next_band_{}, next_chunk_{}, done_bands_{};  // done_bands_: bands 0.. all done
  std::array<std::vector<int64_t>, 5> done_chunks_;
};

}  // namespace

void dense_blocks_wavefront(const std::vector<std::array<DenseConv, 5>>& blocks) {
  std::vector<std::unique_ptr<DenseBlockPlan>> plans;
  int64_t ring_bytes = 0;
  for (const auto& convs : blocks) {
    plans.push_back(std::make_unique<DenseBlockPlan>(convs));
    ring_bytes = std::max(ring_bytes, plans.back()->ring_bytes);
  }
  // Kept between calls: a fresh ring per call came from mmap whenever glibc's threshold said
  // so, and faulting its pages in took up to half of a bf16 forward (nf64 at 64x64: 80 -> 150 ms).
  thread_local std::vector<float> ring;  // float: aligned for either element type
  const int64_t ring_floats = (ring_bytes + int64_t(sizeof(float)) - 1) / int64_t(sizeof(float));
  if (static_cast<int64_t>(ring.size()) < ring_floats) ring.resize(ring_floats);
  for (auto& plan : plans) plan->ring = reinterpret_cast<unsigned char*>(ring.data());
  WavefrontScheduler scheduler(plans);
  at::parallel_for(0, at::get_num_threads(), 1, [&](int64_t, int64_t) { scheduler.work(); });
}

namespace {

struct Region {  // rows [y0, y1) x columns [x0, x1)
  int64_t y0, y1, x0, x1;
  int64_t height() const { return y1 - y0; }
  int64_t width() const { return x1 - x0; }
};

struct ChainStage {
  int64_t in_channels, out_channels, height, width;  // height x width: the conv's output
  bool bf16;
  int64_t output_tile;  // the Winograd tile of its pack: 2 (F(2x2, 3x3)) or 4 (F(4x4, 3x3))
};

// V scratch of the calling thread for conv_chain's serial convs.
template <typename P>
typename P::Element* chain_scratch(int64_t size) {
  thread_local std::vector<typename P::Element> v;
  if (static_cast<int64_t>(v.size()) < size) v.resize(size);
  return v.data();
}

// One conv of a chain tile on the calling thread: out (a region of the stage's output grid)
// from `in`.
template <typename P, int kM>
void chain_conv(const ChainConv& conv, const ChainStage& stage, const Source& in, const Region& region,
                const Pixels& out, const float* zeros, std::vector<float>& m, std::vector<float>& sink) {
  constexpr int64_t positions = kPositionsOf<kM>;
  ChunkArgs a;
  a.in = in;
  a.out = a.res1 = a.res2 = out;
  a.g = geometry(1, region.height(), region.width(), kM);
  a.in_channels = stage.in_channels;
  a.v_columns = a.v_row = a.depth = P::row(stage.in_channels);
  a.v_offset = 0;
  a.out_channels = stage.out_channels;
  a.ldm = bf16_packed_columns(stage.out_channels);
  a.ldu = stage.bf16 ? a.ldm : stage.out_channels;
  a.u = conv.pack.data_ptr();
  a.bias = conv.bias.data_ptr<float>();
  a.scale = 1.f;
  a.slope = 0.2f;
  a.zeros = zeros;
  const ConvEpilogue kind = conv.leaky_relu ? ConvEpilogue::kBiasLeakyRelu : ConvEpilogue::kBias;
  const int64_t chunk =
      std::min(chunk_tiles(a.v_row * int64_t(sizeof(typename P::Element)), a.ldm, positions), a.g.tiles());
  typename P::Element* v = chain_scratch<P>(positions * chunk * a.v_row);
  for (int64_t first = 0; first < a.g.tiles(); first += chunk) {
    run_tiles<P, kM>(a, kind, first, std::min(chunk, a.g.tiles() - first), v, m, sink);
  }
}

}  // namespace

at::Tensor conv_chain(const at::Tensor& x, const std::vector<ChainConv>& convs, int64_t tile) {
  TORCH_CHECK(x.dim() == 4 && x.scalar_type() == at::kFloat && x.device().is_cpu() && channels_innermost(x),
              "conv_chain: x must be a 4-D float32 CPU tensor with channel stride 1, got ", x.sizes());
  TORCH_CHECK(!convs.empty(), "conv_chain: no convs");
  TORCH_CHECK(tile >= 2, "conv_chain: tile must be >= 2, got ", tile);
  std::vector<ChainStage> stages;
  int64_t channels = x.size(1), height = x.size(2), width = x.size(3), widest = channels;
  for (const ChainConv& conv : convs) {
    TORCH_CHECK(conv.bias.dim() == 1 && conv.bias.scalar_type() == at::kFloat && conv.bias.is_contiguous(),
                "conv_chain: each bias must be contiguous float32 (C_out)");
    const int64_t out_channels = conv.bias.size(0);
    const bool bf16 = conv.pack.scalar_type() == at::kBFloat16;
    if (bf16) {
      check_bf16_pack(conv.pack, Bf16Products::row(channels), out_channels);
    } else {
      check_float_pack(conv.pack, channels, out_channels);
    }
    const int64_t output_tile = pack_tile(conv.pack);
    if (conv.upsample) {
      height *= 2;
      width *= 2;
    }
    stages.push_back({channels, out_channels, height, width, bf16, output_tile});
    channels = out_channels;
    widest = std::max(widest, bf16_packed_columns(out_channels));
  }
  const int64_t batch = x.size(0), count = static_cast<int64_t>(convs.size());
  at::Tensor out = at::empty({batch, channels, height, width}, x.options().memory_format(at::MemoryFormat::ChannelsLast));
  const std::vector<float> zeros(widest + 16, 0.f);
  const int64_t tiles_y = (height + tile - 1) / tile, tiles_x = (width + tile - 1) / tile;
  const Pixels global_out = pixels_of(out);
  claim_items(batch * tiles_y * tiles_x, [&](int64_t item) {
    const int64_t b = item / (tiles_y * tiles_x), ty = item / tiles_x % tiles_y, tx = item % tiles_x;
    // each conv's output region: the last conv's tile, then back through the convs the border
    // (one pixel, clipped to the image) each reads, halved through an upsampling
    std::vector<Region> regions(count);
    regions[count - 1] = {ty * tile, std::min(height, (ty + 1) * tile), tx * tile, std::min(width, (tx + 1) * tile)};
    for (int64_t i = count - 1; i > 0; --i) {
      const Region& r = regions[i];
      Region in{std::max<int64_t>(0, r.y0 - 1), std::min(stages[i].height, r.y1 + 1), std::max<int64_t>(0, r.x0 - 1),
                std::min(stages[i].width, r.x1 + 1)};
      if (convs[i].upsample) in = {in.y0 >> 1, ((in.y1 - 1) >> 1) + 1, in.x0 >> 1, ((in.x1 - 1) >> 1) + 1};
      regions[i - 1] = in;
    }
    thread_local std::vector<float> buffers[2], m, sink;
    Source in = source_of(x, convs[0].upsample ? 1 : 0);
    in.data += b * x.stride(0);
    for (int64_t i = 0; i < count; ++i) {
      const Region& r = regions[i];
      const ChainStage& stage = stages[i];
      in.shift = convs[i].upsample ? 1 : 0;
      in.oy = r.y0;
      in.ox = r.x0;
      Pixels target;
      if (i + 1 == count) {
        target = {global_out.at(b, r.y0, r.x0), 0, global_out.sh, global_out.sw};
      } else {
        std::vector<float>& buffer = buffers[i % 2];
        const int64_t size = r.height() * r.width() * stage.out_channels;
        if (static_cast<int64_t>(buffer.size()) < size) buffer.resize(size);
        target = {buffer.data(), 0, r.width() * stage.out_channels, stage.out_channels};
      }
      with_pack_kernel(stage.bf16, stage.output_tile, [&](auto products, auto output_tile) {
        chain_conv<decltype(products), decltype(output_tile)::value>(convs[i], stage, in, r, target, zeros.data(), m,
                                                                     sink);
      });
      // the next conv reads this region
      in = {target.data, 0, target.sh, target.sw, 0, r.height(), r.width(), 0, 0, r.y0, r.x0};
    }
  });
  return out;
}

void winograd_packed_conv3x3_into(const at::Tensor& input, bool upsample, const at::Tensor& packed_weight,
                                  const at::Tensor& bias, const EpilogueArgs& epilogue, at::Tensor& out) {
  TORCH_CHECK(input.dim() == 4 && input.scalar_type() == at::kFloat && input.device().is_cpu() &&
                  channels_innermost(input),
              "winograd_packed: input must be a 4-D float32 CPU tensor with channel stride 1, got ", input.sizes(),
              " ", input.scalar_type());
  const int64_t in_channels = input.size(1), out_channels = out.size(1);
  const int64_t shift = upsample ? 1 : 0;
  TORCH_CHECK(out.dim() == 4 && out.size(0) == input.size(0) && out.size(2) == input.size(2) << shift &&
                  out.size(3) == input.size(3) << shift,
              "winograd_packed: out has shape ", out.sizes(), " for input ", input.sizes(),
              upsample ? " upsampled x2" : "");
  check_pixels(out, out, "out");
  const bool bf16 = packed_weight.scalar_type() == at::kBFloat16;
  ChunkArgs a;
  a.ldm = bf16_packed_columns(out_channels);
  a.v_offset = 0;
  if (bf16) {
    a.v_row = a.v_columns = a.depth = Bf16Products::row(in_channels);
    a.ldu = a.ldm;
    check_bf16_pack(packed_weight, a.depth, out_channels);
  } else {
    a.v_row = a.v_columns = a.depth = Fp32Products::row(in_channels);
    a.ldu = out_channels;
    check_float_pack(packed_weight, in_channels, out_channels);
  }
  const int64_t tile = pack_tile(packed_weight);
  const Geometry g = geometry(out.size(0), out.size(2), out.size(3), tile);
  const std::vector<float> zeros(std::max(a.v_row, a.ldm) + 16, 0.f);  // the zero padding
  a.in = source_of(input, static_cast<int>(shift));
  a.in_channels = in_channels;
  const at::Tensor bias_c = bias.contiguous();  // alive while the kernels read it
  fill_output_args(a, g, out, packed_weight, bias_c, epilogue, zeros.data());
  if (g.tiles() == 0 || out_channels == 0) return;
  with_pack_kernel(bf16, tile, [&](auto products, auto output_tile) {
    run_chunks<decltype(products), decltype(output_tile)::value>(a, epilogue.kind);
  });
}

}  // namespace spsr_fast
