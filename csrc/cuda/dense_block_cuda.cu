// CUDA registration of the dense-block op: the same ATen implementation as the CPU one
// (csrc/dense_block.cpp), whose convolutions run on cuDNN here (after ATen copies each
// strided slice to a dense tensor). Opt-in: CUDA's default is the torch.cat reference.
#include <torch/library.h>

#include "../dense_block.h"

namespace spsr_fast {

TORCH_LIBRARY_IMPL(spsr_fast, CUDA, m) { m.impl("dense_blocks", &dense_blocks); }

}  // namespace spsr_fast
