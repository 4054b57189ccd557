// CPU kernels of pyg_gat_ext: segment softmax forward and backward, and the
// counting sort that groups an unsorted index into CSR form.
//
// Entries are addressed in "sorted position" space: segment s owns positions
// ptr[s] .. ptr[s + 1] - 1, and position p holds row perm[p] of the input
// (row p when perm is absent). Work is split into chunks of equal entry
// counts rather than equal segment counts, so one huge segment is reduced in
// parallel pieces whose partial states are merged in chunk order: balanced
// and deterministic for a given thread count.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/zeros.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <optional>
#include <type_traits>
#include <vector>

#include "common.h"
#include "kernels.h"

namespace pyg_gat_ext {
namespace {

constexpr int64_t kMinChunk = 4096;  // Entries below which one thread runs.
constexpr int64_t kTile = 16;        // Rows gathered per step of a segment.
constexpr double kEps = 1e-16;       // As torch_geometric.utils.softmax.

// One chunk's record of a segment it only partly covers.
struct Partial {
  int64_t segment = -1, begin = 0, end = 0, final_state = -1;
};

// Runs a two-pass computation over segments: `reduce(state, begin, end)`
// folds positions [begin, end) into a state of `state_size` accumulators
// (initialised by `init`), `merge(state, other)` combines the states of two
// consecutive pieces of one segment, and `write(state, begin, end)` writes
// the output of positions [begin, end) from the segment's final state.
template <typename acc_t, typename Init, typename Reduce, typename Merge,
          typename Write>
void segmented_two_pass(const int64_t* ptr, int64_t num_segments,
                        int64_t num_entries, int64_t state_size, Init init,
                        Reduce reduce, Merge merge, Write write) {
  if (num_entries == 0) return;
  const int64_t max_chunks = 4 * at::get_num_threads();
  const int64_t num_chunks =
      std::max<int64_t>(1, std::min(max_chunks, num_entries / kMinChunk));
  auto chunk_begin = [&](int64_t c) { return c * num_entries / num_chunks; };

  // Slot 0: a segment that starts before the chunk; slot 1: one that ends
  // after it. A segment spanning the whole chunk takes slot 0.
  std::vector<Partial> partials(2 * num_chunks);
  std::vector<acc_t> partial_states(2 * num_chunks * state_size);

  parallel_for(0, num_chunks, 1, [&](int64_t c_begin, int64_t c_end) {
    std::vector<acc_t> state(state_size);
    for (int64_t c = c_begin; c < c_end; ++c) {
      const int64_t a = chunk_begin(c), b = chunk_begin(c + 1);
      // The last segment s with ptr[s] <= a is non-empty and contains a.
      int64_t s = std::upper_bound(ptr, ptr + num_segments + 1, a) - ptr - 1;
      for (; s < num_segments && ptr[s] < b; ++s) {
        const int64_t lo = std::max(ptr[s], a), hi = std::min(ptr[s + 1], b);
        if (lo >= hi) continue;  // Empty segment.
        const bool starts_before = ptr[s]<a, ends_after = ptr[s + 1]> b;
        acc_t* st = state.data();
        if (starts_before || ends_after) {
          const int64_t slot = 2 * c + (starts_before ? 0 : 1);
          partials[slot] = Partial{s, lo, hi, -1};
          st = partial_states.data() + slot * state_size;
        }
        init(st);
        reduce(st, lo, hi);
        if (!starts_before && !ends_after) write(st, lo, hi);
      }
    }
  });

  // Merge the pieces of segments that cross chunk boundaries, in order.
  std::vector<acc_t> finals;
  int64_t current = -1;
  for (auto& partial : partials) {
    if (partial.segment < 0) continue;
    const acc_t* st =
        partial_states.data() + (&partial - partials.data()) * state_size;
    if (partial.segment != current) {
      current = partial.segment;
      finals.insert(finals.end(), st, st + state_size);
    } else {
      merge(finals.data() + finals.size() - state_size, st);
    }
    partial.final_state = finals.size() / state_size - 1;
  }
  if (finals.empty()) return;

  parallel_for(0, num_chunks, 1, [&](int64_t c_begin, int64_t c_end) {
    for (int64_t c = c_begin; c < c_end; ++c) {
      for (int64_t slot = 2 * c; slot < 2 * c + 2; ++slot) {
        const Partial& partial = partials[slot];
        if (partial.segment < 0) continue;
        write(finals.data() + partial.final_state * state_size, partial.begin,
              partial.end);
      }
    }
  });
}

// Checks the CSR pointer against the entries and returns its data.
const int64_t* checked_ptr(const at::Tensor& ptr, int64_t num_entries) {
  TORCH_CHECK(ptr.dim() == 1 && ptr.numel() >= 1 &&
                  ptr.scalar_type() == at::kLong && ptr.is_contiguous(),
              "segment_softmax: expected 'ptr' to be a contiguous 1-D int64 "
              "tensor");
  const int64_t* p = ptr.data_ptr<int64_t>();
  const int64_t num_segments = ptr.numel() - 1;
  TORCH_CHECK(p[0] == 0 && p[num_segments] == num_entries,
              "segment_softmax: 'ptr' must start at 0 and end at the number "
              "of entries (",
              num_entries, "), got ", p[0], " and ", p[num_segments]);
  for (int64_t s = 0; s < num_segments; ++s) {
    TORCH_CHECK(p[s] <= p[s + 1],
                "segment_softmax: 'ptr' must be non-decreasing (ptr[", s,
                "] = ", p[s], " > ptr[", s + 1, "] = ", p[s + 1], ")");
  }
  return p;
}

const int64_t* checked_perm(const std::optional<at::Tensor>& perm,
                            int64_t num_entries) {
  if (!perm.has_value()) return nullptr;
  TORCH_CHECK(perm->dim() == 1 && perm->numel() == num_entries &&
                  perm->scalar_type() == at::kLong && perm->is_contiguous(),
              "segment_softmax: expected 'perm' to be a contiguous 1-D int64 "
              "tensor with one entry per input row");
  return perm->data_ptr<int64_t>();
}

// [outer, num_entries, inner] view of `t` with the segments along `dim`.
std::tuple<int64_t, int64_t, int64_t> shape3(const at::Tensor& t,
                                             int64_t dim) {
  int64_t outer = 1, inner = 1;
  for (int64_t d = 0; d < dim; ++d) outer *= t.size(d);
  for (int64_t d = dim + 1; d < t.dim(); ++d) inner *= t.size(d);
  return {outer, t.size(dim), inner};
}

// Per-column scratch space: on the stack for a compile-time width W (or up
// to 64 columns), on the heap beyond.
template <typename acc_t, int64_t W>
class Scratch {
 public:
  explicit Scratch(int64_t width) {
    if (!W && width > 64) heap_.resize(width);
    data_ = heap_.empty() ? stack_ : heap_.data();
  }
  acc_t* data() { return data_; }
  acc_t& operator[](int64_t i) { return data_[i]; }

