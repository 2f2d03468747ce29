// 3x3 convolution (stride 1, padding 1) on the CPU by Winograd F(2x2, 3x3), float32, over
// channels_last tensors or channel slices of them, with the dense blocks' epilogues fused.
//
// Each 2x2 output tile needs 16 multiplies per (input, output) channel pair instead of 36:
// the input tile's 4x4 transform V = B^T d B, the weight's U = G g G^T, 16 GEMMs
// M[p] = V[p] U[p] over a chunk of tiles, and Y = A^T M A (Lavin & Gray, 2016). Chunks of
// tiles are sized so V and M stay in each core's L2; threads take whole chunks.
#pragma once

#include <ATen/ATen.h>

#include <optional>

namespace spsr_fast {

enum class ConvEpilogue {
  kBias,           // out = conv + bias
  kBiasLeakyRelu,  // out = lrelu(conv + bias, 0.2)
  kResidual,       // out = res1 + scale * (conv + bias)
  kResidual2,      // out = res2 + scale * (res1 + scale * (conv + bias))
};

struct EpilogueArgs {
  ConvEpilogue kind = ConvEpilogue::kBias;
  double scale = 1.0;
  double negative_slope = 0.2;
  at::Tensor res1;  // (B, C_out, H, W) views with channel stride 1, as `out`
  at::Tensor res2;
};

// The dense blocks' epilogues: bias + LeakyReLU(0.2) for the four growth convs, and the
// 0.2-scaled residual(s) of the fifth (one for an RDB, two for the last RDB of an RRDB).
inline EpilogueArgs leaky_relu_epilogue() {
  EpilogueArgs e;
  e.kind = ConvEpilogue::kBiasLeakyRelu;
  e.negative_slope = 0.2;
  return e;
}

inline EpilogueArgs residual_epilogue(double scale, const at::Tensor& res1, const at::Tensor& res2 = {}) {
  EpilogueArgs e;
  e.kind = res2.defined() ? ConvEpilogue::kResidual2 : ConvEpilogue::kResidual;
  e.scale = scale;
  e.res1 = res1;
  e.res2 = res2;
  return e;
}

// U = G g G^T of a (C_out, C_in, 3, 3) weight, laid out (16, C_in, C_out) for the GEMMs.
at::Tensor winograd_weight_transform(const at::Tensor& weight);

// out = epilogue(conv3x3(input, weight) + bias); `transformed_weight` from
// winograd_weight_transform. input/out/res: (B, C, H, W) with channel stride 1 (channels_last
// tensors or channel slices of one); out must not overlap input.
void winograd_conv3x3_into(const at::Tensor& input, const at::Tensor& transformed_weight,
                           const at::Tensor& bias, const EpilogueArgs& epilogue, at::Tensor& out);

}  // namespace spsr_fast
