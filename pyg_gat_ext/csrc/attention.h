// What the CPU kernels of both attention ops (gat_attention.cpp,
// gatv2_attention.cpp) share: the graph and its check, the gathering of a
// node's counted edges, the blocks of nodes that parallel workers take, the
// softmax of a target's scores (saving the log-sum-exp) and the weighted
// sums of gathered rows.
//
// The graph comes grouped twice (see pyg_gat_ext/ops/attention.py): by target
// node (CSR: rowptr, col, csr_eid) and by source node (CSC: colptr, row,
// csc_eid), `eid` mapping a position to the edge id that indexes per-edge
// inputs and the attention weights. Nodes 0 .. num_loops - 1 also have an
// implicit self-loop with edge id E + i; with remove_self_loops, explicit
// edges j -> j do not count.
#pragma once

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "common.h"
#include "dropout.h"
#include "pool.h"

namespace pyg_gat_ext {
namespace attention {

// One grouping of the edges: by target (rowptr, col, csr_eid) or by source
// (colptr, row, csc_eid). Its indices are int32 or int64 (`wide`), a
// run-time property rather than a template parameter: only the gathering
// of a node's edges (NodeEdges::gather) and the prefetching read them, so
// the kernels are compiled once for both index types (half the compile
// time), at the cost of a branch that goes the same way for every edge.
// Entry p of an index array of int64 (`wide`) or int32.
inline int64_t index_at(const void* t, bool wide, int64_t p) {
  return wide ? static_cast<const int64_t*>(t)[p]
              : static_cast<const int32_t*>(t)[p];
}

struct Graph {
  const int64_t* ptr;
  const void* nbr;
  const void* pos_eid;
  bool wide;
  int64_t num_nodes, num_edges, num_loops;
  bool remove_self_loops;

  int64_t nbr_at(int64_t p) const { return index_at(nbr, wide, p); }
  int64_t eid_at(int64_t p) const { return index_at(pos_eid, wide, p); }
};

// Prefetches the cache lines of the `bytes` bytes at `p` (a gathered feature
// row or record; one that starts inside a line may end in one more).
inline void prefetch_row(const void* p, int64_t bytes) {
  const uintptr_t first = reinterpret_cast<uintptr_t>(p) & ~uintptr_t(63);
  const uintptr_t end = reinterpret_cast<uintptr_t>(p) + bytes;
  for (uintptr_t a = first; a < end; a += 64)
    prefetch(reinterpret_cast<const void*>(a));
}

// Edge positions ahead of the current node whose neighbour's rows are
// prefetched. Most nodes have fewer edges than this, so the cursor runs
// ahead across node boundaries: a low-degree node's rows were requested
// while the nodes before it were computed.
constexpr int64_t kAhead = 32;

// Calls `fetch(p)` for the edge positions from `q` up to kAhead past node
// `node`'s last (but not past `end`, the block's), advancing `q`.
template <typename F>
inline void prefetch_ahead(const Graph& g, int64_t node, int64_t end,
                           int64_t& q, F&& fetch) {
  for (const int64_t to = std::min(g.ptr[node + 1] + kAhead, end); q < to; ++q)
    fetch(q);
}

// The counted edges of one node (neighbour, edge id, position in the
// grouping; the implicit self-loop last, at position E + node), gathered
// into per-thread buffers with room for [n, H] scores and weights;
// `skipped(edge id)` is called for each left-out edge.
template <typename acc_t>
struct NodeEdges {
  std::vector<int64_t> nbr, id, pos;
  std::vector<acc_t> z, w;
  int64_t n = 0;

  template <typename S>
  void gather(const Graph& g, int64_t i, int64_t H, S&& skipped) {
    const int64_t lo = g.ptr[i], hi = g.ptr[i + 1];
    const size_t cap = static_cast<size_t>(hi - lo + 1);
    if (nbr.size() < cap) {
      nbr.resize(cap);
      id.resize(cap);
      pos.resize(cap);
      z.resize(cap * H);
      w.resize(cap * H);
    }
    n = 0;
    if (g.wide) {
      collect(g, static_cast<const int64_t*>(g.nbr),
              static_cast<const int64_t*>(g.pos_eid), i, skipped);
    } else {
      collect(g, static_cast<const int32_t*>(g.nbr),
              static_cast<const int32_t*>(g.pos_eid), i, skipped);
    }
    if (i < g.num_loops) {
      nbr[n] = i;
      pos[n] = g.num_edges + i;
      id[n++] = g.num_edges + i;
    }
  }