 private:
  acc_t stack_[W ? W : 64];
  std::vector<acc_t> heap_;
  acc_t* data_;
};

// Calls f(std::integral_constant<int64_t, W>) with W = width for the common
// widths (heads), so loops over them unroll and vectorise, else W = 0.
template <typename F>
void dispatch_width(int64_t width, F&& f) {
  switch (width) {
    case 1:
      f(std::integral_constant<int64_t, 1>{});
      break;
    case 2:
      f(std::integral_constant<int64_t, 2>{});
      break;
    case 4:
      f(std::integral_constant<int64_t, 4>{});
      break;
    case 8:
      f(std::integral_constant<int64_t, 8>{});
      break;
    case 16:
      f(std::integral_constant<int64_t, 16>{});
      break;
    default:
      f(std::integral_constant<int64_t, 0>{});
  }
}

// Forward: per segment and column, the maximum m, the sum s of exp(x - m)
// and a count of NaN / +inf entries (which make PyG's whole segment NaN);
// then out = exp(x - m) / (s + 1e-16). State: [m, s, bad] x width.
template <typename scalar_t, int64_t W>
struct SoftmaxForward {
  using acc_t = at::opmath_type<scalar_t>;
  static constexpr acc_t inf = std::numeric_limits<acc_t>::infinity();
  const scalar_t* xs;
  scalar_t* ys;
  const int64_t* perm;
  int64_t width;

  int64_t w() const { return W ? W : width; }
  int64_t row(int64_t pos) const { return (perm ? perm[pos] : pos) * w(); }

  void init(acc_t* st) const {
    std::fill(st, st + w(), -inf);
    std::fill(st + w(), st + 3 * w(), acc_t(0));
  }

