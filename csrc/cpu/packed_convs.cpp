// Convolutions with weights transformed once per model, for the CPU inference engine
// (spsr_fast/inference/cpu_engine.py, docs/ARCHITECTURE.md 5).
//
// spsr_fast::dense_blocks transforms every conv weight for Winograd on every call (and
// copies channels_last weights to contiguous first): about 137 ms per forward of an nf 64,
// nb 23 RRDBNet, paid again per tile. Here the engine packs each weight once
// (winograd_pack), keeps the packs per model, and passes them in:
//   winograd_pack(weight, bf16, output_tile=2)
//                                 -> float32 U, (16, C_in, C_out) of csrc/cpu/winograd_conv3x3
//                                    for F(2x2, 3x3) or (36, C_in, C_out) for F(4x4, 3x3)
//                                    (output_tile 4: conv_chain only), or the bf16 pack of
//                                    csrc/cpu/winograd_packed for F(2x2, 3x3) (output_tile 2: 16
//                                    positions) or F(4x4, 3x3) (output_tile 4: 36 positions)
//   conv3x3_packed(x, pack, bias, epilogue, scale, res1, res2, upsample) -> one 3x3 conv
//   rrdb_packed(x, packs, biases, residual_scale, outer_residual) -> an RRDB (or a chain of RDBs)
//   rrdb_trunk_packed(x, packs, biases, residual_scale) -> RRDBs one after the other (a trunk)
//   conv_chain(x, packs, biases, upsample, leaky_relu, tile) -> convs one after the other, tile
//                                    by tile of the output (the generators' upsampling tails)
// A bf16 pack runs bf16 GEMMs (csrc/cpu/winograd_packed); a float32 pack runs the float32
// kernel of csrc/cpu/winograd_conv3x3 in rrdb_packed, and in conv3x3_packed the float32
// variant of winograd_packed, which can read the input through the upsampling. rrdb_packed
// computes the dense blocks exactly as spsr_fast::dense_blocks does without keep_buffers
// (csrc/dense_block.cpp): same buffer scheme, same order, same kernel, so with float32 packs
// its result is bit for bit that op's. Inference only: no autograd.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstring>
#include <optional>
#include <string>

#include "winograd_packed.h"
#include "winograd_conv3x3.h"

namespace spsr_fast {
namespace {

constexpr int64_t kConvsPerBlock = 5;
constexpr int64_t kPositions = 16;     // F(2x2, 3x3)
constexpr int64_t kPositionsF4 = 36;   // F(4x4, 3x3)

bool is_bf16_pack(const at::Tensor& pack) { return pack.scalar_type() == at::kBFloat16; }

void check_pack(const at::Tensor& pack, int64_t in_channels, int64_t out_channels, const char* what) {
  TORCH_CHECK(pack.device().is_cpu() && pack.dim() >= 3 && (pack.size(0) == kPositions || pack.size(0) == kPositionsF4),
              what, ": not a Winograd pack (from spsr_fast::winograd_pack): shape ", pack.sizes());
  if (is_bf16_pack(pack)) {
    TORCH_CHECK(pack.dim() == 4 && pack.size(1) == (in_channels + 1) / 2 &&
                    pack.size(2) == (out_channels + 15) / 16 * 16 && pack.size(3) == 2,
                what, ": bf16 pack of shape ", pack.sizes(), " does not fit ", in_channels, " -> ", out_channels,
                " channels");
  } else {
    TORCH_CHECK(pack.scalar_type() == at::kFloat && pack.dim() == 3 && pack.size(1) == in_channels &&
                    pack.size(2) == out_channels,
                what, ": float32 pack of shape ", pack.sizes(), " does not fit ", in_channels, " -> ",
                out_channels, " channels");
  }
}

// In the dense blocks: float32 packs run the kernel spsr_fast::dense_blocks runs (bit for bit).
void block_conv_into(const at::Tensor& input, const at::Tensor& pack, const at::Tensor& bias,
                     const EpilogueArgs& epilogue, at::Tensor out) {
  if (is_bf16_pack(pack)) {
    winograd_packed_conv3x3_into(input, false, pack, bias, epilogue, out);
  } else {
    winograd_conv3x3_into(input, pack, bias, epilogue, out);
  }
}

// dst = src for float32 (B, C, H, W) tensors with channel stride 1 (dst: the first channels of
// a wider buffer), pixel by pixel: ATen's copy_ into such a channel slice ran at about a tenth
// of memory speed (0.25 ms for 32 x 64 x 64 floats, 6 per forward of the bundled model).
void copy_pixels(const at::Tensor& src, at::Tensor dst) {
  TORCH_CHECK(src.sizes() == dst.sizes() && src.stride(1) == 1 && dst.stride(1) == 1 &&
                  src.scalar_type() == at::kFloat && dst.scalar_type() == at::kFloat,
              "copy_pixels: expected float32 tensors of one shape with channel stride 1");
  const int64_t height = src.size(2), width = src.size(3), channels = src.size(1);
  const float* from = src.data_ptr<float>();
  float* to = dst.data_ptr<float>();
  at::parallel_for(0, src.size(0) * height, 8, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const int64_t b = row / height, y = row % height;
      for (int64_t x = 0; x < width; ++x) {
        std::memcpy(to + b * dst.stride(0) + y * dst.stride(2) + x * dst.stride(3),
                    from + b * src.stride(0) + y * src.stride(2) + x * src.stride(3), channels * sizeof(float));
      }
    }
  });
}

