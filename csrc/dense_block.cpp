// Residual dense blocks on one channels_last buffer per block (docs/ARCHITECTURE.md 2.2).
//
// Block i's buffer holds [x_in | x1 | x2 | x3 | x4] (nf + 4 gc channels). conv k reads
// the first nf + k*gc channels of it and its epilogue writes lrelu(conv + bias) straight
// into the next channel slice; conv5's epilogue writes 0.2*x5 + x_in straight into the
// first nf channels of the next block's buffer (or, for the last block of an RRDB, the
// outer residual 0.2*(0.2*x5 + x_in) + x into the output). No torch.cat.
//
// What runs: on the CPU in float32 the convolutions are Winograd F(2x2, 3x3) with bias,
// activation and residuals in their epilogues. Everywhere else (CPU half precision, and
// CUDA, registered in csrc/cuda/dense_block_cuda.cu) they are at::convolution, which adds
// the bias itself, followed by one epilogue pass. On CUDA that is not a zero-copy path:
// cuDNN takes dense NHWC inputs, so ATen first copies every strided slice conv1..conv4 read
// (as many bytes as torch.cat copies) and adds the bias in a pass of its own. Hence CUDA's
// default is the torch.cat reference (spsr_fast/ops/dense_block.py); this op runs there
// only when asked for (SPSR_FAST_BACKEND=dense_block=native).
#include "dense_block.h"

#include <torch/library.h>

#include <cstdlib>
#include <string>

#include "cpu/winograd_conv3x3.h"

namespace spsr_fast {
namespace {

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

// SPSR_FAST_CPU_CONV: which convolution the CPU float32 path uses. winograd (default):
// csrc/cpu/winograd_conv3x3 with the epilogues fused; direct: ATen's (oneDNN) convolution
// with the epilogues as in-place passes, kept for A/B comparison.
bool cpu_uses_winograd() {
  const char* value = std::getenv("SPSR_FAST_CPU_CONV");
  const std::string choice = value == nullptr ? "" : value;
  TORCH_CHECK(choice.empty() || choice == "winograd" || choice == "direct",
              "SPSR_FAST_CPU_CONV must be 'winograd' or 'direct', got '", choice, "'");
  return choice != "direct";
}

// One 3x3 conv of the dense blocks with its epilogue: Winograd with the epilogue fused, or
// ATen's convolution followed by the epilogue.
class ConvStep {
 public:
  ConvStep(at::TensorList weights, at::TensorList biases, bool winograd)
      : weights_(weights), biases_(biases), winograd_(winograd) {}

  void operator()(int64_t index, const at::Tensor& input, const EpilogueArgs& epilogue, at::Tensor out) const {
    if (winograd_) {
      winograd_conv3x3_into(input, winograd_weight_transform(weights_[index]), biases_[index], epilogue, out);
      return;
    }
    const at::Tensor y = conv3x3(input, weights_[index], biases_[index]);
    switch (epilogue.kind) {
      case ConvEpilogue::kBias:
        out.copy_(y);
        break;
      case ConvEpilogue::kBiasLeakyRelu:
        at::leaky_relu_out(out, y, epilogue.negative_slope);
        break;
      case ConvEpilogue::kResidual:
        at::add_out(out, epilogue.res1, y, epilogue.scale);
        break;
      case ConvEpilogue::kResidual2:  // res2 + s*res1 + s^2*y: two passes over the output
        at::add_out(out, epilogue.res2, epilogue.res1, epilogue.scale);
        out.add_(y, epilogue.scale * epilogue.scale);
        break;
    }
  }

 private:
  at::TensorList weights_, biases_;
  bool winograd_;
};

}  // namespace

std::tuple<at::Tensor, std::vector<at::Tensor>> dense_blocks(
    const at::Tensor& x, at::TensorList weights, at::TensorList biases, double residual_scale,
    bool outer_residual, bool keep_buffers) {
  const Geometry g = check_dense_blocks(x, weights, biases);
  const auto channels_last = at::MemoryFormat::ChannelsLast;
  const at::Tensor x_cl = x.contiguous(channels_last);
  auto new_buffer = [&](int64_t channels) {
    return at::empty({g.batch, channels, g.height, g.width}, x.options().memory_format(channels_last));
  };
  at::Tensor out = new_buffer(g.nf);
  std::vector<at::Tensor> kept;
  at::Tensor shared;  // inference: one buffer, reused by every block
  auto buffer_for = [&]() -> at::Tensor {
    if (keep_buffers) {
      kept.push_back(new_buffer(g.channels()));
      return kept.back();
    }
    if (!shared.defined()) shared = new_buffer(g.channels());
    return shared;
  };
  if (x.numel() == 0) {
    for (int64_t block = 0; keep_buffers && block < g.blocks; ++block) buffer_for();
    return {out, kept};
  }

  const ConvStep conv(weights, biases, x.device().is_cpu() && x.scalar_type() == at::kFloat && cpu_uses_winograd());
  at::Tensor buffer = buffer_for();
  buffer.narrow(1, 0, g.nf).copy_(x_cl);
  at::Tensor block_input = x_cl;  // conv1 reads a dense tensor where there is one
  at::Tensor next_input;          // inference: the blocks' outputs, dense, reused
  for (int64_t block = 0; block < g.blocks; ++block) {
    const int64_t first = block * kConvsPerBlock;
    for (int64_t k = 0; k < 4; ++k) {
      const int64_t c_in = g.nf + k * g.gc;
      conv(first + k, k == 0 ? block_input : buffer.narrow(1, 0, c_in), leaky_relu_epilogue(),
           buffer.narrow(1, c_in, g.gc));
    }
    if (block + 1 == g.blocks) {
      // conv5 + 0.2*x5 + x_in, and for an RRDB the outer 0.2*(..) + x, straight into the output
      conv(first + 4, buffer, outer_residual ? residual_epilogue(residual_scale, block_input, x_cl)
                                             : residual_epilogue(residual_scale, block_input), out);
    } else if (keep_buffers) {
      // x_in + 0.2*x5 straight into the next block's buffer
      at::Tensor next = buffer_for();
      conv(first + 4, buffer, residual_epilogue(residual_scale, block_input), next.narrow(1, 0, g.nf));
      buffer = next;
      block_input = next.narrow(1, 0, g.nf);
    } else {
      // One shared buffer: conv5 still reads x_in from it (3x3 neighbourhoods), so the block's
      // output goes to a dense tensor of its own first, then into the buffer.
      if (!next_input.defined()) next_input = new_buffer(g.nf);
      conv(first + 4, buffer, residual_epilogue(residual_scale, block_input), next_input);
      buffer.narrow(1, 0, g.nf).copy_(next_input);
      block_input = next_input;
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