  void reduce(acc_t* st, int64_t lo, int64_t hi) const {
    const int64_t n_w = w();
    acc_t* __restrict m = st;
    acc_t* __restrict sum = st + n_w;
    acc_t* __restrict bad = st + 2 * n_w;
    const scalar_t* rows[kTile];
    Scratch<acc_t, W> tile_max(n_w);
    for (int64_t pos = lo; pos < hi; pos += kTile) {
      const int64_t n = std::min(kTile, hi - pos);
      for (int64_t r = 0; r < n; ++r) rows[r] = xs + row(pos + r);
      for (int64_t r = kTile; r < std::min(2 * kTile, hi - pos); ++r)
        prefetch(xs + row(pos + r));
      // One rescale per tile: the tile's maximum first.
      acc_t* __restrict tm = tile_max.data();
      std::copy(m, m + n_w, tm);
      for (int64_t r = 0; r < n; ++r) {
        const scalar_t* __restrict xr = rows[r];
        for (int64_t h = 0; h < n_w; ++h) {
          const acc_t v = static_cast<acc_t>(xr[h]);
          tm[h] = v > tm[h] ? v : tm[h];
          bad[h] += !(v < inf);  // NaN or +inf.
        }
      }
      for (int64_t h = 0; h < n_w; ++h) {
        // A factor exp(-inf) = 0 while the maximum was -inf.
        sum[h] *= tm[h] > m[h] ? exp_approx(m[h] - tm[h]) : acc_t(1);
        m[h] = tm[h];
      }
      for (int64_t r = 0; r < n; ++r) {
        const scalar_t* __restrict xr = rows[r];
        for (int64_t h = 0; h < n_w; ++h) {
          acc_t d = static_cast<acc_t>(xr[h]) - m[h];
          d = d == d ? d : -inf;  // -inf - -inf and NaN add nothing.
          sum[h] += exp_approx(d);
        }
      }
    }
  }

  void merge(acc_t* st, const acc_t* other) const {
    const int64_t n_w = w();
    for (int64_t h = 0; h < n_w; ++h) {
      const acc_t m1 = st[h], m2 = other[h];
      const acc_t mx = m2 > m1 ? m2 : m1;
      if (mx != -inf) {
        st[n_w + h] = st[n_w + h] * exp_approx(m1 - mx) +
                      other[n_w + h] * exp_approx(m2 - mx);
      }
      st[h] = mx;
      st[2 * n_w + h] += other[2 * n_w + h];
    }
  }

  void write(const acc_t* st, int64_t lo, int64_t hi) const {
    const int64_t n_w = w();
    const acc_t nan = std::numeric_limits<acc_t>::quiet_NaN();
    // NaN for a segment with NaN or +inf, or of -inf only, as PyG's
    // exp(x - max) gives there; else multiply by the reciprocal.
    Scratch<acc_t, W> m(n_w), inv(n_w);
    for (int64_t h = 0; h < n_w; ++h) {
      const bool is_nan = st[2 * n_w + h] > 0 || st[h] == -inf;
      m[h] = st[h];
      inv[h] = is_nan ? nan : acc_t(1) / (st[n_w + h] + acc_t(kEps));
    }
    const acc_t* __restrict mm = m.data();
    const acc_t* __restrict ii = inv.data();
    for (int64_t pos = lo; pos < hi; ++pos) {
      if (pos + kTile < hi) prefetch(xs + row(pos + kTile));
      const int64_t r = row(pos);
      const scalar_t* __restrict xr = xs + r;
      scalar_t* __restrict yr = ys + r;
      for (int64_t h = 0; h < n_w; ++h) {
        const acc_t d = static_cast<acc_t>(xr[h]) - mm[h];
        yr[h] = static_cast<scalar_t>(exp_approx(d == d ? d : -inf) * ii[h]);
      }
    }
  }
};

// Backward: per segment and column the dot product of grad and out, then
// grad_src = out * (grad - dot). State: [dot] x width.
template <typename scalar_t, int64_t W>
struct SoftmaxBackward {
  using acc_t = at::opmath_type<scalar_t>;
  const scalar_t* ys;
  const scalar_t* gs;
  scalar_t* dx;
  const int64_t* perm;
  int64_t width;

  int64_t w() const { return W ? W : width; }
  int64_t row(int64_t pos) const { return (perm ? perm[pos] : pos) * w(); }

  void init(acc_t* st) const { std::fill(st, st + w(), acc_t(0)); }

  // Calls f(row offset) for sorted positions lo ... hi - 1, prefetching the
  // rows of `out` and `grad_out` a tile ahead.
  template <typename F>
  void for_rows(int64_t lo, int64_t hi, F&& f) const {
    for (int64_t pos = lo; pos < hi; ++pos) {
      if (pos + kTile < hi) {
        prefetch(gs + row(pos + kTile));
        prefetch(ys + row(pos + kTile));
      }
      f(row(pos));
    }
  }

