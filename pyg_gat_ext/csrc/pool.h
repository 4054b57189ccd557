// Large CPU outputs of the kernels, from a pool of mapped blocks that are
// reused once freed (see pool.cpp).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

namespace pyg_gat_ext {

// at::empty(sizes, opts), from the pool where it is a CPU tensor of at
// least 8 MiB (on Linux).
at::Tensor empty_pooled(at::IntArrayRef sizes, const at::TensorOptions& opts);

// Unmaps the pool's free blocks; returns their bytes.
int64_t release_pooled();

}  // namespace pyg_gat_ext