 private:
  template <typename index_t, typename S>
  void collect(const Graph& g, const index_t* g_nbr, const index_t* g_eid,
               int64_t i, S& skipped) {
    for (int64_t p = g.ptr[i]; p < g.ptr[i + 1]; ++p) {
      const int64_t j = g_nbr[p], e = g_eid[p];
      if (g.remove_self_loops && j == i) {
        skipped(e);
        continue;
      }
      nbr[n] = j;
      pos[n] = p;
      id[n++] = e;
    }
  }
};

// Calls f(std::integral_constant<int, H>) for the head counts that get a
// specialised loop, f(std::integral_constant<int, 0>) for the others.
template <typename F>
void dispatch_heads(int64_t heads, F&& f) {
  switch (heads) {
    case 1:
      return f(std::integral_constant<int, 1>{});
    case 2:
      return f(std::integral_constant<int, 2>{});
    case 4:
      return f(std::integral_constant<int, 4>{});
    case 8:
      return f(std::integral_constant<int, 8>{});
    default:
      return f(std::integral_constant<int, 0>{});
  }
}

// Calls f(scalar_t(), std::integral_constant<int, H>()) for the dtype
// `type` (a floating type) and dispatch_heads' head count.
template <typename F>
void dispatch_kernel(at::ScalarType type, int64_t heads, F&& f) {
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, type, "attention",
      [&] { dispatch_heads(heads, [&](auto ht) { f(scalar_t(), ht); }); });
}

// The cost of a node's work in units of one edge's: its implicit self-loop
// and its output row, written whatever its degree.
constexpr int64_t kNodeCost = 2;

// The bounds of at most `max_blocks` ranges of nodes with about equal work,
// an edge's for each edge plus kNodeCost per node (and at least about 2048
// edges and nodes each). By edges alone, a sampled subgraph's last block
// held every node without edges of its own: NeighborLoader puts the seeds
// and nearest hops first, and the outer hop (most of the nodes) receives
// no edges, so one thread did three times the other's work.
inline std::vector<int64_t> node_blocks(const int64_t* ptr, int64_t num_nodes,
                                        int64_t max_blocks) {
  const int64_t num_edges = ptr[num_nodes];
  const int64_t target = std::max<int64_t>(
      1, std::min<int64_t>(max_blocks, (num_edges + num_nodes) / 2048 + 1));
  const int64_t total = num_edges + kNodeCost * num_nodes;
  std::vector<int64_t> bounds{0};
  for (int64_t b = 1; b < target; ++b) {
    const int64_t want = total * b / target;
    // The first node whose work before it reaches `want` (work is
    // increasing in the node).
    int64_t lo = 0, hi = num_nodes;
    while (lo < hi) {
      const int64_t mid = lo + (hi - lo) / 2;
      if (ptr[mid] + kNodeCost * mid < want) lo = mid + 1; else hi = mid;
    }
    if (lo > bounds.back() && lo < num_nodes) bounds.push_back(lo);
  }
  bounds.push_back(num_nodes);
  return bounds;
}

// f(b, begin, end) for every block b of `bounds`, in parallel.
template <typename F>
void parallel_blocks(const std::vector<int64_t>& bounds, F&& f) {
  parallel_for(0, bounds.size() - 1, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) f(b, bounds[b], bounds[b + 1]);
  });
}

// f(begin, end) over node_blocks' ranges of about equal work, several per
// thread (at::parallel_for hands each thread a contiguous run of them).
template <typename F>
void parallel_nodes(const int64_t* ptr, int64_t num_nodes, F&& f) {
  parallel_blocks(node_blocks(ptr, num_nodes, 8 * at::get_num_threads()),
                  [&](int64_t, int64_t i0, int64_t i1) { f(i0, i1); });
}