  void reduce(acc_t* st, int64_t lo, int64_t hi) const {
    const int64_t n_w = w();
    Scratch<acc_t, W> local(n_w);
    acc_t* __restrict dot = local.data();
    std::copy(st, st + n_w, dot);
    for_rows(lo, hi, [&](int64_t r) {
      const scalar_t* __restrict yr = ys + r;
      const scalar_t* __restrict gr = gs + r;
      for (int64_t h = 0; h < n_w; ++h)
        dot[h] += static_cast<acc_t>(gr[h]) * static_cast<acc_t>(yr[h]);
    });
    std::copy(dot, dot + n_w, st);
  }

  void merge(acc_t* st, const acc_t* other) const {
    for (int64_t h = 0; h < w(); ++h) st[h] += other[h];
  }

  void write(const acc_t* st, int64_t lo, int64_t hi) const {
    const int64_t n_w = w();
    Scratch<acc_t, W> local(n_w);
    std::copy(st, st + n_w, local.data());
    const acc_t* __restrict dot = local.data();
    for_rows(lo, hi, [&](int64_t r) {
      const scalar_t* __restrict yr = ys + r;
      const scalar_t* __restrict gr = gs + r;
      scalar_t* __restrict out = dx + r;
      for (int64_t h = 0; h < n_w; ++h) {
        const acc_t y = static_cast<acc_t>(yr[h]);
        out[h] =
            static_cast<scalar_t>(y * (static_cast<acc_t>(gr[h]) - dot[h]));
      }
    });
  }
};

// Scatter-style kernels over an unsorted `index`, for when every thread can
// afford private per-segment accumulators: each thread streams a contiguous
// slice of the entries in their original order (sequential reads and
// writes, no permutation), the private accumulators are merged in thread
// order (deterministic, no atomics), and equal slices balance the work
// whatever the segment sizes. PyG's own formula, exp(x - max) / (sum + eps)
// with NaN-propagating max, gives its NaN conventions unchanged.
struct IndexSlices {
  int64_t num_entries, num_segments, num_slices;
  int64_t begin(int64_t t) const { return t * num_entries / num_slices; }