void check_float_cpu(const at::Tensor& t, const char* what, const char* name) {
  TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == at::kFloat, what, ": ", name,
              " must be a float32 CPU tensor, got ", t.scalar_type(), " on ", t.device());
}

at::Tensor winograd_pack(const at::Tensor& weight, bool bf16, int64_t output_tile) {
  TORCH_CHECK(weight.dim() == 4 && weight.size(2) == 3 && weight.size(3) == 3,
              "winograd_pack: weight must be (C_out, C_in, 3, 3), got ", weight.sizes());
  TORCH_CHECK(weight.device().is_cpu() && at::isFloatingType(weight.scalar_type()),
              "winograd_pack: weight must be a floating-point CPU tensor");
  // contiguous here, once: the float32 transform would copy a channels_last weight itself
  const at::Tensor w = weight.to(at::kFloat).contiguous();
  TORCH_CHECK(output_tile == 2 || output_tile == 4, "winograd_pack: output_tile must be 2 or 4, got ", output_tile);
  if (bf16) return winograd_bf16_pack_weight(w, output_tile);
  return output_tile == 2 ? winograd_weight_transform(w) : winograd4_weight_transform(w);
}

// epilogue: "bias", "lrelu" (bias + LeakyReLU 0.2), "residual" (res1 + scale * (conv + bias)),
// "residual2" (res2 + scale * (res1 + scale * (conv + bias))).
at::Tensor conv3x3_packed(const at::Tensor& x, const at::Tensor& pack, const at::Tensor& bias,
                          c10::string_view epilogue, double scale, const std::optional<at::Tensor>& res1,
                          const std::optional<at::Tensor>& res2, bool upsample) {
  TORCH_CHECK(x.dim() == 4, "conv3x3_packed: x must be 4-D (B, C, H, W), got ", x.dim(), "-D");
  check_float_cpu(x, "conv3x3_packed", "x");
  check_float_cpu(bias, "conv3x3_packed", "bias");
  TORCH_CHECK(bias.dim() == 1, "conv3x3_packed: bias must be 1-D, got ", bias.sizes());
  const int64_t out_channels = bias.size(0);
  check_pack(pack, x.size(1), out_channels, "conv3x3_packed");
  EpilogueArgs e;
  const std::string kind(epilogue);
  if (kind == "bias") {
    e.kind = ConvEpilogue::kBias;
  } else if (kind == "lrelu") {
    e = leaky_relu_epilogue();
  } else if (kind == "residual" || kind == "residual2") {
    TORCH_CHECK(res1.has_value() && (kind == "residual" || res2.has_value()), "conv3x3_packed: epilogue '", kind,
                "' needs res1", kind == "residual2" ? " and res2" : "");
    e = residual_epilogue(scale, *res1, kind == "residual2" ? *res2 : at::Tensor());
  } else {
    TORCH_CHECK(false, "conv3x3_packed: epilogue must be bias, lrelu, residual or residual2, got '", kind, "'");
  }
  const int64_t factor = upsample ? 2 : 1;
  const auto channels_last = at::MemoryFormat::ChannelsLast;
  const at::Tensor input = x.stride(1) == 1 ? x : x.contiguous(channels_last);
  at::Tensor out = at::empty({x.size(0), out_channels, x.size(2) * factor, x.size(3) * factor},
                             x.options().memory_format(channels_last));
  for (at::Tensor* r : {&e.res1, &e.res2}) {
    if (r->defined() && r->stride(1) != 1) *r = r->contiguous(channels_last);
  }
  winograd_packed_conv3x3_into(input, upsample, pack, bias.contiguous(), e, out);
  return out;
}

