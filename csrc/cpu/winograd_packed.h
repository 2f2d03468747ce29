// 3x3 convolutions (stride 1, padding 1) on the CPU by Winograd F(2x2, 3x3) for the inference
// engine (spsr_fast/inference/cpu_engine.py): weights transformed once per model, the 16
// per-position GEMMs in bf16 (float32 accumulation, on the CPU's bf16 dot-product
// instruction, AVX512_BF16) or in float32, the input optionally read through a nearest x2
// upsampling (the generators' upsampling steps: the upsampled tensor is never written).
//
// Activations stay float32 in memory in both variants: the input and output transforms and
// the epilogues run in float32; the bf16 variant rounds only the transformed tiles V and the
// transformed weights U (the factors of the products), never an activation.
#pragma once

#include <ATen/ATen.h>

#include <array>
#include <vector>

#include "winograd_conv3x3.h"  // ConvEpilogue, EpilogueArgs, winograd_weight_transform

namespace spsr_fast {

// U = G g G^T of a (C_out, C_in, 3, 3) weight, rounded to bf16 and packed for
// small_gemm_bf16: (P, ceil(C_in / 2), C_out rounded up to 16, 2), dtype bfloat16, for output
// tiles of `output_tile` pixels on a side: 2 (F(2x2, 3x3), P = 16) or 4 (F(4x4, 3x3), P = 36).
// The pack's P tells the kernels which transform to run.
at::Tensor winograd_bf16_pack_weight(const at::Tensor& weight, int64_t output_tile = 2);

// U = G g G^T of F(4x4, 3x3), computed in float64: (36, C_in, C_out) float32, the pack of
// conv_chain's float32 F(4x4) convs.
at::Tensor winograd4_weight_transform(const at::Tensor& weight);

// out = epilogue(conv3x3(up(input), weight) + bias), up = nearest x2 when `upsample`, else
// the identity. `packed_weight`: winograd_bf16_pack_weight's (bf16 GEMMs) or
// winograd_weight_transform's (float32 GEMMs, csrc/cpu/winograd_conv3x3.h). input/out/res:
// float32 (B, C, H, W) with channel stride 1 (channels_last tensors or channel slices of
// one); out is (B, C_out, 2H, 2W) when upsampling and must not overlap input; bias float32.
void winograd_packed_conv3x3_into(const at::Tensor& input, bool upsample, const at::Tensor& packed_weight,
                                  const at::Tensor& bias, const EpilogueArgs& epilogue, at::Tensor& out);

// One conv of a dense block for dense_block_wavefront: its input is every channel of the
// earlier convs' `new_channels` plus its own; out = epilogue(conv3x3(input) + bias).
struct DenseConv {
  at::Tensor new_channels;  // (B, c, H, W) float32, channel stride 1, c even with bf16 packs
  at::Tensor pack;          // winograd_bf16_pack_weight or winograd_weight_transform (float32) of the
                            // (C_out, all input channels, 3, 3) weight (a block's five: one kind, one tile)
  at::Tensor bias;          // float32 (C_out)
  EpilogueArgs epilogue;
  at::Tensor out;           // (B, C_out, H, W) float32, channel stride 1
};

// Dense blocks one after the other (block i+1's convs read what block i's wrote), each of
// five convs (bf16 or float32 GEMMs) and their Winograd V shared: conv k transforms only the channels
// conv k-1 wrote and multiplies every channel so far (conv5 of an nf 64, gc 32 block
// transforms 32 of its 192 input channels). A block runs as a wavefront over bands of tile
// rows (conv k two bands behind conv k-1), so only the V of a few bands is kept: the working
// set stays in the L3 at any image size. All of it runs in one parallel region whose threads
// take chunks of tiles as soon as their inputs are ready (no barrier per conv).
void dense_blocks_wavefront(const std::vector<std::array<DenseConv, 5>>& blocks);

// One conv of conv_chain: 3x3 with a packed weight (bf16: winograd_bf16_pack_weight; float32:
// winograd_weight_transform), its input upsampled x2 (nearest) first when `upsample`, then bias
// and, when `leaky_relu`, LeakyReLU(0.2).
struct ChainConv {
  at::Tensor pack;
  at::Tensor bias;  // float32 (C_out)
  bool upsample = false;
  bool leaky_relu = false;
};

// The convs applied one after the other to x ((B, C, H, W) float32, channel stride 1),
// computed tile by tile of the last conv's output (`tile` x `tile` pixels), each conv on its
// tile's region plus the border the next conv reads (recomputed where tiles meet: about 10 %
// more work for 64-pixel tiles). The intermediate images (for a generator's upsampling tail,
// 32 or 64 channels of 2048 x 2048 floats each) never leave the cache; tiles run in parallel
// without any barrier. Returns the last conv's output, channels_last.
at::Tensor conv_chain(const at::Tensor& x, const std::vector<ChainConv>& convs, int64_t tile);

// Whether the AVX-512 kernels run (the CPU has AVX512_BF16, and SPSR_FAST_WINOGRAD_KERNEL is
// not "portable", which runs the portable C++ everywhere, for tests).
bool winograd_packed_native();

}  // namespace spsr_fast
