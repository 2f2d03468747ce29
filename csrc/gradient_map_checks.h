// Argument checks and output geometry of gradient_map, shared by every backend.
#pragma once

#include <ATen/ATen.h>

namespace spsr_fast {

inline void check_gradient_map_input(const at::Tensor& x, int64_t padding) {
  TORCH_CHECK(x.dim() == 4, "gradient_map: x must be 4-D (B, C, H, W), got ", x.dim(), "-D");
  TORCH_CHECK(at::isFloatingType(x.scalar_type()),
              "gradient_map: x must be a floating-point tensor, got ", x.scalar_type());
  TORCH_CHECK(padding == 1 || padding == 2, "gradient_map: padding must be 1 or 2, got ", padding);
}

inline std::vector<int64_t> gradient_map_output_shape(const at::Tensor& x, int64_t padding) {
  return {x.size(0), x.size(1), x.size(2) + 2 * padding - 2, x.size(3) + 2 * padding - 2};
}

// The fast kernels handle NCHW- and NHWC-contiguous tensors; anything else takes the
// strided path. Outputs follow the input's layout.
inline at::MemoryFormat gradient_map_layout(const at::Tensor& x) {
  if (x.is_contiguous()) return at::MemoryFormat::Contiguous;
  if (x.is_contiguous(at::MemoryFormat::ChannelsLast)) return at::MemoryFormat::ChannelsLast;
  return at::MemoryFormat::Preserve;  // strided
}

inline void check_gradient_map_backward(const at::Tensor& grad_out, const at::Tensor& x,
                                        int64_t padding) {
  check_gradient_map_input(x, padding);
  TORCH_CHECK(grad_out.sizes() == at::IntArrayRef(gradient_map_output_shape(x, padding)),
              "gradient_map_backward: grad_out has shape ", grad_out.sizes(), ", expected ",
              at::IntArrayRef(gradient_map_output_shape(x, padding)));
  TORCH_CHECK(grad_out.device() == x.device(), "gradient_map_backward: grad_out is on ",
              grad_out.device(), " but x is on ", x.device());
}

}  // namespace spsr_fast