// The graph of an attention op, checked (check_graph) and contiguous.
struct GraphInputs {
  at::Tensor rowptr, col, csr_eid, colptr, row, csc_eid;
  int64_t num_src, num_dst, num_edges, num_loops;

  Graph by_target(bool skip) const {
    return {rowptr.data_ptr<int64_t>(),
            col.data_ptr(),
            csr_eid.data_ptr(),
            col.scalar_type() == at::kLong,
            num_dst,
            num_edges,
            num_loops,
            skip};
  }
  Graph by_source(bool skip) const {
    return {colptr.data_ptr<int64_t>(),
            row.data_ptr(),
            csc_eid.data_ptr(),
            row.scalar_type() == at::kLong,
            num_src,
            num_edges,
            num_loops,
            skip};
  }
};

// Checks the graph of attention op `op` for `num_src` source nodes. A
// corrupt grouping must not send a kernel out of bounds: pointers run from
// 0 to E without decreasing and indices lie in range (linear scans, cheap
// next to the E * H * C work of the kernels). This is the only check of a
// graph's contents on the C++ path: the Python front (ops/attention.py,
// _check_graph) leaves it to this function, with the same errors.
inline GraphInputs check_graph(const char* op, int64_t num_src,
                               const at::Tensor& rowptr, const at::Tensor& col,
                               const at::Tensor& csr_eid,
                               const at::Tensor& colptr, const at::Tensor& row,
                               const at::Tensor& csc_eid, int64_t num_loops) {
  GraphInputs in;
  in.num_src = num_src;
  in.num_dst = rowptr.numel() - 1;
  in.num_edges = col.numel();
  in.num_loops = num_loops;
  TORCH_CHECK_TYPE(
      rowptr.scalar_type() == at::kLong && colptr.scalar_type() == at::kLong,
      op, ": 'graph.rowptr' and 'graph.colptr' must be int64 (got ",
      rowptr.scalar_type(), " and ", colptr.scalar_type(), ")");
  TORCH_CHECK(colptr.numel() == in.num_src + 1 && in.num_dst >= 0, op,
              ": colptr must have N_src + 1 entries");
  TORCH_CHECK(csr_eid.numel() == in.num_edges && row.numel() == in.num_edges &&
                  csc_eid.numel() == in.num_edges,
              op, ": the index tensors differ in length");
  const auto index_type = col.scalar_type();
  TORCH_CHECK((index_type == at::kInt || index_type == at::kLong) &&
                  csr_eid.scalar_type() == index_type &&
                  row.scalar_type() == index_type &&
                  csc_eid.scalar_type() == index_type,
              op,
              ": col, csr_eid, row and csc_eid must share one integer type "
              "(int32 or int64)");
  TORCH_CHECK(num_loops >= 0 && num_loops <= std::min(in.num_src, in.num_dst),
              op, ": num_loops out of range");
  in.rowptr = rowptr.contiguous();
  in.col = col.contiguous();
  in.csr_eid = csr_eid.contiguous();
  in.colptr = colptr.contiguous();
  in.row = row.contiguous();
  in.csc_eid = csc_eid.contiguous();
  const std::pair<const char*, const at::Tensor*> pointers[] = {
      {"rowptr", &in.rowptr}, {"colptr", &in.colptr}};
  for (const auto& [name, p] : pointers) {
    const int64_t* d = p->data_ptr<int64_t>();
    const int64_t n = p->numel();
    int64_t drops = 0;
    for (int64_t k = 1; k < n; ++k) drops += d[k - 1] > d[k];
    TORCH_CHECK_VALUE(
        d[0] == 0 && d[n - 1] == in.num_edges && drops == 0, op, ": 'graph.",
        name, "' must start at 0, end at the number of edges (", in.num_edges,
        ") and never decrease (got ", name, "[0]=", d[0], ", ", name,
        "[-1]=", d[n - 1], ", ", drops, " decreasing steps)");
  }
  AT_DISPATCH_INDEX_TYPES(index_type, "check_graph", [&] {
    const std::tuple<const char*, const at::Tensor*, int64_t> ranges[] = {
        {"col", &in.col, in.num_src},
        {"csr_eid", &in.csr_eid, in.num_edges},
        {"row", &in.row, in.num_dst},
        {"csc_eid", &in.csc_eid, in.num_edges}};
    for (const auto& [name, t, bound] : ranges) {
      if (in.num_edges == 0) continue;
      const index_t* d = t->data_ptr<index_t>();
      index_t low = d[0], high = d[0];  // A loop that vectorises.
      for (int64_t k = 1; k < in.num_edges; ++k) {
        low = std::min(low, d[k]);
        high = std::max(high, d[k]);
      }
      TORCH_CHECK_INDEX(low >= 0 && static_cast<int64_t>(high) < bound, op,
                        ": 'graph.", name, "' holds indices in [", low, ", ",
                        high, "], out of range for [0, ", bound, ")");
    }
  });
  return in;
}

