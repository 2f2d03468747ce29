// CUDA kernels of gradient_map: one thread per output (or input-gradient) element,
// walked in the memory order of the tensor it writes so stores coalesce; the math is
// gradient_map_math.h, the same functions the CPU strided path runs.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "../gradient_map_checks.h"
#include "../gradient_map_math.h"
#include "../grid_stride_math.h"

namespace spsr_fast {
namespace {

namespace gm = gradient_map_math;

constexpr int kThreads = 256;

struct Strides4 {
  int64_t b, c, h, w;
};

Strides4 strides_of(const at::Tensor& t) {
  return {t.stride(0), t.stride(1), t.stride(2), t.stride(3)};
}

// Splits a linear index of a (B, C, H, W) tensor stored NCHW or NHWC.
template <bool kChannelsLast, typename index_t>
__device__ __forceinline__ void unravel(index_t e, index_t C, index_t H, index_t W, index_t* b,
                                        index_t* c, index_t* i, index_t* j) {
  if (kChannelsLast) {
    *c = e % C;
    e /= C;
    *j = e % W;
    e /= W;
    *i = e % H;
    *b = e / H;
  } else {
    *j = e % W;
    e /= W;
    *i = e % H;
    e /= H;
    *c = e % C;
    *b = e / C;
  }
}

template <typename scalar_t, bool kChannelsLast, typename index_t>
__global__ void forward_kernel(const scalar_t* __restrict__ x, Strides4 xs, scalar_t* __restrict__ out,
                               index_t n, index_t C, index_t H, index_t W, index_t Ho, index_t Wo,
                               int padding) {
  using acc_t = at::opmath_type<scalar_t>;
  const index_t stride = static_cast<index_t>(gridDim.x) * static_cast<index_t>(blockDim.x);
  for (index_t e = static_cast<index_t>(blockIdx.x) * static_cast<index_t>(blockDim.x) + threadIdx.x; e < n;
       e += stride) {  // e + stride fits index_t: use_int32_index
    index_t b, c, a, col;
    unravel<kChannelsLast>(e, C, Ho, Wo, &b, &c, &a, &col);
    const gm::Plane<scalar_t, acc_t> plane{x + b * xs.b + c * xs.c, H, W, xs.h, xs.w};
    out[e] = static_cast<scalar_t>(gm::forward_at(plane, a + 1 - padding, col + 1 - padding));
  }
}

template <typename scalar_t, bool kChannelsLast, typename index_t>
__global__ void backward_kernel(const scalar_t* __restrict__ grad, Strides4 gs,
                                const scalar_t* __restrict__ x, Strides4 xs,
                                scalar_t* __restrict__ dx, index_t n, index_t C, index_t H,
                                index_t W, index_t Ho, index_t Wo, int padding) {
  using acc_t = at::opmath_type<scalar_t>;
  const index_t stride = static_cast<index_t>(gridDim.x) * static_cast<index_t>(blockDim.x);
  for (index_t e = static_cast<index_t>(blockIdx.x) * static_cast<index_t>(blockDim.x) + threadIdx.x; e < n;
       e += stride) {  // e + stride fits index_t: use_int32_index
    index_t b, c, i, j;
    unravel<kChannelsLast>(e, C, H, W, &b, &c, &i, &j);
    const gm::Plane<scalar_t, acc_t> xplane{x + b * xs.b + c * xs.c, H, W, xs.h, xs.w};
    const gm::Plane<scalar_t, acc_t> gplane{grad + b * gs.b + c * gs.c, Ho, Wo, gs.h, gs.w};
    dx[e] = static_cast<scalar_t>(gm::backward_at(xplane, gplane, i, j, padding));
  }
}

int blocks_for(int64_t n) {
  const int64_t max_blocks =
      static_cast<int64_t>(at::cuda::getCurrentDeviceProperties()->multiProcessorCount) * 32;
  return static_cast<int>(std::min<int64_t>((n + kThreads - 1) / kThreads, max_blocks));
}

// index_t = int32_t makes the linear index and its unravelling (a division and remainder
// per dimension, the costly part of each element) 32-bit. Memory offsets stay 64-bit either
// way: Strides4 and Plane hold int64_t, so only the loop index can overflow, on its last
// grid-stride step (csrc/grid_stride_math.h). The sizes passed as index_t (C, H, W, Ho,
// Wo <= n + 2) fit whenever that index does.
bool use_int32_index(int64_t n, int blocks) {
  return grid_stride_fits_int32(n, static_cast<int64_t>(blocks) * kThreads);
}

at::Tensor gradient_map_cuda(const at::Tensor& x, int64_t padding) {
  check_gradient_map_input(x, padding);
  const c10::cuda::CUDAGuard guard(x.device());
  const at::MemoryFormat layout = gradient_map_layout(x);
  const bool channels_last = layout == at::MemoryFormat::ChannelsLast;
  at::Tensor out = at::empty(gradient_map_output_shape(x, padding),
                             x.options().memory_format(channels_last ? layout : at::MemoryFormat::Contiguous));
  const int64_t n = out.numel();
  if (n == 0) return out;
  const int blocks = blocks_for(n);
  const bool small = use_int32_index(n, blocks);
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "gradient_map_cuda", [&] {
    auto launch = [&](auto kernel, auto idx) {
      using index_t = decltype(idx);
      kernel<<<blocks, kThreads, 0, stream>>>(
          x.const_data_ptr<scalar_t>(), strides_of(x), out.mutable_data_ptr<scalar_t>(),
          static_cast<index_t>(n), static_cast<index_t>(x.size(1)), static_cast<index_t>(x.size(2)),
          static_cast<index_t>(x.size(3)), static_cast<index_t>(out.size(2)),
          static_cast<index_t>(out.size(3)), static_cast<int>(padding));
    };
    if (channels_last) {
      small ? launch(forward_kernel<scalar_t, true, int32_t>, int32_t{})
            : launch(forward_kernel<scalar_t, true, int64_t>, int64_t{});
    } else {
      small ? launch(forward_kernel<scalar_t, false, int32_t>, int32_t{})
            : launch(forward_kernel<scalar_t, false, int64_t>, int64_t{});
    }
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

at::Tensor gradient_map_backward_cuda(const at::Tensor& grad_out, const at::Tensor& x,
                                      int64_t padding) {
  check_gradient_map_backward(grad_out, x, padding);
  const c10::cuda::CUDAGuard guard(x.device());
  const at::MemoryFormat layout = gradient_map_layout(x);
  const bool channels_last = layout == at::MemoryFormat::ChannelsLast;
  at::Tensor dx = at::empty(x.sizes(), x.options().memory_format(channels_last ? layout : at::MemoryFormat::Contiguous));
  const int64_t n = dx.numel();
  if (n == 0) return dx;
  const at::Tensor grad = grad_out.to(x.scalar_type());
  const int blocks = blocks_for(n);
  const bool small = use_int32_index(n, blocks);
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "gradient_map_backward_cuda", [&] {
    auto launch = [&](auto kernel, auto idx) {
      using index_t = decltype(idx);
      kernel<<<blocks, kThreads, 0, stream>>>(
          grad.const_data_ptr<scalar_t>(), strides_of(grad), x.const_data_ptr<scalar_t>(),
          strides_of(x), dx.mutable_data_ptr<scalar_t>(), static_cast<index_t>(n),
          static_cast<index_t>(x.size(1)), static_cast<index_t>(x.size(2)),
          static_cast<index_t>(x.size(3)), static_cast<index_t>(grad.size(2)),
          static_cast<index_t>(grad.size(3)), static_cast<int>(padding));
    };
    if (channels_last) {
      small ? launch(backward_kernel<scalar_t, true, int32_t>, int32_t{})
            : launch(backward_kernel<scalar_t, true, int64_t>, int64_t{});
    } else {
      small ? launch(backward_kernel<scalar_t, false, int32_t>, int32_t{})
            : launch(backward_kernel<scalar_t, false, int64_t>, int64_t{});
    }
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return dx;
}

}  // namespace

TORCH_LIBRARY_IMPL(spsr_fast, CUDA, m) {
  m.impl("gradient_map", &gradient_map_cuda);
  m.impl("gradient_map_backward", &gradient_map_backward_cuda);
}

}  // namespace spsr_fast
