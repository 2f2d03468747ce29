// Fused residual dense blocks (docs/ARCHITECTURE.md 2.2): Winograd convolutions on the CPU in
// float32, ATen convolutions (oneDNN, cuDNN) elsewhere, so one implementation serves CPU and
// CUDA; csrc/cuda registers it for CUDA, where it is opt-in (see csrc/dense_block.cpp).
#pragma once

#include <ATen/ATen.h>

#include <tuple>
#include <vector>

namespace spsr_fast {

// `weights`/`biases` hold 5 convs per residual dense block (RDB), blocks chained in order.
// Returns the output and, when keep_buffers, each block's concat buffer
// [x_in, x1, x2, x3, x4] (channels_last) for the backward.
std::tuple<at::Tensor, std::vector<at::Tensor>> dense_blocks(
    const at::Tensor& x, at::TensorList weights, at::TensorList biases, double residual_scale,
    bool outer_residual, bool keep_buffers);

}  // namespace spsr_fast