  // Runs f(t, begin, end) for every slice in parallel.
  template <typename F>
  void parallel(F&& f) const {
    parallel_for(0, num_slices, 1, [&](int64_t t0, int64_t t1) {
      for (int64_t t = t0; t < t1; ++t) f(t, begin(t), begin(t + 1));
    });
  }
};

inline IndexSlices index_slices(const int64_t* index, int64_t num_entries,
                                int64_t num_segments) {
  const int64_t num_slices = std::max<int64_t>(
      1, std::min<int64_t>(at::get_num_threads(), num_entries / kMinChunk));
  IndexSlices slices{num_entries, num_segments, num_slices};
  std::vector<int64_t> bad(num_slices, -1);
  slices.parallel([&](int64_t t, int64_t lo, int64_t hi) {
    for (int64_t e = lo; e < hi; ++e) {
      if (static_cast<uint64_t>(index[e]) >=
          static_cast<uint64_t>(num_segments)) {
        bad[t] = e;
        break;
      }
    }
  });
  for (int64_t e : bad) {
    TORCH_CHECK_INDEX(e < 0, "segment_softmax: index[", e,
                      "] = ", e < 0 ? 0 : index[e], " is out of range for ",
                      num_segments, " segments");
  }
  return slices;
}

// Sums the slices' private [num_segments, width] accumulators into slice 0.
template <typename acc_t, typename Combine>
void merge_slices(std::vector<acc_t>& acc, const IndexSlices& slices,
                  int64_t width, Combine combine) {
  const int64_t size = slices.num_segments * width;
  parallel_for(0, size, 4096, [&](int64_t i0, int64_t i1) {
    for (int64_t t = 1; t < slices.num_slices; ++t) {
      const acc_t* other = acc.data() + t * size;
      for (int64_t i = i0; i < i1; ++i) acc[i] = combine(acc[i], other[i]);
    }
  });
}

template <typename scalar_t, int64_t W>
void softmax_by_index(const scalar_t* xs, scalar_t* ys, const int64_t* index,
                      const IndexSlices& slices, int64_t width) {
  // Three streaming passes, as PyG's formula: per-segment maxima, sums of
  // exp(x - max), then exp(x - max) / (sum + eps). Each slice's state is
  // [segment][max x width, sum x width], so that an entry touches one cache
  // line per pass; the merged maxima are copied into every slice. (A fused
  // online first pass measured slower: it chains dependent exponentials.)
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t n_w = W ? W : width;
  const int64_t row = 2 * n_w;
  const int64_t size = slices.num_segments * row;
  const acc_t inf = std::numeric_limits<acc_t>::infinity();
  std::unique_ptr<acc_t[]> state(new acc_t[slices.num_slices * size]);
  slices.parallel([&](int64_t t, int64_t lo, int64_t hi) {
    acc_t* st = state.get() + t * size;
    for (int64_t i = 0; i < size; i += row) {
      std::fill(st + i, st + i + n_w, -inf);
      std::fill(st + i + n_w, st + i + row, acc_t(0));
    }
    for (int64_t e = lo; e < hi; ++e) {
      if (e + kTile < hi) prefetch(st + index[e + kTile] * row);
      const scalar_t* __restrict xr = xs + e * n_w;
      acc_t* __restrict mr = st + index[e] * row;
      for (int64_t h = 0; h < n_w; ++h) {
        const acc_t v = static_cast<acc_t>(xr[h]);
        mr[h] = (v > mr[h] || v != v) ? v : mr[h];  // NaN propagates.
      }
    }
  });
  auto for_segments = [&](auto f) {
    parallel_for(0, slices.num_segments, 2048, [&](int64_t s0, int64_t s1) {
      for (int64_t i = s0 * row; i < s1 * row; i += row) f(i);
    });
  };
  for_segments([&](int64_t i) {  // Merge the maxima, copy them back.
    acc_t* first = state.get() + i;
    for (int64_t t = 1; t < slices.num_slices; ++t) {
      const acc_t* other = state.get() + t * size + i;
      for (int64_t h = 0; h < n_w; ++h)
        first[h] = (other[h] > first[h] || other[h] != other[h]) ? other[h]
                                                                 : first[h];
    }
    for (int64_t t = 1; t < slices.num_slices; ++t)
      std::copy(first, first + n_w, state.get() + t * size + i);
  });
  slices.parallel([&](int64_t t, int64_t lo, int64_t hi) {
    acc_t* st = state.get() + t * size;
    for (int64_t e = lo; e < hi; ++e) {
      if (e + kTile < hi) prefetch(st + index[e + kTile] * row);
      const scalar_t* __restrict xr = xs + e * n_w;
      acc_t* __restrict mr = st + index[e] * row;
      acc_t* __restrict sr = mr + n_w;
      for (int64_t h = 0; h < n_w; ++h)
        sr[h] += exp_approx(static_cast<acc_t>(xr[h]) - mr[h]);
    }
  });
  for_segments([&](int64_t i) {  // Sum the slices' sums, in slice order.
    acc_t* first = state.get() + i + n_w;
    for (int64_t t = 1; t < slices.num_slices; ++t) {
      const acc_t* other = state.get() + t * size + i + n_w;
      for (int64_t h = 0; h < n_w; ++h) first[h] += other[h];
    }
  });
  slices.parallel([&](int64_t, int64_t lo, int64_t hi) {
    for (int64_t e = lo; e < hi; ++e) {
      if (e + kTile < hi) prefetch(state.get() + index[e + kTile] * row);
      const scalar_t* __restrict xr = xs + e * n_w;
      scalar_t* __restrict yr = ys + e * n_w;
      const acc_t* __restrict mr = state.get() + index[e] * row;
      const acc_t* __restrict sr = mr + n_w;
      for (int64_t h = 0; h < n_w; ++h) {
        yr[h] = static_cast<scalar_t>(
            exp_approx(static_cast<acc_t>(xr[h]) - mr[h]) /
            (sr[h] + acc_t(kEps)));
      }
    }
  });
}

template <typename scalar_t, int64_t W>
void softmax_backward_by_index(const scalar_t* ys, const scalar_t* gs,
                               scalar_t* dx, const int64_t* index,
                               const IndexSlices& slices, int64_t width) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t n_w = W ? W : width;
  const int64_t size = slices.num_segments * n_w;
  std::vector<acc_t> dot(slices.num_slices * size, acc_t(0));
  slices.parallel([&](int64_t t, int64_t lo, int64_t hi) {
    acc_t* dt = dot.data() + t * size;
    for (int64_t e = lo; e < hi; ++e) {
      if (e + kTile < hi) prefetch(dt + index[e + kTile] * n_w);
      const scalar_t* __restrict yr = ys + e * n_w;
      const scalar_t* __restrict gr = gs + e * n_w;
      acc_t* __restrict dr = dt + index[e] * n_w;
      for (int64_t h = 0; h < n_w; ++h)
        dr[h] += static_cast<acc_t>(gr[h]) * static_cast<acc_t>(yr[h]);
    }
  });
  merge_slices(dot, slices, n_w, [](acc_t a, acc_t b) { return a + b; });
  slices.parallel([&](int64_t, int64_t lo, int64_t hi) {
    for (int64_t e = lo; e < hi; ++e) {
      if (e + kTile < hi) prefetch(dot.data() + index[e + kTile] * n_w);
      const scalar_t* __restrict yr = ys + e * n_w;
      const scalar_t* __restrict gr = gs + e * n_w;
      scalar_t* __restrict out = dx + e * n_w;
      const acc_t* __restrict dr = dot.data() + index[e] * n_w;
      for (int64_t h = 0; h < n_w; ++h) {
        const acc_t y = static_cast<acc_t>(yr[h]);
        out[h] =
            static_cast<scalar_t>(y * (static_cast<acc_t>(gr[h]) - dr[h]));
      }
    }
  });
}

const int64_t* checked_index(const at::Tensor& index, int64_t num_entries) {
  TORCH_CHECK(index.dim() == 1 && index.numel() == num_entries &&
                  index.scalar_type() == at::kLong && index.is_contiguous(),
              "segment_softmax: expected 'index' to be a contiguous 1-D int64 "
              "tensor with one entry per input row");
  return index.data_ptr<int64_t>();
}

template <typename Kernel>
void run_segments(const Kernel& k, const int64_t* ptr, int64_t num_segments,
                  int64_t num_entries, int64_t state_size) {
  using acc_t = typename Kernel::acc_t;
  segmented_two_pass<acc_t>(
      ptr, num_segments, num_entries, state_size,
      [&](acc_t* st) { k.init(st); },
      [&](acc_t* st, int64_t lo, int64_t hi) { k.reduce(st, lo, hi); },
      [&](acc_t* st, const acc_t* other) { k.merge(st, other); },
      [&](const acc_t* st, int64_t lo, int64_t hi) { k.write(st, lo, hi); });
}

// Checked, contiguous input of a forward op and its [outer, entries, width]
// shape, with the segments along `dim`.
struct Input {
  at::Tensor t;
  int64_t outer, num_entries, width;
};

Input forward_input(const at::Tensor& src, int64_t dim) {
  TORCH_CHECK(src.device().is_cpu(), "segment_softmax: expected CPU tensors");
  TORCH_CHECK(dim >= 0 && dim < src.dim(), "segment_softmax: invalid dim");
  auto x = src.contiguous();
  auto [outer, num_entries, width] = shape3(x, dim);
  return {x, outer, num_entries, width};
}

// The same for a backward op, returning `out` and `grad_out` as one dtype.
std::pair<Input, at::Tensor> backward_input(const at::Tensor& out,
                                            const at::Tensor& grad_out,
                                            int64_t dim) {
  TORCH_CHECK(out.device().is_cpu() && grad_out.device().is_cpu(),
              "segment_softmax_backward: expected CPU tensors");
  TORCH_CHECK(
      out.sizes() == grad_out.sizes(),
      "segment_softmax_backward: 'out' and 'grad_out' differ in shape");
  TORCH_CHECK(dim >= 0 && dim < out.dim(),
              "segment_softmax_backward: invalid dim");
  auto y = out.contiguous();
  auto [outer, num_entries, width] = shape3(y, dim);
  return {{y, outer, num_entries, width},
          grad_out.to(out.scalar_type()).contiguous()};
}

// Calls f(scalar_t{}, width tag, offset) for each of the `outer` slices of
// `in`, dispatched on its dtype and width.
template <typename F>
void for_each_slice(const Input& in, F&& f) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, in.t.scalar_type(),
                                  "pyg_gat_ext_segment", [&] {
                                    dispatch_width(in.width, [&](auto w) {
                                      for (int64_t o = 0; o < in.outer; ++o)
                                        f(scalar_t{}, w,
                                          o * in.num_entries * in.width);
                                    });
                                  });
}

