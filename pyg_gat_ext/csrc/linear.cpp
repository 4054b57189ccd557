// CPU kernels of the layers' projection (pyg_gat_ext::linear): for dense
// node features x [N, K] and a weight [M, K],
//   out = x @ weight^T,
// skipping the zero entries of x where x is mostly zeros: bag-of-words
// features (Cora: 1.3 % non-zero) and features after dropout, whose dense
// product spends nearly all of its multiplications on zeros. The product
// is over the non-zero entries of each row, in column order, against the
// rows of weight^T; the backward's weight gradient
//   grad_weight = grad^T @ x
// likewise, summed per block of rows (whose size depends on N only) and
// the blocks added in order: the result does not depend on the thread
// count. Where a sample of rows holds more than `max_density` non-zeros,
// or the other operand is not finite (0 * inf is NaN in a dense product,
// and a skipped zero must not hide it), both call the dense product.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/mm.h>

#include <algorithm>
#if defined(__AVX512F__)
#include <immintrin.h>
#endif
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

#include "common.h"
#include "kernels.h"
#include "pool.h"

namespace pyg_gat_ext {
namespace {

// Rows of x whose non-zeros are counted to estimate its density.
constexpr int64_t kSampleRows = 64;
// Entries tested for a non-zero at once (64 bytes of float), and only
// blocks with a non-zero are scanned entry by entry.
constexpr int64_t kBlock = 16;
// Rows per partial sum of grad_weight: at least kRows, and at most
// kMaxBlocks partial sums of K * M values for any N.
constexpr int64_t kRows = 512;
constexpr int64_t kMaxBlocks = 64;

// Checks x [N, K] against the other operand: weight [M, K] (the forward,
// dim 1 shared) or grad [N, M] (the backward, dim 0 shared).
void check_inputs(const char* op, const at::Tensor& x, const at::Tensor& other,
                  int64_t dim) {
  TORCH_CHECK_VALUE(x.dim() == 2 && other.dim() == 2 &&
                        other.size(dim) == x.size(dim),
                    op, ": expected x [N, K] and ",
                    dim == 1 ? "weight [M, K]" : "grad [N, M]",
                    " (got ", x.sizes(), " and ", other.sizes(), ")");
  TORCH_CHECK_TYPE(x.scalar_type() == other.scalar_type() &&
                       at::isFloatingType(x.scalar_type()),
                   op, ": both inputs must share one floating-point dtype "
                   "(got ", x.scalar_type(), " and ", other.scalar_type(),
                   ")");
}

// Bit j set for each of the kBlock entries x[j] that is non-zero (or NaN):
// any of its bits but the sign bit set. With AVX-512 one test per 64
// bytes (a float comparison per entry is several times slower than the
// scan needs to be).
template <typename scalar_t>
inline uint32_t nonzero_bits(const scalar_t* x) {
  using bits_t = bits_of<scalar_t>;
  constexpr bits_t kMask = static_cast<bits_t>(~bits_t(0) >> 1);
#if defined(__AVX512F__)
  if constexpr (sizeof(scalar_t) == 4) {
    return _mm512_test_epi32_mask(_mm512_loadu_si512(x),
                                  _mm512_set1_epi32(kMask));
  } else if constexpr (sizeof(scalar_t) == 8) {
    const __m512i mask = _mm512_set1_epi64(kMask);
    return _mm512_test_epi64_mask(_mm512_loadu_si512(x), mask) |
           (uint32_t(_mm512_test_epi64_mask(_mm512_loadu_si512(x + 8), mask))
            << 8);
  }
#endif
  bits_t bits[kBlock];
  std::memcpy(bits, x, sizeof(bits));
  uint32_t out = 0;
  for (int64_t j = 0; j < kBlock; ++j)
    out |= uint32_t((bits[j] & kMask) != 0) << j;
  return out;
}

// Calls f(k) for each k < K with x[k] non-zero (NaN included), in
// increasing order.
template <typename scalar_t, typename F>
inline void for_each_nonzero(const scalar_t* __restrict x, int64_t K,
                             const F& f) {
  int64_t k = 0;
  for (; k + kBlock <= K; k += kBlock)
    for (uint32_t bits = nonzero_bits(x + k); bits != 0; bits &= bits - 1)
      f(k + __builtin_ctz(bits));
  for (; k < K; ++k)
    if (x[k] != scalar_t(0)) f(k);
}

// a[m] += v * w[m] for m < M, in a loop of its own: through the lambdas
// of for_each_nonzero the compiler would not know that a and w are apart,
// and would not vectorise it.
template <typename acc_t>
inline void axpy(int64_t M, acc_t v, const acc_t* __restrict w,
                 acc_t* __restrict a) {
  for (int64_t m = 0; m < M; ++m) a[m] += v * w[m];
}

// Whether the sampled rows of x (contiguous [N, K]) hold at most
// max_density * their entries non-zeros.
template <typename scalar_t>
bool sparse_enough(const at::Tensor& x, double max_density) {
  const int64_t N = x.size(0), K = x.size(1);
  if (N == 0 || K == 0) return false;
  const int64_t rows = std::min(N, kSampleRows);
  const scalar_t* px = x.data_ptr<scalar_t>();
  int64_t nonzeros = 0;
  for (int64_t i = 0; i < rows; ++i)
    for_each_nonzero(px + (i * N / rows) * K, K, [&](int64_t) { ++nonzeros; });
  return static_cast<double>(nonzeros) <=
         max_density * static_cast<double>(rows * K);
}

// Whether no entry of t is infinite or NaN (all exponent bits set), from
// the bits in one pass that vectorises (at::isfinite(t).all() builds a
// boolean tensor first and took 1.9 ms for 1.3M floats).
template <typename scalar_t>
bool all_finite(const at::Tensor& t) {
  using bits_t = bits_of<scalar_t>;
  constexpr bits_t kExponent =
      std::is_same_v<scalar_t, at::Half>       ? bits_t(0x7C00u)
      : std::is_same_v<scalar_t, at::BFloat16> ? bits_t(0x7F80u)
      : std::is_same_v<scalar_t, float>        ? bits_t(0x7F800000u)
                                               : bits_t(0x7FF0000000000000ull);
  const auto ts = t.contiguous();
  const scalar_t* p = ts.data_ptr<scalar_t>();
  const int64_t n = ts.numel();
  bool bad = false;
  for (int64_t i = 0; i < n; ++i) {
    bits_t bits;
    std::memcpy(&bits, p + i, sizeof(bits));
    bad |= (bits & kExponent) == kExponent;
  }
  return !bad;
}

// Whether to skip x's zeros against `other`, which must be finite.
bool skip_zeros(const at::Tensor& x, const at::Tensor& other,
                double max_density) {
  bool sparse = false;
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, x.scalar_type(), "linear", [&] {
        sparse = sparse_enough<scalar_t>(x, max_density) &&
                 all_finite<scalar_t>(other);
      });
  return sparse;
}

}  // namespace

