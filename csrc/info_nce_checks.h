// Argument checks of info_nce, shared by every compiled backend.
#pragma once

#include <ATen/ATen.h>

namespace spsr_fast {

inline at::ScalarType info_nce_acc_type(at::ScalarType t) {
  return t == at::kDouble ? at::kDouble : at::kFloat;
}

inline void check_info_nce_inputs(const at::Tensor& queries, const at::Tensor& features,
                                  const at::Tensor& image_index, const at::Tensor& positive_index,
                                  const at::Tensor& excluded_centres, int64_t grid_width,
                                  int64_t radius) {
  TORCH_CHECK(queries.dim() == 2, "info_nce: queries must be 2-D (N, D), got ", queries.dim(), "-D");
  TORCH_CHECK(features.dim() == 3, "info_nce: features must be 3-D (B, L, D), got ", features.dim(), "-D");
  TORCH_CHECK(at::isFloatingType(queries.scalar_type()), "info_nce: queries must be floating-point, got ",
              queries.scalar_type());
  TORCH_CHECK(features.scalar_type() == queries.scalar_type(), "info_nce: features has dtype ",
              features.scalar_type(), " but queries has ", queries.scalar_type());
  TORCH_CHECK(features.size(2) == queries.size(1), "info_nce: features has D = ", features.size(2),
              " but queries has D = ", queries.size(1));
  const int64_t N = queries.size(0);
  TORCH_CHECK(image_index.dim() == 1 && image_index.size(0) == N && image_index.scalar_type() == at::kLong,
              "info_nce: image_index must be int64 of shape (", N, "), got ", image_index.scalar_type(), " ",
              image_index.sizes());
  TORCH_CHECK(positive_index.dim() == 1 && positive_index.size(0) == N &&
                  positive_index.scalar_type() == at::kLong,
              "info_nce: positive_index must be int64 of shape (", N, "), got ",
              positive_index.scalar_type(), " ", positive_index.sizes());
  TORCH_CHECK(excluded_centres.dim() == 3 && excluded_centres.size(0) == N && excluded_centres.size(2) == 2 &&
                  excluded_centres.scalar_type() == at::kLong,
              "info_nce: excluded_centres must be int64 of shape (", N, ", K, 2), got ",
              excluded_centres.scalar_type(), " ", excluded_centres.sizes());
  for (const at::Tensor* t : {&features, &image_index, &positive_index, &excluded_centres}) {
    TORCH_CHECK(t->device() == queries.device(), "info_nce: every tensor must be on ", queries.device(),
                ", got one on ", t->device());
  }
  TORCH_CHECK(grid_width > 0, "info_nce: grid_width must be positive, got ", grid_width);
  TORCH_CHECK(features.size(1) % grid_width == 0, "info_nce: features has L = ", features.size(1),
              " positions, not a multiple of grid_width = ", grid_width);
  TORCH_CHECK(radius >= 0, "info_nce: radius must be >= 0, got ", radius);
  if (N > 0) {
    TORCH_CHECK(features.size(0) > 0 && features.size(1) > 0, "info_nce: features has no candidates (shape ",
                features.sizes(), ") but there are ", N, " queries");
    const auto [img_min, img_max] = at::aminmax(image_index);
    TORCH_CHECK(img_min.item<int64_t>() >= 0 && img_max.item<int64_t>() < features.size(0),
                "info_nce: image_index must lie in [0, ", features.size(0), ")");
    const auto [pos_min, pos_max] = at::aminmax(positive_index);
    TORCH_CHECK(pos_min.item<int64_t>() >= 0 && pos_max.item<int64_t>() < features.size(1),
                "info_nce: positive_index must lie in [0, ", features.size(1), ")");
  }
}

inline void check_info_nce_backward(const at::Tensor& grad_loss, const at::Tensor& queries,
                                    const at::Tensor& lse) {
  const int64_t N = queries.size(0);
  TORCH_CHECK(grad_loss.dim() == 1 && grad_loss.size(0) == N, "info_nce_backward: grad_loss must have shape (",
              N, "), got ", grad_loss.sizes());
  TORCH_CHECK(lse.dim() == 1 && lse.size(0) == N, "info_nce_backward: lse must have shape (", N, "), got ",
              lse.sizes());
}

}  // namespace spsr_fast