at::Tensor softmax_segments(const at::Tensor& src, const at::Tensor& ptr,
                            const std::optional<at::Tensor>& perm,
                            int64_t dim) {
  const Input in = forward_input(src, dim);
  auto out = at::empty_like(in.t);
  const int64_t* p = checked_ptr(ptr, in.num_entries);
  const int64_t* q = checked_perm(perm, in.num_entries);
  if (in.width == 0) return out;
  for_each_slice(in, [&](auto s, auto w, int64_t off) {
    using scalar_t = decltype(s);
    SoftmaxForward<scalar_t, decltype(w)::value> k{
        in.t.data_ptr<scalar_t>() + off, out.data_ptr<scalar_t>() + off, q,
        in.width};
    run_segments(k, p, ptr.numel() - 1, in.num_entries, 3 * in.width);
  });
  return out;
}

at::Tensor softmax_backward_segments(const at::Tensor& out,
                                     const at::Tensor& grad_out,
                                     const at::Tensor& ptr,
                                     const std::optional<at::Tensor>& perm,
                                     int64_t dim) {
  const auto [in, g] = backward_input(out, grad_out, dim);
  auto grad_src = at::empty_like(in.t);
  const int64_t* p = checked_ptr(ptr, in.num_entries);
  const int64_t* q = checked_perm(perm, in.num_entries);
  if (in.width == 0) return grad_src;
  for_each_slice(in, [&](auto s, auto w, int64_t off) {
    using scalar_t = decltype(s);
    SoftmaxBackward<scalar_t, decltype(w)::value> k{
        in.t.data_ptr<scalar_t>() + off, g.data_ptr<scalar_t>() + off,
        grad_src.data_ptr<scalar_t>() + off, q, in.width};
    run_segments(k, p, ptr.numel() - 1, in.num_entries, in.width);
  });
  return grad_src;
}

