// Residual dense blocks on one channels_last buffer per block (DESIGN.md 2.2).
//
// Block i's buffer holds [x_in | x1 | x2 | x3 | x4] (nf + 4 gc channels). conv k reads
// the first nf + k*gc channels of it and its epilogue writes lrelu(conv + bias) straight
// into the next channel slice; conv5's epilogue writes 0.2*x5 + x_in straight into the
// first nf channels of the next block's buffer (or, for the last block of an RRDB, the
// outer residual 0.2*(0.2*x5 + x_in) + x into the output). No torch.cat, no separate
// bias pass (the convolution adds it), no separate activation or residual pass.
#include "dense_block.h"

#include <torch/library.h>

namespace spsr_fast {
namespace {

constexpr double kNegativeSlope = 0.2;
constexpr int64_t kConvsPerBlock = 5;

struct Geometry {
  int64_t batch, nf, gc, height, width, blocks;
  int64_t channels() const { return nf + 4 * gc; }
};

Geometry check_dense_blocks(const at::Tensor& x, at::TensorList weights, at::TensorList biases) {
  TORCH_CHECK(x.dim() == 4, "dense_blocks: x must be 4-D (B, C, H, W), got ", x.dim(), "-D");
  TORCH_CHECK(at::isFloatingType(x.scalar_type()),
              "dense_blocks: x must be a floating-point tensor, got ", x.scalar_type());
  TORCH_CHECK(!weights.empty() && weights.size() % kConvsPerBlock == 0,
              "dense_blocks: weights must hold 5 conv weights per dense block, got ",
              weights.size());
  TORCH_CHECK(biases.size() == weights.size(), "dense_blocks: biases must match weights (",
              weights.size(), "), got ", biases.size());
  TORCH_CHECK(weights[0].dim() == 4, "dense_blocks: weights[0] must be 4-D, got ",
              weights[0].dim(), "-D");
  Geometry g{x.size(0), x.size(1), weights[0].size(0), x.size(2), x.size(3),
             static_cast<int64_t>(weights.size()) / kConvsPerBlock};
  for (size_t i = 0; i < weights.size(); ++i) {
    const int64_t k = static_cast<int64_t>(i) % kConvsPerBlock;
    const int64_t out_channels = k < 4 ? g.gc : g.nf;
    const std::vector<int64_t> expected{out_channels, g.nf + k * g.gc, 3, 3};
    TORCH_CHECK(weights[i].sizes() == at::IntArrayRef(expected), "dense_blocks: weights[", i,
                "] has shape ", weights[i].sizes(), ", expected ", at::IntArrayRef(expected),
                " (nf=", g.nf, " from x, gc=", g.gc, " from weights[0])");
    TORCH_CHECK(biases[i].dim() == 1 && biases[i].size(0) == out_channels, "dense_blocks: biases[",
                i, "] has shape ", biases[i].sizes(), ", expected (", out_channels, ")");
    for (const at::Tensor* t : {&weights[i], &biases[i]}) {
      TORCH_CHECK(t->scalar_type() == x.scalar_type(), "dense_blocks: ",
                  t == &weights[i] ? "weights[" : "biases[", i, "] has dtype ",
                  t->scalar_type(), " but x has ", x.scalar_type());
      TORCH_CHECK(t->device() == x.device(), "dense_blocks: ",
                  t == &weights[i] ? "weights[" : "biases[", i, "] is on ", t->device(),
                  " but x is on ", x.device());
    }
  }
  return g;
}

at::Tensor conv3x3(const at::Tensor& input, const at::Tensor& weight, const at::Tensor& bias) {
  return at::convolution(input, weight, bias, /*stride=*/{1, 1}, /*padding=*/{1, 1},
                         /*dilation=*/{1, 1}, /*transposed=*/false, /*output_padding=*/{0, 0},
                         /*groups=*/1);
}

}  // namespace

std::tuple<at::Tensor, std::vector<at::Tensor>> dense_blocks(
    const at::Tensor& x, at::TensorList weights, at::TensorList biases, double residual_scale,
    bool outer_residual, bool keep_buffers) {
  const Geometry g = check_dense_blocks(x, weights, biases);
  const auto channels_last = at::MemoryFormat::ChannelsLast;
  const at::Tensor x_cl = x.contiguous(channels_last);
  auto new_buffer = [&] {
    return at::empty({g.batch, g.channels(), g.height, g.width},
                     x.options().memory_format(channels_last));
  };
  at::Tensor out = at::empty(x.sizes(), x.options().memory_format(channels_last));
  std::vector<at::Tensor> kept;
  at::Tensor shared;  // inference: one buffer, reused by every block
  auto buffer_for = [&]() -> at::Tensor {
    if (keep_buffers) {
      kept.push_back(new_buffer());
      return kept.back();
    }
    if (!shared.defined()) shared = new_buffer();
    return shared;
  };
  if (x.numel() == 0) {
    for (int64_t block = 0; keep_buffers && block < g.blocks; ++block) buffer_for();
    return {out, kept};
  }

  at::Tensor buffer = buffer_for();
  buffer.narrow(1, 0, g.nf).copy_(x_cl);
  at::Tensor block_input = x_cl;  // conv1 reads a dense tensor, not a strided slice
  for (int64_t block = 0; block < g.blocks; ++block) {
    const int64_t first = block * kConvsPerBlock;
    for (int64_t k = 0; k < 4; ++k) {
      const int64_t c_in = g.nf + k * g.gc;
      const at::Tensor input = k == 0 ? block_input : buffer.narrow(1, 0, c_in);
      at::Tensor slice = buffer.narrow(1, c_in, g.gc);
      at::leaky_relu_out(slice, conv3x3(input, weights[first + k], biases[first + k]),
                         kNegativeSlope);
    }
    const at::Tensor x5 = conv3x3(buffer, weights[first + 4], biases[first + 4]);
    const at::Tensor block_x = buffer.narrow(1, 0, g.nf);
    const bool last = block + 1 == g.blocks;
    if (!last) {
      // x5 is a tensor of its own, so the next block's input may overwrite this buffer
      at::Tensor next = buffer_for();
      at::Tensor next_x = next.narrow(1, 0, g.nf);
      at::add_out(next_x, block_x, x5, residual_scale);  // x_in + s*x5
      buffer = next;
      block_input = next_x;
    } else if (outer_residual) {
      // s*(s*x5 + x_in) + x, as x + s*x_in + s^2*x5: two passes over nf channels
      at::add_out(out, x_cl, block_x, residual_scale);
      out.add_(x5, residual_scale * residual_scale);
    } else {
      at::add_out(out, block_x, x5, residual_scale);
    }
  }
  return {out, kept};
}

TORCH_LIBRARY_FRAGMENT(spsr_fast, m) {
  m.def(
      "dense_blocks(Tensor x, Tensor[] weights, Tensor[] biases, float residual_scale, "
      "bool outer_residual, bool keep_buffers) -> (Tensor, Tensor[])");
}

TORCH_LIBRARY_IMPL(spsr_fast, CPU, m) { m.impl("dense_blocks", &dense_blocks); }

}  // namespace spsr_fast