at::Tensor linear_cpu(const at::Tensor& x, const at::Tensor& weight,
                      double max_density) {
  check_inputs("linear", x, weight, 1);
  const auto xs = x.contiguous();
  const int64_t N = x.size(0), K = x.size(1), M = weight.size(0);
  auto out = empty_pooled({N, M}, x.options());
  if (!skip_zeros(xs, weight, max_density))
    return at::mm_out(out, xs, weight.t());
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, x.scalar_type(), "linear", [&] {
        using acc_t = at::opmath_type<scalar_t>;
        // weight^T [K, M] in acc_t: row k is what entry k of x scales.
        const auto wt = weight.t().to(c10::CppTypeToScalarType<acc_t>::value)
                            .contiguous();
        const acc_t* pw = wt.data_ptr<acc_t>();
        const scalar_t* px = xs.data_ptr<scalar_t>();
        scalar_t* po = out.data_ptr<scalar_t>();
        parallel_for(0, N, 16, [&](int64_t n0, int64_t n1) {
          std::vector<acc_t> acc(M);
          for (int64_t n = n0; n < n1; ++n) {
            acc_t* __restrict a = acc.data();
            std::fill(a, a + M, acc_t(0));
            const scalar_t* xr = px + n * K;
            for_each_nonzero(xr, K, [&](int64_t k) {
              axpy(M, static_cast<acc_t>(xr[k]), pw + k * M, a);
            });
            scalar_t* __restrict o = po + n * M;
            for (int64_t m = 0; m < M; ++m) o[m] = static_cast<scalar_t>(a[m]);
          }
        });
      });
  return out;
}

at::Tensor linear_weight_grad_cpu(const at::Tensor& grad, const at::Tensor& x,
                                  double max_density) {
  check_inputs("linear_weight_grad", x, grad, 0);
  const auto xs = x.contiguous();
  if (!skip_zeros(xs, grad, max_density)) return at::mm(grad.t(), xs);
  const auto gs = grad.contiguous();
  const int64_t N = x.size(0), K = x.size(1), M = grad.size(1), KM = K * M;
  const int64_t rows = std::max(kRows, (N + kMaxBlocks - 1) / kMaxBlocks);
  const int64_t blocks = (N + rows - 1) / rows;
  auto grad_weight = at::empty({M, K}, x.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, x.scalar_type(), "linear_weight_grad", [&] {
        using acc_t = at::opmath_type<scalar_t>;
        const scalar_t* px = xs.data_ptr<scalar_t>();
        const scalar_t* pg = gs.data_ptr<scalar_t>();
        // Per block of rows, the partial sums of grad_weight^T [K, M].
        std::vector<acc_t> partial(blocks * KM, acc_t(0));
        parallel_for(0, blocks, 1, [&](int64_t b0, int64_t b1) {
          std::vector<acc_t> g(M);
          for (int64_t b = b0; b < b1; ++b) {
            acc_t* p = partial.data() + b * KM;
            for (int64_t n = b * rows; n < std::min(N, (b + 1) * rows); ++n) {
              acc_t* __restrict gr = g.data();
              for (int64_t m = 0; m < M; ++m)
                gr[m] = static_cast<acc_t>(pg[n * M + m]);
              const scalar_t* xr = px + n * K;
              for_each_nonzero(xr, K, [&](int64_t k) {
                axpy(M, static_cast<acc_t>(xr[k]), gr, p + k * M);
              });
            }
          }
        });
        // The blocks' partial sums, added in block order, transposed.
        scalar_t* pgw = grad_weight.data_ptr<scalar_t>();
        parallel_for(0, K, 64, [&](int64_t k0, int64_t k1) {
          std::vector<acc_t> sum(M);
          for (int64_t k = k0; k < k1; ++k) {
            std::fill(sum.begin(), sum.end(), acc_t(0));
            for (int64_t b = 0; b < blocks; ++b) {
              const acc_t* __restrict pk = partial.data() + b * KM + k * M;
              for (int64_t m = 0; m < M; ++m) sum[m] += pk[m];
            }
            for (int64_t m = 0; m < M; ++m)
              pgw[m * K + k] = static_cast<scalar_t>(sum[m]);
          }
        });
      });
  return grad_weight;
}

}  // namespace pyg_gat_ext
