// CPU kernels of GAT's node scores (pyg_gat_ext::head_scores): for node
// features x [N, H, C] and K attention vectors att [K, H, C],
//   out[n, k, h] = <x[n, h], att[k, h]>,
// PyG's (x * att).sum(-1) for every k at once, in one streaming pass over x
// (a matrix product with att laid out block-diagonally reads x once per k,
// and its backward, a product with K * H columns and one reducing over N,
// ran far below the memory bandwidth). The backward is one pass over x and
// the incoming gradient g [N, K, H]:
//   grad_x[n, h] = sum_k g[n, k, h] att[k, h],
//   grad_att[k, h] = sum_n g[n, k, h] x[n, h],
// the latter summed per block of rows, whose size depends on N only, and
// the blocks added in order: the result does not depend on the thread
// count.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>

#include <algorithm>
#include <cstdint>
#include <tuple>
#include <vector>

#include "common.h"
#include "kernels.h"
#include "pool.h"

namespace pyg_gat_ext {
namespace {

// Rows per partial sum of grad_att: at least kRows, and at most kMaxBlocks
// partial sums of K * H * C values for any N.
constexpr int64_t kRows = 256;
constexpr int64_t kMaxBlocks = 1024;

struct Shape {
  int64_t N, K, H, C;
};

Shape check_inputs(const char* op, const at::Tensor& x, const at::Tensor& att) {
  TORCH_CHECK_VALUE(x.dim() == 3 && att.dim() == 3 &&
                        att.size(1) == x.size(1) && att.size(2) == x.size(2),
                    op, ": x must be [N, H, C] and att [K, H, C] (got ",
                    x.sizes(), " and ", att.sizes(), ")");
  TORCH_CHECK_TYPE(
      x.scalar_type() == att.scalar_type() && at::isFloatingType(x.scalar_type()),
      op, ": x and att must share one floating-point dtype (got ",
      x.scalar_type(), " and ", att.scalar_type(), ")");
  return {x.size(0), att.size(0), x.size(1), x.size(2)};
}

// The K * H * C values of `att` (contiguous) in acc_t.
template <typename acc_t, typename scalar_t>
std::vector<acc_t> to_acc(const at::Tensor& att) {
  const scalar_t* p = att.data_ptr<scalar_t>();
  return std::vector<acc_t>(p, p + att.numel());
}

}  // namespace

at::Tensor head_scores_cpu(const at::Tensor& x, const at::Tensor& att) {
  const Shape s = check_inputs("head_scores", x, att);
  const auto xs = x.contiguous();
  const auto as = att.contiguous();
  auto out = at::empty({s.N, s.K, s.H}, x.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, x.scalar_type(), "head_scores", [&] {
        using acc_t = at::opmath_type<scalar_t>;
        const auto a = to_acc<acc_t, scalar_t>(as);
        const scalar_t* px = xs.data_ptr<scalar_t>();
        scalar_t* po = out.data_ptr<scalar_t>();
        const int64_t K = s.K, H = s.H, C = s.C;
        parallel_for(0, s.N, kRows, [&](int64_t n0, int64_t n1) {
          for (int64_t n = n0; n < n1; ++n)
            for (int64_t k = 0; k < K; ++k)
              for (int64_t h = 0; h < H; ++h) {
                const scalar_t* xh = px + (n * H + h) * C;
                const acc_t* ah = a.data() + (k * H + h) * C;
                po[(n * K + k) * H + h] =
                    static_cast<scalar_t>(lane_sum<acc_t>(C, [&](int64_t c) {
                      return static_cast<acc_t>(xh[c]) * ah[c];
                    }));
              }
        });
      });
  return out;
}

std::tuple<at::Tensor, at::Tensor> head_scores_backward_cpu(
    const at::Tensor& grad, const at::Tensor& x, const at::Tensor& att) {
  const Shape s = check_inputs("head_scores_backward", x, att);
  TORCH_CHECK_VALUE(grad.sizes() == at::IntArrayRef({s.N, s.K, s.H}),
                    "head_scores_backward: grad must be [N, K, H] = [", s.N,
                    ", ", s.K, ", ", s.H, "] (got ", grad.sizes(), ")");
  const auto gs = grad.to(x.scalar_type()).contiguous();
  const auto xs = x.contiguous();
  const auto as = att.contiguous();
  auto grad_x = empty_pooled(xs.sizes(), xs.options());
  auto grad_att = at::empty_like(as);
  const int64_t K = s.K, H = s.H, C = s.C, KHC = K * H * C;
  const int64_t rows = std::max(kRows, (s.N + kMaxBlocks - 1) / kMaxBlocks);
  const int64_t blocks = (s.N + rows - 1) / rows;
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, x.scalar_type(), "head_scores_backward", [&] {
        using acc_t = at::opmath_type<scalar_t>;
        const auto a = to_acc<acc_t, scalar_t>(as);
        const scalar_t* pg = gs.data_ptr<scalar_t>();
        const scalar_t* px = xs.data_ptr<scalar_t>();
        scalar_t* pgx = grad_x.data_ptr<scalar_t>();
        std::vector<acc_t> partial(blocks * KHC, acc_t(0));
        parallel_for(0, blocks, 1, [&](int64_t b0, int64_t b1) {
          std::vector<acc_t> gx(C);
          for (int64_t b = b0; b < b1; ++b) {
            acc_t* __restrict p = partial.data() + b * KHC;
            for (int64_t n = b * rows; n < std::min(s.N, (b + 1) * rows); ++n)
              for (int64_t h = 0; h < H; ++h) {
                const scalar_t* __restrict xh = px + (n * H + h) * C;
                acc_t* __restrict g_row = gx.data();
                std::fill(g_row, g_row + C, acc_t(0));
                for (int64_t k = 0; k < K; ++k) {
                  const acc_t g = static_cast<acc_t>(pg[(n * K + k) * H + h]);
                  const acc_t* __restrict ah = a.data() + (k * H + h) * C;
                  acc_t* __restrict ph = p + (k * H + h) * C;
                  for (int64_t c = 0; c < C; ++c) {
                    g_row[c] += g * ah[c];
                    ph[c] += g * static_cast<acc_t>(xh[c]);
                  }
                }
                scalar_t* __restrict out = pgx + (n * H + h) * C;
                for (int64_t c = 0; c < C; ++c)
                  out[c] = static_cast<scalar_t>(g_row[c]);
              }
          }
        });
        // The blocks' partial sums, added in block order.
        scalar_t* pa = grad_att.data_ptr<scalar_t>();
        std::vector<acc_t> sum(KHC, acc_t(0));
        for (int64_t b = 0; b < blocks; ++b)
          for (int64_t i = 0; i < KHC; ++i) sum[i] += partial[b * KHC + i];
        for (int64_t i = 0; i < KHC; ++i) pa[i] = static_cast<scalar_t>(sum[i]);
      });
  return {grad_x, grad_att};
}

}  // namespace pyg_gat_ext
