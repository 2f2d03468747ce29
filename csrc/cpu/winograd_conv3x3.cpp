// Winograd F(2x2, 3x3) convolution for the CPU dense blocks; see winograd_conv3x3.h.
//
// Transforms (cross-correlation, as torch's conv2d):
//   B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1]   V = B^T d B   (d: 4x4 input tile)
//   G   = [1 0 0; .5 .5 .5; .5 -.5 .5; 0 0 1]        U = G g G^T   (g: 3x3 weight)
//   A^T = [1 1 1 0; 0 1 -1 -1]                       Y = A^T M A,  M = V (.) U per position
// The input and output transforms run over channels in the innermost loop (channel stride 1),
// so they vectorise; the 16 per-position products are 16 small GEMMs (small_gemm.h) per chunk
// of tiles. Each thread takes whole chunks and keeps its V and M in its own L2.
#include "winograd_conv3x3.h"

#include "../common.h"
#include "small_gemm.h"

#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>

namespace spsr_fast {
namespace {

constexpr int64_t kPositions = 16;  // a 4x4 transformed tile
constexpr int64_t kChunkBytes = 768 << 10;

struct Geometry {
  int64_t batch, height, width, tiles_h, tiles_w;
  int64_t tiles() const { return batch * tiles_h * tiles_w; }
};

struct PixelView {  // a (B, C, H, W) float view with channel stride 1
  float* data;
  int64_t sb, sh, sw;
  float* at(int64_t b, int64_t y, int64_t x) const { return data + b * sb + y * sh + x * sw; }
};

// Channel stride 1 (a size-1 channel dim has no meaningful stride).
bool channels_innermost(const at::Tensor& t) { return t.stride(1) == 1 || t.size(1) == 1; }

PixelView pixel_view(const at::Tensor& t) {
  return {t.data_ptr<float>(), t.stride(0), t.stride(2), t.stride(3)};
}

// x86-64-v3 and v4 include FMA, so the epilogues' std::fma is one instruction there (the
// default clone calls libm's fmaf: same result, slower).
#define SPSR_VECTOR_CLONES SPSR_X86_CLONES("arch=x86-64-v4", "arch=x86-64-v3", "default")

// V[p][i][c] for the n tiles from `first`: the 4x4 input patch of each tile (zero outside the
// image), transformed.
SPSR_VECTOR_CLONES void input_transform(const PixelView& in, int64_t channels, const Geometry& g,
                                        int64_t first, int64_t n, int64_t position_stride,
                                        const float* zeros, float* __restrict v) {
  for (int64_t i = 0; i < n; ++i) {
    const int64_t t = first + i;
    const int64_t b = t / (g.tiles_h * g.tiles_w);
    const int64_t ty = t / g.tiles_w % g.tiles_h;
    const int64_t tx = t % g.tiles_w;
    const float* d[kPositions];
    for (int64_t r = 0; r < 4; ++r) {
      for (int64_t s = 0; s < 4; ++s) {
        const int64_t y = 2 * ty - 1 + r, x = 2 * tx - 1 + s;
        const bool inside = y >= 0 && y < g.height && x >= 0 && x < g.width;
        d[4 * r + s] = inside ? in.at(b, y, x) : zeros;
      }
    }
    float* out = v + i * channels;
#pragma GCC ivdep
    for (int64_t c = 0; c < channels; ++c) {
      float t_[kPositions];  // B^T d
      for (int64_t s = 0; s < 4; ++s) {
        const float d0 = d[s][c], d1 = d[4 + s][c], d2 = d[8 + s][c], d3 = d[12 + s][c];
        t_[s] = d0 - d2;
        t_[4 + s] = d1 + d2;
        t_[8 + s] = d2 - d1;
        t_[12 + s] = d1 - d3;
      }
      for (int64_t r = 0; r < 4; ++r) {  // (B^T d) B
        const float* row = t_ + 4 * r;
        out[(4 * r + 0) * position_stride + c] = row[0] - row[2];
        out[(4 * r + 1) * position_stride + c] = row[1] + row[2];
        out[(4 * r + 2) * position_stride + c] = row[2] - row[1];
        out[(4 * r + 3) * position_stride + c] = row[1] - row[3];
      }
    }
  }
}

template <ConvEpilogue kEpilogue>
SPSR_VECTOR_CLONES void output_transform(const float* __restrict m, int64_t channels, const Geometry& g,
                                         int64_t first, int64_t n, int64_t position_stride,
                                         const float* bias, float scale,
                                         float negative_slope, const PixelView& res1,
                                         const PixelView& res2, const PixelView& out, float* sink,
                                         const float* zeros) {
  for (int64_t i = 0; i < n; ++i) {
    const int64_t t = first + i;
    const int64_t b = t / (g.tiles_h * g.tiles_w);
    const int64_t ty = t / g.tiles_w % g.tiles_h;
    const int64_t tx = t % g.tiles_w;
    // Pixels of the tile past the image edge go to a scratch row (and read zeros).
    float* o[4];
    const float* r1[4];
    const float* r2[4];
    for (int64_t k = 0; k < 4; ++k) {
      const int64_t y = 2 * ty + k / 2, x = 2 * tx + k % 2;
      const bool inside = y < g.height && x < g.width;
      o[k] = inside ? out.at(b, y, x) : sink;
      r1[k] = kEpilogue >= ConvEpilogue::kResidual && inside ? res1.at(b, y, x) : zeros;
      r2[k] = kEpilogue == ConvEpilogue::kResidual2 && inside ? res2.at(b, y, x) : zeros;
    }
    const float* tile = m + i * channels;
#pragma GCC ivdep
    for (int64_t c = 0; c < channels; ++c) {
      float p[kPositions];
      for (int64_t k = 0; k < kPositions; ++k) p[k] = tile[k * position_stride + c];
      float a[8];  // A^T M: two rows of four
      for (int64_t s = 0; s < 4; ++s) {
        a[s] = p[s] + p[4 + s] + p[8 + s];
        a[4 + s] = p[4 + s] - p[8 + s] - p[12 + s];
      }
      float y[4] = {a[0] + a[1] + a[2], a[1] - a[2] - a[3], a[4] + a[5] + a[6], a[5] - a[6] - a[7]};
      for (int64_t k = 0; k < 4; ++k) {
        float v = y[k] + bias[c];
        if constexpr (kEpilogue == ConvEpilogue::kBiasLeakyRelu) {
          v = v > 0.f ? v : v * negative_slope;
        } else if constexpr (kEpilogue == ConvEpilogue::kResidual) {
          // fused explicitly: whether `r1 + scale * v` contracts to an FMA depends on the
          // compiler's flags (-std=c++17 vs gnu++20), and the CPU engine's wavefront
          // (csrc/cpu/winograd_packed.cpp) must give these bits exactly
          v = std::fma(scale, v, r1[k][c]);
        } else if constexpr (kEpilogue == ConvEpilogue::kResidual2) {
          v = std::fma(scale, std::fma(scale, v, r1[k][c]), r2[k][c]);
        }
        o[k][c] = v;
      }
    }
  }
}

template <ConvEpilogue kKind>
using EpilogueTag = std::integral_constant<ConvEpilogue, kKind>;

void grow(std::vector<float>& scratch, int64_t size) {
  if (static_cast<int64_t>(scratch.size()) < size) scratch.resize(size);
}

// Tiles per chunk: V and M of a chunk (16 x tiles x (C_in + C_out) floats) stay in the
// thread's L2 with room for U, the input rows and the output (measured best at ~0.75 MiB).
int64_t chunk_tiles(int64_t in_channels, int64_t out_channels) {
  const int64_t per_tile = kPositions * (in_channels + out_channels) * int64_t(sizeof(float));
  return std::clamp<int64_t>(kChunkBytes / per_tile, 32, 512);
}

void check_view(const at::Tensor& t, const at::Tensor& like, const char* name) {
  TORCH_CHECK(t.dim() == 4 && t.size(0) == like.size(0) && t.size(1) == like.size(1) &&
                  t.size(2) == like.size(2) && t.size(3) == like.size(3),
              "winograd_conv3x3: ", name, " has shape ", t.sizes(), ", expected ", like.sizes());
  TORCH_CHECK(t.scalar_type() == at::kFloat && t.device().is_cpu() && channels_innermost(t),
              "winograd_conv3x3: ", name, " must be a float32 CPU tensor with channel stride 1");
}

}  // namespace

at::Tensor winograd_weight_transform(const at::Tensor& weight) {
  TORCH_CHECK(weight.dim() == 4 && weight.size(2) == 3 && weight.size(3) == 3,
              "winograd_conv3x3: weight must be (C_out, C_in, 3, 3), got ", weight.sizes());
  const int64_t out_channels = weight.size(0), in_channels = weight.size(1);
  const at::Tensor w = weight.to(at::kFloat).contiguous();
  at::Tensor u = at::empty({kPositions, in_channels, out_channels}, w.options());
  const float* src = w.data_ptr<float>();
  float* dst = u.data_ptr<float>();
  const int64_t position_stride = in_channels * out_channels;
  at::parallel_for(0, out_channels * in_channels, 256, [&](int64_t begin, int64_t end) {
    for (int64_t pair = begin; pair < end; ++pair) {
      const int64_t co = pair / in_channels, ci = pair % in_channels;
      const float* g = src + pair * 9;
      float gg[12];  // G g: 4 rows of 3
      for (int64_t s = 0; s < 3; ++s) {
        gg[s] = g[s];
        gg[3 + s] = 0.5f * (g[s] + g[3 + s] + g[6 + s]);
        gg[6 + s] = 0.5f * (g[s] - g[3 + s] + g[6 + s]);
        gg[9 + s] = g[6 + s];
      }
      for (int64_t r = 0; r < 4; ++r) {  // (G g) G^T
        const float* row = gg + 3 * r;
        const float u4[4] = {row[0], 0.5f * (row[0] + row[1] + row[2]), 0.5f * (row[0] - row[1] + row[2]),
                             row[2]};
        for (int64_t s = 0; s < 4; ++s) dst[(4 * r + s) * position_stride + ci * out_channels + co] = u4[s];
      }
    }
  });
  return u;
}

void winograd_conv3x3_into(const at::Tensor& input, const at::Tensor& transformed_weight,
                           const at::Tensor& bias, const EpilogueArgs& epilogue, at::Tensor& out) {
  TORCH_CHECK(input.dim() == 4, "winograd_conv3x3: input must be 4-D, got ", input.sizes());
  const int64_t in_channels = input.size(1), out_channels = out.size(1);
  TORCH_CHECK(transformed_weight.sizes() == at::IntArrayRef({kPositions, in_channels, out_channels}) &&
                  transformed_weight.is_contiguous() && transformed_weight.scalar_type() == at::kFloat,
              "winograd_conv3x3: transformed weight must be contiguous float32 (16, ", in_channels, ", ",
              out_channels, "), got ", transformed_weight.sizes());
  TORCH_CHECK(bias.dim() == 1 && bias.size(0) == out_channels && bias.scalar_type() == at::kFloat,
              "winograd_conv3x3: bias must be float32 (", out_channels, "), got ", bias.sizes());
  TORCH_CHECK(input.scalar_type() == at::kFloat && input.device().is_cpu() && channels_innermost(input),
              "winograd_conv3x3: input must be a float32 CPU tensor with channel stride 1");
  TORCH_CHECK(out.dim() == 4 && out.size(0) == input.size(0) && out.size(2) == input.size(2) &&
                  out.size(3) == input.size(3),
              "winograd_conv3x3: out has shape ", out.sizes(), ", input ", input.sizes());
  check_view(out, out, "out");
  const bool residual = epilogue.kind == ConvEpilogue::kResidual || epilogue.kind == ConvEpilogue::kResidual2;
  if (residual) check_view(epilogue.res1, out, "res1");
  if (epilogue.kind == ConvEpilogue::kResidual2) check_view(epilogue.res2, out, "res2");

  const Geometry g{input.size(0), input.size(2), input.size(3), (input.size(2) + 1) / 2,
                   (input.size(3) + 1) / 2};
  if (g.tiles() == 0 || out_channels == 0) return;
  const PixelView in = pixel_view(input), dst = pixel_view(out);
  const PixelView r1 = residual ? pixel_view(epilogue.res1) : dst;
  const PixelView r2 = epilogue.kind == ConvEpilogue::kResidual2 ? pixel_view(epilogue.res2) : dst;
  const at::Tensor bias_c = bias.contiguous();
  const float* bias_data = bias_c.data_ptr<float>();
  const float scale = static_cast<float>(epilogue.scale);
  const float slope = static_cast<float>(epilogue.negative_slope);
  const float* u = transformed_weight.data_ptr<float>();
  const std::vector<float> zeros(std::max(in_channels, out_channels), 0.f);  // the zero padding
  const int64_t chunk = std::min(chunk_tiles(in_channels, out_channels), g.tiles());
  const int64_t chunks = (g.tiles() + chunk - 1) / chunk;
  at::parallel_for(0, chunks, 1, [&](int64_t begin, int64_t end) {
    // Per-thread scratch, kept between calls (no page faults, no clearing): V and M of one
    // chunk, a sink for the pixels of edge tiles past the image.
    thread_local std::vector<float> v, m, sink;
    grow(v, kPositions * chunk * in_channels);
    grow(m, kPositions * chunk * out_channels);
    grow(sink, out_channels);
    const float* zeros_data = zeros.data();
    for (int64_t index = begin; index < end; ++index) {
      const int64_t first = index * chunk;
      const int64_t n = std::min(chunk, g.tiles() - first);
      input_transform(in, in_channels, g, first, n, n * in_channels, zeros_data, v.data());
      for (int64_t p = 0; p < kPositions; ++p) {
        small_gemm_f32(n, out_channels, in_channels, v.data() + p * n * in_channels, in_channels,
                       u + p * in_channels * out_channels, out_channels, m.data() + p * n * out_channels,
                       out_channels);
      }
      const int64_t stride = n * out_channels;
      auto finish = [&](auto kind) {
        output_transform<decltype(kind)::value>(m.data(), out_channels, g, first, n, stride, bias_data, scale,
                                                slope, r1, r2, dst, sink.data(), zeros_data);
      };
      switch (epilogue.kind) {
        case ConvEpilogue::kBias: finish(EpilogueTag<ConvEpilogue::kBias>{}); break;
        case ConvEpilogue::kBiasLeakyRelu: finish(EpilogueTag<ConvEpilogue::kBiasLeakyRelu>{}); break;
        case ConvEpilogue::kResidual: finish(EpilogueTag<ConvEpilogue::kResidual>{}); break;
        case ConvEpilogue::kResidual2: finish(EpilogueTag<ConvEpilogue::kResidual2>{}); break;
      }
    }
  });
}

namespace {

// The standalone op: conv2d(x, weight, bias, padding=1) for float32 CPU tensors, returned
// channels_last; used to test the kernel against torch's convolution.
at::Tensor conv3x3_winograd(const at::Tensor& x, const at::Tensor& weight,
                            const std::optional<at::Tensor>& bias) {
  TORCH_CHECK(x.dim() == 4, "conv3x3_winograd: x must be 4-D (B, C, H, W), got ", x.dim(), "-D");
  TORCH_CHECK(x.scalar_type() == at::kFloat, "conv3x3_winograd: x must be float32, got ",
              x.scalar_type());
  TORCH_CHECK(weight.dim() == 4 && weight.size(1) == x.size(1) && weight.size(2) == 3 &&
                  weight.size(3) == 3,
              "conv3x3_winograd: weight must be (C_out, ", x.size(1), ", 3, 3), got ", weight.sizes());
  TORCH_CHECK(weight.scalar_type() == at::kFloat, "conv3x3_winograd: weight must be float32, got ",
              weight.scalar_type());
  const int64_t out_channels = weight.size(0);
  at::Tensor b = bias.has_value() ? *bias : at::zeros({out_channels}, x.options());
  TORCH_CHECK(b.dim() == 1 && b.size(0) == out_channels && b.scalar_type() == at::kFloat,
              "conv3x3_winograd: bias must be float32 (", out_channels, "), got ", b.sizes());
  const at::Tensor input = channels_innermost(x) ? x : x.contiguous(at::MemoryFormat::ChannelsLast);
  at::Tensor out = at::empty({x.size(0), out_channels, x.size(2), x.size(3)},
                             x.options().memory_format(at::MemoryFormat::ChannelsLast));
  winograd_conv3x3_into(input, winograd_weight_transform(weight), b, EpilogueArgs{}, out);
  return out;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(spsr_fast, m) {
  m.def("conv3x3_winograd(Tensor x, Tensor weight, Tensor? bias) -> Tensor");
}

TORCH_LIBRARY_IMPL(spsr_fast, CPU, m) { m.impl("conv3x3_winograd", &conv3x3_winograd); }

}  // namespace spsr_fast
