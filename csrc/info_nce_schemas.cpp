// Schemas of info_nce (docs/ARCHITECTURE.md 2.3). Queries and features are raw vectors: the kernels
// normalise them (cosine similarity) and return gradients w.r.t. the raw inputs.
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(spsr_fast, m) {
  m.def("info_nce(Tensor queries, Tensor features, Tensor image_index, Tensor positive_index, "
        "Tensor excluded_centres, int grid_width, int radius, float scale) -> (Tensor loss, Tensor lse)");
  m.def("info_nce_backward(Tensor grad_loss, Tensor queries, Tensor features, Tensor image_index, "
        "Tensor positive_index, Tensor excluded_centres, Tensor lse, int grid_width, int radius, "
        "float scale) -> (Tensor grad_queries, Tensor grad_features)");
}