// The outputs of an attention op's forward for source rows `x` [N_src, H,
// C]: out [N_dst, H, C] like x, lse [N_dst, H] in x's op math type and the
// weights [E + num_loops, H] by edge id (or [0, H]).
inline std::tuple<at::Tensor, at::Tensor, at::Tensor> forward_outputs(
    const GraphInputs& g, const at::Tensor& x, bool return_attention_weights) {
  const int64_t H = x.size(1);
  const auto acc_type = at::toOpMathType(x.scalar_type());
  return {
      empty_pooled({g.num_dst, H, x.size(2)}, x.options()),
      at::empty({g.num_dst, H}, x.options().dtype(acc_type)),
      at::empty({return_attention_weights ? g.num_edges + g.num_loops : 0, H},
                x.options())};
}

// The gradient-side inputs of an attention op's backward, checked against
// the source rows `x` and made contiguous in x's dtype (lse in its op math
// type); grad_alpha is absent when not given or empty.
struct GradInputs {
  at::Tensor grad_out, lse;
  std::optional<at::Tensor> grad_alpha;
};

inline GradInputs check_grads(const char* op, const GraphInputs& g,
                              const at::Tensor& x, const at::Tensor& grad_out,
                              const at::Tensor& lse,
                              const std::optional<at::Tensor>& grad_alpha) {
  const int64_t H = x.size(1), C = x.size(2);
  const auto acc_type = at::toOpMathType(x.scalar_type());
  TORCH_CHECK_VALUE(grad_out.sizes() == at::IntArrayRef({g.num_dst, H, C}), op,
                    ": grad_out must be [N_dst, H, C] (got ", grad_out.sizes(),
                    ")");
  TORCH_CHECK_VALUE(lse.sizes() == at::IntArrayRef({g.num_dst, H}), op,
                    ": lse must be [N_dst, H] (got ", lse.sizes(), ")");
  TORCH_CHECK_TYPE(lse.scalar_type() == acc_type, op, ": lse must be ",
                   acc_type, " (got ", lse.scalar_type(), ")");
  GradInputs in{grad_out.to(x.scalar_type()).contiguous(), lse.contiguous(),
                std::nullopt};
  if (grad_alpha.has_value() && grad_alpha->numel() > 0) {
    TORCH_CHECK_VALUE(
        grad_alpha->sizes() == at::IntArrayRef({g.num_edges + g.num_loops, H}),
        op, ": grad_alpha must be [E + num_loops, H] (got ",
        grad_alpha->sizes(), ")");
    in.grad_alpha = grad_alpha->to(x.scalar_type()).contiguous();
  }
  return in;
}

// LeakyReLU of a value or lane-wise of a vector (lanes_t): exactly z or
// z * slope, NaN preserved; branch-free for a value, so that loops over
// heads or channels vectorise (both ops' scores).
template <typename V, typename acc_t>
inline V leaky_relu(V z, acc_t slope) {
  if constexpr (std::is_arithmetic_v<V>) {
    return std::max(z, acc_t(0)) + slope * std::min(z, acc_t(0));
  } else {
    return z > acc_t(0) ? z : z * slope;
  }
}