// Dense blocks by dense_blocks_wavefront: conv k transforms only x_k, so conv5 needs no
// x_in in the buffer; the buffer holds x1..x4 and a block's output goes straight to the next
// block's input. Every `group` blocks (an RRDB) end with the outer residual (the group's
// input) where `outer_residual`. All blocks run in one wavefront: no join between RRDBs.
at::Tensor dense_blocks_by_wavefront(const at::Tensor& x, at::TensorList packs, const std::vector<at::Tensor>& biases,
                                     double residual_scale, bool outer_residual, int64_t group, int64_t gc,
                                     at::Tensor out) {
  const int64_t batch = x.size(0), nf = x.size(1), height = x.size(2), width = x.size(3);
  const int64_t blocks = static_cast<int64_t>(packs.size()) / kConvsPerBlock;
  const auto options = x.options().memory_format(at::MemoryFormat::ChannelsLast);
  // x1..x4 of each block: blocks run one after the other, but are planned together
  const at::Tensor features = at::empty({batch, 4 * gc, height, width}, options);
  // block outputs: a block reads its input and its group's input, so three spares always
  // leave one free
  at::Tensor spare[3];
  std::vector<std::array<DenseConv, 5>> plan(blocks);
  at::Tensor block_input = x, group_input = x;
  for (int64_t block = 0; block < blocks; ++block) {
    const int64_t first = block * kConvsPerBlock;
    std::array<DenseConv, 5>& convs = plan[block];
    for (int64_t k = 0; k < kConvsPerBlock; ++k) {
      convs[k].new_channels = k == 0 ? block_input : features.narrow(1, (k - 1) * gc, gc);
      convs[k].pack = packs[first + k];
      convs[k].bias = biases[first + k];
      if (k < 4) {
        convs[k].epilogue = leaky_relu_epilogue();
        convs[k].out = features.narrow(1, k * gc, gc);
      }
    }
    const bool group_ends = (block + 1) % group == 0;
    if (block + 1 == blocks) {
      convs[4].out = out;
    } else {
      for (at::Tensor& candidate : spare) {
        if (candidate.is_same(block_input) || candidate.is_same(group_input)) continue;
        if (!candidate.defined()) candidate = at::empty({batch, nf, height, width}, options);
        convs[4].out = candidate;
        break;
      }
    }
    convs[4].epilogue = outer_residual && group_ends ? residual_epilogue(residual_scale, block_input, group_input)
                                                     : residual_epilogue(residual_scale, block_input);
    block_input = convs[4].out;
    if (group_ends) group_input = block_input;
  }
  dense_blocks_wavefront(plan);
  return out;
}

// float32 dense blocks, exactly as spsr_fast::dense_blocks without keep_buffers: `buffer`
// (nf + 4 gc channels) and `next_input` (nf) are the caller's scratch.
void float32_dense_blocks(const at::Tensor& x, at::TensorList packs, at::TensorList biases,
                          double residual_scale, bool outer_residual, int64_t gc, at::Tensor buffer,
                          at::Tensor next_input, at::Tensor out) {
  const int64_t nf = x.size(1), blocks = static_cast<int64_t>(packs.size()) / kConvsPerBlock;
  copy_pixels(x, buffer.narrow(1, 0, nf));
  at::Tensor block_input = x;  // conv1 reads a dense tensor where there is one
  for (int64_t block = 0; block < blocks; ++block) {
    const int64_t first = block * kConvsPerBlock;
    for (int64_t k = 0; k < 4; ++k) {
      const int64_t c_in = nf + k * gc;
      block_conv_into(k == 0 ? block_input : buffer.narrow(1, 0, c_in), packs[first + k], biases[first + k],
                      leaky_relu_epilogue(), buffer.narrow(1, c_in, gc));
    }
    if (block + 1 == blocks) {
      block_conv_into(buffer, packs[first + 4], biases[first + 4],
                      outer_residual ? residual_epilogue(residual_scale, block_input, x)
                                     : residual_epilogue(residual_scale, block_input),
                      out);
    } else {
      // conv5 reads x_in from the buffer (3x3 neighbourhoods): the block's output goes to a
      // dense tensor first, then into the buffer.
      block_conv_into(buffer, packs[first + 4], biases[first + 4], residual_epilogue(residual_scale, block_input),
                      next_input);
      copy_pixels(next_input, buffer.narrow(1, 0, nf));
      block_input = next_input;
    }
  }
}

