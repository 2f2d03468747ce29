// The schemas of every op in spsr_fast._C, declared once. Kernels register against
// them per backend (csrc/cpu, csrc/cuda); Python adds fake and autograd impls.
#include <torch/library.h>

TORCH_LIBRARY(spsr_fast, m) {
  m.def("gradient_map(Tensor x, int padding=1) -> Tensor");
  m.def("gradient_map_backward(Tensor grad_out, Tensor x, int padding) -> Tensor");
}