// The loops of softmax_weights over a node's [n, H] scores: for a head
// count known at compile time, one vector (lanes_t) per edge; GCC had left
// them scalar, about 15 instructions per head and edge for the maximum
// alone. `score` takes a value or such a vector.
//
// m[h] = max_k score(z[k, h]) and nan[h] = the number of NaN scores.
template <int HT, typename acc_t, typename S>
void score_max(const acc_t* __restrict z, int64_t n, int64_t heads,
               const S& score, acc_t* __restrict m, acc_t* __restrict nan) {
  const int64_t H = HT > 0 ? HT : heads;
  if constexpr (HT > 0) {
    using V = lanes_t<acc_t, HT>;
    V mv = V{} - std::numeric_limits<acc_t>::infinity(), nv = V{};
    for (int64_t k = 0; k < n; ++k) {
      const V e = score(load_lanes<HT>(z + k * HT));
      mv = e > mv ? e : mv;
      nv += e != e ? V{} + 1 : V{};
    }
    store_lanes<HT>(m, mv);
    store_lanes<HT>(nan, nv);
    return;
  }
  std::fill(m, m + H, -std::numeric_limits<acc_t>::infinity());
  std::fill(nan, nan + H, acc_t(0));
  for (int64_t k = 0; k < n; ++k)
    for (int64_t h = 0; h < H; ++h) {
      const acc_t e = score(z[k * H + h]);
      m[h] = std::max(m[h], e);
      nan[h] += e != e ? acc_t(1) : acc_t(0);
    }
}

// w[k, h] = exp(score(z[k, h]) - ref[h]) and their sums s[h].
template <int HT, typename acc_t, typename S>
void score_exp(const acc_t* __restrict z, int64_t n, int64_t heads,
               const S& score, const acc_t* __restrict ref,
               acc_t* __restrict w, acc_t* __restrict s) {
  const int64_t H = HT > 0 ? HT : heads;
  if constexpr (HT > 0) {
    using V = lanes_t<acc_t, HT>;
    const V r = load_lanes<HT>(ref);
    V sv{};
    for (int64_t k = 0; k < n; ++k) {
      const V e = exp_lanes<HT, acc_t>(score(load_lanes<HT>(z + k * HT)) - r);
      store_lanes<HT>(w + k * HT, e);
      sv += e;
    }
    store_lanes<HT>(s, sv);
    return;
  }
  std::fill(s, s + H, acc_t(0));
  for (int64_t k = 0; k < n; ++k)
    for (int64_t h = 0; h < H; ++h) {
      w[k * H + h] = exp_approx(score(z[k * H + h]) - ref[h]);
      s[h] += w[k * H + h];
    }
}

// w[h] *= f[h].
template <int HT, typename acc_t>
inline void scale_heads(acc_t* __restrict w, const acc_t* __restrict f,
                        int64_t heads) {
  if constexpr (HT > 0) {
    store_lanes<HT>(w, load_lanes<HT>(w) * load_lanes<HT>(f));
  } else {
    for (int64_t h = 0; h < heads; ++h) w[h] *= f[h];
  }
}

