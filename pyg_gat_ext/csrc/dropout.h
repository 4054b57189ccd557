// The counter-based dropout mask shared by the CPU kernels: the factor of
// (index, head) is 0 or 1 / (1 - p), from a hash of the index, the head and
// two 32-bit key words, as pyg_gat_ext.ops._reference.dropout_hash. Nothing
// is stored: the backward regenerates the mask.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <optional>

#include "common.h"

namespace pyg_gat_ext {

// MurmurHash3's 32-bit finaliser, of one uint32_t or lane-wise of a GCC
// vector of them.
template <typename T>
inline T fmix32(T h) {
  h ^= h >> 16;
  h *= 0x85EBCA6Bu;
  h ^= h >> 13;
  h *= 0xC2B2AE35u;
  h ^= h >> 16;
  return h;
}

// The part of the hash that depends on the index alone: computed once per
// edge and shared by its heads.
inline uint32_t dropout_index_hash(uint32_t k0, uint32_t k1, uint64_t index) {
  const uint32_t h = fmix32(k0 ^ static_cast<uint32_t>(index & 0xFFFFFFFFu));
  return fmix32(h ^ static_cast<uint32_t>(index >> 32) ^ k1);
}

// The 24-bit hash of (index, head) under the key words (k0, k1), as
// pyg_gat_ext.ops._reference.dropout_hash.
inline uint32_t dropout_hash(uint32_t k0, uint32_t k1, uint64_t index,
                             uint32_t head) {
  return fmix32(dropout_index_hash(k0, k1, index) ^ (head * 0x9E3779B9u)) >> 8;
}

// The dropout parameters: entry (edge, head) is kept (and scaled) when its
// 24-bit hash is at least `threshold`, as pyg_gat_ext.ops._reference.
struct Dropout {
  bool active = false;
  uint32_t k0 = 0, k1 = 0;
  int64_t threshold = 0;
  double scale = 1.0;

  // `seed` holds the two key words (int64, as torch.randint gives them).
  Dropout(double p, const std::optional<at::Tensor>& seed) {
    active = p > 0.0 && seed.has_value();
    if (seed.has_value()) {
      TORCH_CHECK(seed->device().is_cpu() &&
                      seed->scalar_type() == at::kLong && seed->numel() == 2,
                  "pyg_gat_ext: 'seed' must be a CPU int64 tensor of 2 "
                  "words");
      const auto words = seed->contiguous();
      k0 = static_cast<uint32_t>(words.data_ptr<int64_t>()[0]);
      k1 = static_cast<uint32_t>(words.data_ptr<int64_t>()[1]);
    }
    threshold = std::min<int64_t>(
        int64_t(1) << 24,
        static_cast<int64_t>(std::floor(p * 16777216.0 + 0.5)));
    scale = p >= 1.0 ? 0.0 : 1.0 / (1.0 - p);
  }

  // f[h] = the factor of (edge, h) for every head: the index's part of the
  // hash once, then the heads' hashes 8 at a time in vector registers (GCC
  // unrolls a loop over a known number of heads into scalar code, about a
  // dozen instructions per head). All ones when inactive.
  template <typename acc_t>
  void factors(int64_t edge, int64_t heads, acc_t* f) const {
    if (!active) {
      std::fill(f, f + heads, acc_t(1));
      return;
    }
    using u32x8 = lanes_t<uint32_t, 8>;
    const uint32_t e = dropout_index_hash(k0, k1, static_cast<uint64_t>(edge));
    const uint32_t t = static_cast<uint32_t>(threshold);
    const acc_t kept = static_cast<acc_t>(scale);
    for (int64_t h0 = 0; h0 < heads; h0 += 8) {
      const uint32_t b = static_cast<uint32_t>(h0);
      const u32x8 h = fmix32(u32x8{b, b + 1, b + 2, b + 3, b + 4, b + 5,
                                   b + 6, b + 7} * 0x9E3779B9u ^ e) >> 8;
      const int64_t lanes = std::min<int64_t>(8, heads - h0);
      for (int64_t l = 0; l < lanes; ++l)
        f[h0 + l] = h[l] >= t ? kept : acc_t(0);
    }
  }
};

}  // namespace pyg_gat_ext