at::Tensor softmax_index(const at::Tensor& src, const at::Tensor& index,
                         int64_t num_segments, int64_t dim) {
  const Input in = forward_input(src, dim);
  auto out = at::empty_like(in.t);
  const int64_t* ix = checked_index(index, in.num_entries);
  if (in.width == 0 || in.num_entries == 0) return out;
  const auto slices = index_slices(ix, in.num_entries, num_segments);
  for_each_slice(in, [&](auto s, auto w, int64_t off) {
    using scalar_t = decltype(s);
    softmax_by_index<scalar_t, decltype(w)::value>(
        in.t.data_ptr<scalar_t>() + off, out.data_ptr<scalar_t>() + off, ix,
        slices, in.width);
  });
  return out;
}

at::Tensor softmax_backward_index(const at::Tensor& out,
                                  const at::Tensor& grad_out,
                                  const at::Tensor& index,
                                  int64_t num_segments, int64_t dim) {
  const auto [in, g] = backward_input(out, grad_out, dim);
  auto grad_src = at::empty_like(in.t);
  const int64_t* ix = checked_index(index, in.num_entries);
  if (in.width == 0 || in.num_entries == 0) return grad_src;
  const auto slices = index_slices(ix, in.num_entries, num_segments);
  for_each_slice(in, [&](auto s, auto w, int64_t off) {
    using scalar_t = decltype(s);
    softmax_backward_by_index<scalar_t, decltype(w)::value>(
        in.t.data_ptr<scalar_t>() + off, g.data_ptr<scalar_t>() + off,
        grad_src.data_ptr<scalar_t>() + off, ix, slices, in.width);
  });
  return grad_src;
}

// The grouping of the entries: by `index` streamed with per-thread segment
// accumulators, when those cost no more than the input itself; else by
// segments of (ptr, perm), built from `index` if only it is given. Sorted
// input (`ptr` alone) and very sparse groupings take the segment path.
bool by_index(const std::optional<at::Tensor>& index,
              const std::optional<at::Tensor>& ptr,
              const std::optional<at::Tensor>& perm, int64_t num_nodes,
              int64_t num_entries) {
  if (!index.has_value() || (ptr.has_value() && !perm.has_value()))
    return false;
  return at::get_num_threads() * num_nodes <= num_entries;
}

std::pair<at::Tensor, std::optional<at::Tensor>> grouping(
    const std::optional<at::Tensor>& index,
    const std::optional<at::Tensor>& ptr,
    const std::optional<at::Tensor>& perm, int64_t num_nodes) {
  if (ptr.has_value()) {
    TORCH_CHECK(ptr->numel() == num_nodes + 1,
                "segment_softmax: 'ptr' must have num_nodes + 1 entries");
    return {*ptr, perm};
  }
  TORCH_CHECK(index.has_value(), "segment_softmax: requires 'index' or 'ptr'");
  auto [p, q] = segment_csr_cpu(*index, num_nodes);
  return {p, q};
}