// The forward softmax of one target's gathered edges: with e = score(z)
// for the stored z[k, h], lse[h] = log sum_k exp e (saved; -inf without
// edges) and w[k, h] = exp(e - lse[h]) times the dropout factor of the
// edge, also written to `weights` (by edge id, if not null);
// `on_alpha(k, w)` sees each edge's weights before the dropout factor.
// `scratch` holds 3 H values. NaN scores make the whole row NaN, as in PyG.
template <int HT, typename acc_t, typename scalar_t, typename S, typename A>
void softmax_weights(NodeEdges<acc_t>& ne, int64_t heads, S&& score,
                     const Dropout& drop, acc_t* lse, scalar_t* weights,
                     acc_t* scratch, A&& on_alpha) {
  const int64_t H = HT > 0 ? HT : heads, n = ne.n;
  constexpr acc_t inf = std::numeric_limits<acc_t>::infinity();
  acc_t* m = scratch;
  acc_t* s = scratch + H;
  acc_t* f = scratch + 2 * H;
  // One edge with finite scores (a node with only its self-loop: most of a
  // sampled subgraph's nodes): lse = e and weights 1, what the general path
  // gives exactly (exp 0 = 1, log 1 = 0) without its exp, log and division.
  bool single = n == 1;
  for (int64_t h = 0; single && h < H; ++h) {
    const acc_t e = score(ne.z[h]);
    single = e - e == acc_t(0);
    lse[h] = e;
  }
  if (single) {
    std::fill(ne.w.data(), ne.w.data() + H, acc_t(1));
    std::fill(s, s + H, acc_t(1));
  } else {
    score_max<HT>(ne.z.data(), n, H, score, m, s);  // s: NaN counts.
    for (int64_t h = 0; h < H; ++h) {
      // The reference point of the exponentials; NaN makes all NaN.
      lse[h] = s[h] > acc_t(0)
                   ? s[h] * std::numeric_limits<acc_t>::quiet_NaN()
               : m[h] == -inf ? acc_t(0)
                              : m[h];
    }
    score_exp<HT>(ne.z.data(), n, H, score, static_cast<const acc_t*>(lse),
                  ne.w.data(), s);
    for (int64_t h = 0; h < H; ++h) {
      lse[h] = s[h] == acc_t(0) ? -inf : lse[h] + std::log(s[h]);
      s[h] = acc_t(1) / s[h];
    }
  }
  for (int64_t k = 0; k < n; ++k) {
    acc_t* w = ne.w.data() + k * H;
    scale_heads<HT>(w, static_cast<const acc_t*>(s), H);
    on_alpha(k, static_cast<const acc_t*>(w));
    if (drop.active) {
      drop.factors(ne.id[k], H, f);
      scale_heads<HT>(w, static_cast<const acc_t*>(f), H);
    }
    if (weights)
      for (int64_t h = 0; h < H; ++h)
        weights[ne.id[k] * H + h] = static_cast<scalar_t>(w[h]);
  }
}

// Where head h's weighted row goes in add_weighted_row's `acc`: the second
// [H, C] block (offset HC) where the edge's raw scores `z` are given and
// !(z[h] > 0), NaN included; else the first.
template <typename acc_t>
inline int64_t sign_block(const acc_t* z, int64_t h, int64_t HC) {
  return z && !(z[h] > acc_t(0)) ? HC : 0;
}

// acc[h, c] += w[h] * row[h, c] for float rows whose head width C is a
// multiple of L, L lanes at a time in explicit vectors (see
// add_weighted_row), into the second [H, C] block of `acc` for the heads
// with !(z[h] > 0) where `z` is given.
template <int L, int HT>
inline void add_weighted_lanes(float* __restrict acc, const float* w,
                               const float* __restrict row, int64_t heads,
                               int64_t C, const float* z) {
  using V = lanes_t<float, L>;
  const int64_t H = HT > 0 ? HT : heads;
  for (int64_t h = 0; h < H; ++h) {
    float* __restrict ah = acc + sign_block(z, h, H * C) + h * C;
    const float* __restrict rh = row + h * C;
    const V wh = V{} + w[h];
    for (int64_t c = 0; c < C; c += L)
      store_lanes<L>(ah + c, load_lanes<L>(ah + c) + wh * load_lanes<L>(rh + c));
  }
}

