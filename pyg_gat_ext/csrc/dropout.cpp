// Dropout with a counter-based mask (dropout.h): element k of the
// contiguous input is kept, times 1 / (1 - p), when the hash of (k, head 0)
// under the seed is at least the threshold, as
// pyg_gat_ext.ops._reference.dropout. The mask is never stored: the
// gradient is this op applied to the incoming gradient with the same seed.
#include "dropout.h"

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>

#include <cstdint>

#include "common.h"
#include "kernels.h"
#include "pool.h"

namespace pyg_gat_ext {

at::Tensor dropout_cpu(const at::Tensor& x, double p,
                       const std::optional<at::Tensor>& seed) {
  TORCH_CHECK(x.device().is_cpu(), "dropout: expected a CPU tensor");
  TORCH_CHECK(p >= 0.0 && p <= 1.0, "dropout: 'p' must lie in [0, 1]");
  const auto in = x.contiguous();
  auto out = empty_pooled(in.sizes(), in.options());
  const Dropout drop(p, seed);
  const int64_t n = in.numel();
  if (!drop.active) {
    out.copy_(in);
    return out;
  }
  // Dropout::factor(k, 0) with the key words, threshold and scale as
  // locals of the loop, so that it vectorises (32-bit lanes).
  const uint32_t k0 = drop.k0, k1 = drop.k1;
  const uint32_t threshold = static_cast<uint32_t>(drop.threshold);
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, in.scalar_type(), "dropout", [&] {
        using acc_t = at::opmath_type<scalar_t>;
        const acc_t scale = static_cast<acc_t>(drop.scale);
        const scalar_t* xs = in.data_ptr<scalar_t>();
        scalar_t* ys = out.data_ptr<scalar_t>();
        parallel_for(0, n, 1 << 14, [&](int64_t begin, int64_t end) {
          // Locals, not the captured references: a store to `y` could
          // alias a captured float and stop the vectorisation.
          const scalar_t* __restrict x = xs;
          scalar_t* __restrict y = ys;
          const uint32_t a = k0, b = k1, t = threshold;
          const acc_t s = scale;
          for (int64_t k = begin; k < end; ++k) {
            const uint32_t h = dropout_hash(a, b, static_cast<uint64_t>(k), 0);
            const acc_t f = h >= t ? s : acc_t(0);
            y[k] = static_cast<scalar_t>(static_cast<acc_t>(x[k]) * f);
          }
        });
      });
  return out;
}

}  // namespace pyg_gat_ext