int64_t entries(const at::Tensor& t, int64_t dim) {
  TORCH_CHECK(dim >= 0 && dim < t.dim(), "segment_softmax: invalid dim");
  return t.size(dim);
}

}  // namespace

at::Tensor segment_softmax_cpu(const at::Tensor& src,
                               const std::optional<at::Tensor>& index,
                               const std::optional<at::Tensor>& ptr,
                               const std::optional<at::Tensor>& perm,
                               int64_t num_nodes, int64_t dim) {
  if (by_index(index, ptr, perm, num_nodes, entries(src, dim)))
    return softmax_index(src, *index, num_nodes, dim);
  const auto [p, q] = grouping(index, ptr, perm, num_nodes);
  return softmax_segments(src, p, q, dim);
}

at::Tensor segment_softmax_backward_cpu(const at::Tensor& out,
                                        const at::Tensor& grad_out,
                                        const std::optional<at::Tensor>& index,
                                        const std::optional<at::Tensor>& ptr,
                                        const std::optional<at::Tensor>& perm,
                                        int64_t num_nodes, int64_t dim) {
  if (by_index(index, ptr, perm, num_nodes, entries(out, dim)))
    return softmax_backward_index(out, grad_out, *index, num_nodes, dim);
  const auto [p, q] = grouping(index, ptr, perm, num_nodes);
  return softmax_backward_segments(out, grad_out, p, q, dim);
}

// Stable counting sort of `index` into (ptr, perm): segment s holds entries
// perm[ptr[s]] .. perm[ptr[s + 1] - 1], in their original order. Threads
// count and place contiguous slices of `index` with per-thread offsets.
std::tuple<at::Tensor, at::Tensor> segment_csr_cpu(const at::Tensor& index,
                                                   int64_t num_nodes) {
  const int64_t num_segments = num_nodes;
  TORCH_CHECK(index.device().is_cpu() && index.dim() == 1,
              "segment_csr: expected a 1-D CPU index");
  TORCH_CHECK(num_segments >= 0, "segment_csr: negative num_segments");
  const auto idx = index.to(at::kLong).contiguous();
  const int64_t n = idx.numel();
  const int64_t* ix = idx.data_ptr<int64_t>();
  auto ptr = at::zeros({num_segments + 1}, idx.options());
  auto perm = at::empty({n}, idx.options());
  if (n == 0) return {ptr, perm};

  int64_t num_slices = std::min<int64_t>(at::get_num_threads(),
                                         std::max<int64_t>(1, n / 65536));
  if (num_slices * (num_segments + 1) > (int64_t(1) << 26)) num_slices = 1;
  auto slice_begin = [&](int64_t t) { return t * n / num_slices; };
  std::vector<int64_t> counts(num_slices * (num_segments + 1), 0);
  std::vector<int64_t> bad(num_slices, -1);

  parallel_for(0, num_slices, 1, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      int64_t* cnt = counts.data() + t * (num_segments + 1);
      for (int64_t e = slice_begin(t); e < slice_begin(t + 1); ++e) {
        const int64_t s = ix[e];
        if (s < 0 || s >= num_segments) {
          bad[t] = e;
          break;
        }
        ++cnt[s];
      }
    }
  });
  for (int64_t t = 0; t < num_slices; ++t) {
    TORCH_CHECK_INDEX(bad[t] < 0, "segment_csr: index[", bad[t],
                      "] = ", bad[t] < 0 ? 0 : ix[bad[t]],
                      " is out of range for ", num_segments, " segments");
  }

  // ptr from the column sums; per-slice write offsets from a scan.
  int64_t* pp = ptr.data_ptr<int64_t>();
  for (int64_t s = 0; s < num_segments; ++s) {
    int64_t offset = pp[s];
    for (int64_t t = 0; t < num_slices; ++t) {
      int64_t& c = counts[t * (num_segments + 1) + s];
      const int64_t count = c;
      c = offset;
      offset += count;
    }
    pp[s + 1] = offset;
  }

  int64_t* pm = perm.data_ptr<int64_t>();
  parallel_for(0, num_slices, 1, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      int64_t* next = counts.data() + t * (num_segments + 1);
      for (int64_t e = slice_begin(t); e < slice_begin(t + 1); ++e)
        pm[next[ix[e]]++] = e;
    }
  });
  return {ptr, perm};
}

}  // namespace pyg_gat_ext