// acc[h, c] += w[h] * row[h, c]: a gathered [H, C] row weighted per head.
// With `z` (the edge's raw scores), `acc` holds two [H, C] blocks and row
// h goes to the first where z[h] > 0, to the second elsewhere (NaN too).
// `acc` aliases neither `w` nor `row`. Float rows whose head width C is a
// multiple of 8 take 16 or 8 lanes at a time in explicit vectors: the
// compiler's own vectorisation of the loop over a run-time C (several
// versions and a remainder per head) cost about a third of the forward at
// C = 8, a common width. Each lane adds its terms in edge order either
// way.
template <int HT, typename scalar_t, typename acc_t>
inline void add_weighted_row(acc_t* __restrict acc, const acc_t* w,
                             const scalar_t* __restrict row, int64_t heads,
                             int64_t C, const acc_t* z = nullptr) {
  const int64_t H = HT > 0 ? HT : heads;
  if constexpr (std::is_same_v<scalar_t, float> &&
                std::is_same_v<acc_t, float>) {
    if (C % 16 == 0) return add_weighted_lanes<16, HT>(acc, w, row, H, C, z);
    if (C % 8 == 0) return add_weighted_lanes<8, HT>(acc, w, row, H, C, z);
  }
  for (int64_t h = 0; h < H; ++h) {
    acc_t* __restrict ah = acc + sign_block(z, h, H * C) + h * C;
    const scalar_t* __restrict rh = row + h * C;
    const acc_t wh = w[h];
    for (int64_t c = 0; c < C; ++c) ah[c] += wh * static_cast<acc_t>(rh[c]);
  }
}

// acc[c] += acc[HC + c]: the two blocks of add_weighted_row's `acc` summed
// into the first.
template <typename acc_t>
inline void sum_blocks(acc_t* __restrict acc, int64_t HC) {
  for (int64_t c = 0; c < HC; ++c) acc[c] += acc[HC + c];
}

// 8 sums of 8 floats, t[8 h .. 8 h + 7] into out[h], in three rounds of
// pairwise additions across the 8 rows at once (a transposed reduction):
// 9 vector instructions where 8 horizontal sums take about 50.
#if defined(__AVX__)
inline void sum_8x8(float* out, const float* t) {
  __m256 r[8];
  for (int k = 0; k < 8; ++k) r[k] = _mm256_loadu_ps(t + 8 * k);
  // hadd(a, b) = [a01, a23, b01, b23, a45, a67, b45, b67] (aNM = aN + aM).
  const __m256 ab =
      _mm256_hadd_ps(_mm256_hadd_ps(r[0], r[1]), _mm256_hadd_ps(r[2], r[3]));
  const __m256 cd =
      _mm256_hadd_ps(_mm256_hadd_ps(r[4], r[5]), _mm256_hadd_ps(r[6], r[7]));
  // ab = [r0 0123, r1 0123, r2 0123, r3 0123, r0 4567, ..., r3 4567].
  _mm256_storeu_ps(out, _mm256_add_ps(_mm256_permute2f128_ps(ab, cd, 0x20),
                                      _mm256_permute2f128_ps(ab, cd, 0x31)));
}
#endif

// out[h] = sum_{c < C} term(h C + c) for every head: for 8 heads of 8
// float channels (a common layout) the terms of all heads at once, then
// sum_8x8; else lane_sum per head. Either order depends on H and C only.
template <int HT, typename acc_t, typename T>
inline void head_sums(acc_t* out, int64_t heads, int64_t C, T&& term) {
#if defined(__AVX__)
  if constexpr (HT == 8 && std::is_same_v<acc_t, float>) {
    if (C == 8) {
      alignas(32) float t[64];
      for (int64_t k = 0; k < 64; ++k) t[k] = term(k);
      sum_8x8(out, t);
      return;
    }
  }
#endif
  const int64_t H = HT > 0 ? HT : heads;
  for (int64_t h = 0; h < H; ++h)
    out[h] = lane_sum<acc_t>(C, [&](int64_t c) { return term(h * C + c); });
}

// out[h] = <a[h], b[h]> for [H, C] rows a and b (in head_sums' order;
// a and b of the op math type or rounded to it).
template <int HT, typename acc_t, typename a_t, typename b_t>
inline void head_dots(acc_t* out, const a_t* a, const b_t* b, int64_t heads,
                      int64_t C) {
  head_sums<HT>(out, heads, C, [&](int64_t k) {
    return static_cast<acc_t>(a[k]) * static_cast<acc_t>(b[k]);
  });
}

}  // namespace attention
}  // namespace pyg_gat_ext
