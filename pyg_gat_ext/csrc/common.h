// Helpers shared by the CPU kernels of pyg_gat_ext.
#pragma once

#include <ATen/Parallel.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

#if defined(__AVX__)
#include <immintrin.h>
#endif

namespace pyg_gat_ext {

// The unsigned integer type of T's size (2, 4 or 8 bytes): T's bits, for
// tests and selects on them that vectorise where float operations do not.
template <typename T>
using bits_of = std::conditional_t<
    sizeof(T) == 2, uint16_t,
    std::conditional_t<sizeof(T) == 4, uint32_t, uint64_t>>;

// A GCC vector of N values of T (N a power of two): one edge's values of
// all its heads in one register, for the loops over a head count known at
// compile time, which GCC unrolls into scalar code (about 15 instructions
// per head for a running maximum) rather than vectorising. Loaded and
// stored unaligned.
template <typename T, int N>
struct Lanes {
  // A typedef: GCC ignores the attribute in a dependent alias declaration.
  typedef T type __attribute__((vector_size(N * sizeof(T))));
};
template <typename T, int N>
using lanes_t = typename Lanes<T, N>::type;

template <int N, typename T>
inline lanes_t<T, N> load_lanes(const T* p) {
  lanes_t<T, N> v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

template <int N, typename T>
inline void store_lanes(T* p, lanes_t<T, N> v) {
  std::memcpy(p, &v, sizeof(v));
}

// exp(x) of a float, or lane-wise of a vector of N float (V =
// lanes_t<float, N>), branch-free so that loops over it vectorise:
// Cody-Waite range reduction x = n ln2 + r and a degree-6 polynomial for
// exp(r) (about 2 ulp), n rounded to an integer by adding and subtracting
// 1.5 * 2^23 (exact for the clamped range). Returns 0 below -87.3 (and for
// -inf); x must not be NaN.
template <typename V, int N = 1>
inline V exp_float(V x) {
  const V xc = x > 88.3762626647949f ? V{} + 88.3762626647949f : x;
  const V xr = xc < -87.3365447504f ? V{} - 87.3365447504f : xc;
  const V n = (xr * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  V r = n * -0.693359375f + xr;
  r = n * 2.12194440e-4f + r;
  V p = V{} + 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * (r * r) + (r + 1.0f);
  constexpr bool scalar = std::is_arithmetic_v<V>;
  using I = std::conditional_t<scalar, int32_t, lanes_t<int32_t, N>>;
  I bits;
  if constexpr (scalar) {
    bits = static_cast<int32_t>(n);
  } else {
    bits = __builtin_convertvector(n, I);
  }
  bits = (bits + 127) << 23;
  V scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return x < -87.3365447504f ? V{} : p * scale;
}

inline float exp_approx(float x) { return exp_float(x); }
inline double exp_approx(double x) { return std::exp(x); }

// exp_approx lane-wise: exp_float on a vector of N float, std::exp on each
// lane of a vector of double.
template <int N, typename T>
inline lanes_t<T, N> exp_lanes(lanes_t<T, N> x) {
  if constexpr (std::is_same_v<T, float>) {
    return exp_float<lanes_t<T, N>, N>(x);
  } else {
    for (int l = 0; l < N; ++l) x[l] = std::exp(x[l]);
    return x;
  }
}

// at::parallel_for(begin, end, grain, f) with f compiled once: ATen's OpenMP
// version calls f from its serial path and from its parallel region, and
// the compiler may expand f at both (a kernel body twice, twice the compile
// time). f runs on large chunks, so the call costs nothing.
template <typename F>
[[gnu::noinline]] void run_chunk(const F& f, int64_t begin, int64_t end) {
  f(begin, end);
}

template <typename F>
void parallel_for(int64_t begin, int64_t end, int64_t grain, const F& f) {
  at::parallel_for(begin, end, grain,
                   [&](int64_t b, int64_t e) { run_chunk(f, b, e); });
}

// The number of partial sums that lane_sum keeps: one AVX2 register of
// float (and C = 8, a common head width, fills it exactly).
constexpr int64_t kLanes = 8;

// sum_{c < C} t(c) in kLanes partial sums, added up in a fixed tree at the
// end: a reduction that vectorises over c (the compiler may not reorder a
// float sum itself) and whose order depends on C only.
template <typename acc_t, typename T>
inline acc_t lane_sum(int64_t C, T&& t) {
  acc_t p[kLanes] = {};
  int64_t c = 0;
  for (; c + kLanes <= C; c += kLanes)
    for (int64_t l = 0; l < kLanes; ++l) p[l] += t(c + l);
  for (int64_t l = 0; c < C; ++c, ++l) p[l] += t(c);
  for (int64_t w = kLanes / 2; w > 0; w /= 2)
    for (int64_t l = 0; l < w; ++l) p[l] += p[l + w];
  return p[0];
}

// Buffers of at least this many bytes that nothing reads before the
// backward pass are written with streaming stores (store_row): their lines
// would only be read from memory to be overwritten, and would evict the
// gathered rows.
constexpr int64_t kStreamBytes = int64_t(16) << 20;

// The same for outputs that the next op reads at once (out, grad_x): only
// far beyond the last-level cache (32 MiB on the machines measured), where
// they would not be read from it anyway.
constexpr int64_t kStreamOutputBytes = int64_t(128) << 20;

// dst[c] = src[c] for c < n, converted to T. With `stream`, float rows at
// a 32-byte boundary whose length is a multiple of 8 take non-temporal
// stores (no read of the lines first); the worker that streamed must call
// stream_fence() before its results are read.
template <typename T, typename S>
inline void store_row(T* dst, const S* src, int64_t n, bool stream) {
#if defined(__AVX__)
  if constexpr (std::is_same_v<T, float> && std::is_same_v<S, float>) {
    if (stream && n % 8 == 0 && reinterpret_cast<uintptr_t>(dst) % 32 == 0) {
      for (int64_t c = 0; c < n; c += 8)
        _mm256_stream_ps(dst + c, _mm256_loadu_ps(src + c));
      return;
    }
  }
#endif
  for (int64_t c = 0; c < n; ++c) dst[c] = static_cast<T>(src[c]);
}

// Orders this thread's streaming stores before what it writes next (and
// before the end of the parallel region that reads them).
inline void stream_fence() {
#if defined(__AVX__)
  _mm_sfence();
#endif
}

// A read prefetch of the cache line at `p` (into L2). On x86 an asm
// statement rather than __builtin_prefetch: GCC 12 at -O3 deletes the
// builtin as dead code in the attention kernels' prefetch loops (a loop
// whose only effect is prefetches), which left their gathered rows
// unprefetched; a volatile asm is never removed.
inline void prefetch(const void* p) {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  asm volatile("prefetcht1 %0" : : "m"(*static_cast<const char*>(p)));
#else
  __builtin_prefetch(p, 0, 2);
#endif
}

}  // namespace pyg_gat_ext