// Checks the arguments of rrdb_packed and rrdb_trunk_packed; returns gc.
int64_t check_dense_block_args(const at::Tensor& x, at::TensorList packs, at::TensorList biases, int64_t group,
                               const char* what) {
  TORCH_CHECK(x.dim() == 4, what, ": x must be 4-D (B, C, H, W), got ", x.dim(), "-D");
  check_float_cpu(x, what, "x");
  TORCH_CHECK(!packs.empty() && packs.size() % (kConvsPerBlock * group) == 0 && biases.size() == packs.size(), what,
              ": packs must hold ", kConvsPerBlock * group, group > 1 ? " per RRDB" : " per dense block",
              " and biases as many, got ", packs.size(), " and ", biases.size());
  const int64_t nf = x.size(1), gc = biases[0].size(0);
  for (size_t i = 0; i < packs.size(); ++i) {
    const int64_t k = static_cast<int64_t>(i) % kConvsPerBlock;
    const int64_t out_channels = k < 4 ? gc : nf;
    check_float_cpu(biases[i], what, "biases");
    TORCH_CHECK(biases[i].dim() == 1 && biases[i].size(0) == out_channels, what, ": biases[", i, "] has shape ",
                biases[i].sizes(), ", expected (", out_channels, ")");
    check_pack(packs[i], nf + k * gc, out_channels, what);
    // float32 dense blocks run csrc/cpu/winograd_conv3x3 (bit for bit the model's): F(2x2) only
    TORCH_CHECK(is_bf16_pack(packs[i]) || packs[i].size(0) == kPositions, what,
                ": float32 packs of dense blocks must be for 2x2 output tiles (16 positions), got ", packs[i].sizes());
  }
  return gc;
}

std::vector<at::Tensor> contiguous_all(at::TensorList tensors) {
  std::vector<at::Tensor> out;
  for (const at::Tensor& t : tensors) out.push_back(t.contiguous());
  return out;
}

// Whether the dense blocks run as dense_blocks_wavefront: bf16 packs (even channel counts), and
// float32 packs where its AVX-512 transforms run (there it computes what
// csrc/cpu/winograd_conv3x3 does, bit for bit; the portable transforms would be slower than
// that kernel's vectorised loops).
bool by_wavefront(at::TensorList packs, int64_t nf, int64_t gc) {
  if (std::all_of(packs.begin(), packs.end(), is_bf16_pack)) return nf % 2 == 0 && gc % 2 == 0;
  return std::none_of(packs.begin(), packs.end(), is_bf16_pack) && winograd_packed_native();
}

// Dense blocks one after the other in groups of `group` blocks (rrdb_packed: all of them; a
// trunk: 3, an RRDB), each group with its outer residual where `outer_residual`. The scratch
// is allocated once per call: fresh scratch per RRDB page-faulted up to half of a bf16
// forward's time in.
at::Tensor grouped_dense_blocks(const at::Tensor& x, at::TensorList packs, at::TensorList biases,
                                double residual_scale, bool outer_residual, int64_t group, int64_t gc) {
  const int64_t batch = x.size(0), nf = x.size(1), height = x.size(2), width = x.size(3);
  const auto channels_last = at::MemoryFormat::ChannelsLast;
  const at::Tensor x_cl = x.contiguous(channels_last);
  auto new_buffer = [&](int64_t channels) {
    return at::empty({batch, channels, height, width}, x.options().memory_format(channels_last));
  };
  at::Tensor out = new_buffer(nf);
  if (x.numel() == 0) return out;
  const std::vector<at::Tensor> bias_c = contiguous_all(biases);
  if (by_wavefront(packs, nf, gc)) {
    return dense_blocks_by_wavefront(x_cl, packs, bias_c, residual_scale, outer_residual, group, gc, out);
  }
  const int64_t per_group = kConvsPerBlock * group, groups = static_cast<int64_t>(packs.size()) / per_group;
  const at::Tensor buffer = new_buffer(nf + 4 * gc), next_input = group > 1 ? new_buffer(nf) : at::Tensor();
  at::Tensor spare[2], input = x_cl;
  for (int64_t r = 0; r < groups; ++r) {
    at::Tensor& output = r + 1 == groups ? out : spare[r % 2];
    if (!output.defined()) output = new_buffer(nf);
    float32_dense_blocks(input, packs.slice(r * per_group, per_group),
                         at::TensorList(bias_c).slice(r * per_group, per_group), residual_scale, outer_residual, gc,
                         buffer, next_input, output);
    input = output;
  }
  return out;
}

at::Tensor rrdb_packed(const at::Tensor& x, at::TensorList packs, at::TensorList biases, double residual_scale,
                       bool outer_residual) {
  const int64_t gc = check_dense_block_args(x, packs, biases, 1, "rrdb_packed");
  const int64_t blocks = static_cast<int64_t>(packs.size()) / kConvsPerBlock;
  return grouped_dense_blocks(x, packs, biases, residual_scale, outer_residual, blocks, gc);
}

// RRDBs one after the other (15 packs each), each what rrdb_packed(outer_residual=true) gives
// (float32 packs: bit for bit), and for bf16 packs every dense block in one wavefront.
at::Tensor rrdb_trunk_packed(const at::Tensor& x, at::TensorList packs, at::TensorList biases,
                             double residual_scale) {
  constexpr int64_t kBlocksPerRrdb = 3;
  const int64_t gc = check_dense_block_args(x, packs, biases, kBlocksPerRrdb, "rrdb_trunk_packed");
  return grouped_dense_blocks(x, packs, biases, residual_scale, true, kBlocksPerRrdb, gc);
}

at::Tensor conv_chain_packed(const at::Tensor& x, at::TensorList packs, at::TensorList biases,
                             c10::List<bool> upsample, c10::List<bool> leaky_relu, int64_t tile) {
  TORCH_CHECK(packs.size() == biases.size() && packs.size() == upsample.size() && packs.size() == leaky_relu.size(),
              "conv_chain: packs, biases, upsample and leaky_relu must have one entry per conv, got ", packs.size(),
              ", ", biases.size(), ", ", upsample.size(), ", ", leaky_relu.size());
  check_float_cpu(x, "conv_chain", "x");
  std::vector<ChainConv> convs(packs.size());
  for (size_t i = 0; i < packs.size(); ++i) {
    check_float_cpu(biases[i], "conv_chain", "biases");
    convs[i] = {packs[i], biases[i].contiguous(), upsample[i], leaky_relu[i]};
  }
  const at::Tensor input = x.stride(1) == 1 ? x : x.contiguous(at::MemoryFormat::ChannelsLast);
  return conv_chain(input, convs, tile);
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(spsr_fast, m) {
  m.def("winograd_pack(Tensor weight, bool bf16, int output_tile=2) -> Tensor");
  m.def(
      "conv3x3_packed(Tensor x, Tensor pack, Tensor bias, str epilogue, float scale, Tensor? res1, "
      "Tensor? res2, bool upsample) -> Tensor");
  m.def("rrdb_packed(Tensor x, Tensor[] packs, Tensor[] biases, float residual_scale, bool outer_residual) -> Tensor");
  m.def("rrdb_trunk_packed(Tensor x, Tensor[] packs, Tensor[] biases, float residual_scale) -> Tensor");
  m.def("conv_chain(Tensor x, Tensor[] packs, Tensor[] biases, bool[] upsample, bool[] leaky_relu, int tile) -> Tensor");
}

TORCH_LIBRARY_IMPL(spsr_fast, CPU, m) {
  m.impl("winograd_pack", &winograd_pack);
  m.impl("conv3x3_packed", &conv3x3_packed);
  m.impl("rrdb_packed", &rrdb_packed);
  m.impl("rrdb_trunk_packed", &rrdb_trunk_packed);
  m.impl("conv_chain", &conv_chain_packed);
}

}  // namespace spsr_fast
