// CPU kernels of the fused GAT attention: forward and backward, without
// ever forming the [E, H, C] messages.
//
// The graph comes grouped twice (see pyg_gat_ext/ops/attention.py): by target
// node (CSR: rowptr, col, csr_eid) and by source node (CSC: colptr, row,
// csc_eid),
// `eid` mapping a position to the edge id that indexes the edge scores and
// the attention weights. Nodes 0 .. num_loops - 1 also have an implicit
// self-loop with edge id E + i; with remove_self_loops, explicit edges j -> j
// do not count. The forward pass saves only the per-(node, head)
// log-sum-exp of the scores; the backward pass recomputes the attention from
// it: a pass over targets for the target-side gradients, then a pass over
// sources (recomputing the attention again) for the source-side gradients,
// storing nothing per edge, so that no gradient is accumulated with atomics
// and the result does not depend on the thread count. Dropout
// factors come from a counter-based hash of (seed, edge id, head),
// regenerated in the backward pass and never stored.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>
#include <type_traits>
#include <vector>

#include "common.h"
#include "dropout.h"
#include "kernels.h"

namespace pyg_gat_ext {
namespace {

// One grouping of the edges: by target (rowptr, col, csr_eid) or by source
// (colptr, row, csc_eid). Its indices are int32 or int64 (`wide`), a
// run-time property rather than a template parameter: only the gathering
// of a node's edges (NodeEdges::gather) and the prefetching read them, so
// the kernels are compiled once for both index types (half the compile
// time), at the cost of a branch that goes the same way for every edge.
struct Graph {
  const int64_t* ptr;
  const void* nbr;
  const void* pos_eid;
  bool wide;
  int64_t num_nodes, num_edges, num_loops;
  bool remove_self_loops;

  int64_t nbr_at(int64_t p) const {
    return wide ? static_cast<const int64_t*>(nbr)[p]
                : static_cast<const int32_t*>(nbr)[p];
  }
};

// Prefetches the `bytes` bytes at `p` (a gathered feature row).
inline void prefetch_row(const void* p, int64_t bytes) {
  const char* c = static_cast<const char*>(p);
  for (int64_t b = 0; b < bytes; b += 64) prefetch(c + b);
}

// Edge positions ahead of the current node whose neighbour's rows are
// prefetched. Most nodes have fewer edges than this, so the cursor runs
// ahead across node boundaries: a low-degree node's rows were requested
// while the nodes before it were computed.
constexpr int64_t kAhead = 32;

// The counted edges of one node (neighbour, edge id), the implicit
// self-loop last, gathered into per-thread buffers with room for [n, H]
// scores and weights; `skipped(edge id)` is called for each left-out
// edge.
template <typename acc_t>
struct NodeEdges {
  std::vector<int64_t> nbr, id;
  std::vector<acc_t> z, w;
  int64_t n = 0;

  template <typename S>
  void gather(const Graph& g, int64_t i, int64_t H, S&& skipped) {
    const int64_t lo = g.ptr[i], hi = g.ptr[i + 1];
    const size_t cap = static_cast<size_t>(hi - lo + 1);
    if (nbr.size() < cap) {
      nbr.resize(cap);
      id.resize(cap);
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

// The ranges of nodes that parallel workers take: about equal edge counts,
// several per thread so that a skewed degree distribution still balances.
std::vector<int64_t> node_blocks(const int64_t* ptr, int64_t num_nodes) {
  const int64_t num_edges = ptr[num_nodes];
  const int64_t target = std::max<int64_t>(
      1, std::min<int64_t>(8 * at::get_num_threads(),
                           (num_edges + num_nodes) / 2048 + 1));
  std::vector<int64_t> bounds{0};
  for (int64_t b = 1; b < target; ++b) {
    const int64_t want = num_edges * b / target;
    const int64_t i = std::lower_bound(ptr, ptr + num_nodes + 1, want) - ptr;
    if (i > bounds.back() && i < num_nodes) bounds.push_back(i);
  }
  bounds.push_back(num_nodes);
  return bounds;
}

template <typename F>
void parallel_nodes(const int64_t* ptr, int64_t num_nodes, F&& f) {
  const auto bounds = node_blocks(ptr, num_nodes);
  parallel_for(0, bounds.size() - 1, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) f(bounds[b], bounds[b + 1]);
  });
}

struct Inputs {
  at::Tensor x, a_src, a_dst, rowptr, col, csr_eid, colptr, row, csc_eid;
  std::optional<at::Tensor> edge_score;
  int64_t num_src, num_dst, heads, channels, num_edges, num_loops;
};

Inputs check_inputs(const at::Tensor& x, const at::Tensor& a_src,
                    const at::Tensor& a_dst,
                    const std::optional<at::Tensor>& edge_score,
                    const at::Tensor& rowptr, const at::Tensor& col,
                    const at::Tensor& csr_eid, const at::Tensor& colptr,
                    const at::Tensor& row, const at::Tensor& csc_eid,
                    int64_t num_loops) {
  TORCH_CHECK(x.dim() == 3, "gat_attention: x must be [N_src, H, C]");
  Inputs in;
  in.num_src = x.size(0);
  in.heads = x.size(1);
  in.channels = x.size(2);
  in.num_dst = rowptr.numel() - 1;
  in.num_edges = col.numel();
  in.num_loops = num_loops;
  TORCH_CHECK_TYPE(
      rowptr.scalar_type() == at::kLong && colptr.scalar_type() == at::kLong,
      "gat_attention: 'graph.rowptr' and 'graph.colptr' must be int64 (got ",
      rowptr.scalar_type(), " and ", colptr.scalar_type(), ")");
  TORCH_CHECK(colptr.numel() == in.num_src + 1 && in.num_dst >= 0,
              "gat_attention: colptr must have N_src + 1 entries");
  TORCH_CHECK(csr_eid.numel() == in.num_edges && row.numel() == in.num_edges &&
                  csc_eid.numel() == in.num_edges,
              "gat_attention: the index tensors differ in length");
  const auto index_type = col.scalar_type();
  TORCH_CHECK((index_type == at::kInt || index_type == at::kLong) &&
                  csr_eid.scalar_type() == index_type &&
                  row.scalar_type() == index_type &&
                  csc_eid.scalar_type() == index_type,
              "gat_attention: col, csr_eid, row and csc_eid must share one "
              "integer type "
              "(int32 or int64)");
  TORCH_CHECK(a_src.sizes() == at::IntArrayRef({in.num_src, in.heads}) &&
                  a_dst.sizes() == at::IntArrayRef({in.num_dst, in.heads}),
              "gat_attention: a_src must be [N_src, H], a_dst [N_dst, H]");
  TORCH_CHECK(num_loops >= 0 && num_loops <= std::min(in.num_src, in.num_dst),
              "gat_attention: num_loops out of range");
  if (edge_score.has_value()) {
    TORCH_CHECK(edge_score->sizes() ==
                    at::IntArrayRef({in.num_edges + num_loops, in.heads}),
                "gat_attention: edge_score must be [E + num_loops, H]");
    in.edge_score = edge_score->contiguous();
  }
  in.x = x.contiguous();
  in.a_src = a_src.contiguous();
  in.a_dst = a_dst.contiguous();
  in.rowptr = rowptr.contiguous();
  in.col = col.contiguous();
  in.csr_eid = csr_eid.contiguous();
  in.colptr = colptr.contiguous();
  in.row = row.contiguous();
  in.csc_eid = csc_eid.contiguous();
  // A corrupt grouping must not send a kernel out of bounds: pointers run
  // from 0 to E without decreasing and indices lie in range (linear scans,
  // cheap next to the E * H * C work of the kernels). This is the only
  // check of a graph's contents on the C++ path: the Python front
  // (ops/attention.py) leaves it to this function, with the same errors.
  const std::pair<const char*, const at::Tensor*> pointers[] = {
      {"rowptr", &in.rowptr}, {"colptr", &in.colptr}};
  for (const auto& [name, p] : pointers) {
    const int64_t* d = p->data_ptr<int64_t>();
    const int64_t n = p->numel();
    int64_t drops = 0;
    for (int64_t k = 1; k < n; ++k) drops += d[k - 1] > d[k];
    TORCH_CHECK_VALUE(d[0] == 0 && d[n - 1] == in.num_edges && drops == 0,
                      "gat_attention: 'graph.", name,
                      "' must start at 0, end at the number of edges (",
                      in.num_edges, ") and never decrease (got ", name,
                      "[0]=", d[0], ", ", name, "[-1]=", d[n - 1], ", ", drops,
                      " decreasing steps)");
  }
  AT_DISPATCH_INDEX_TYPES(index_type, "gat_attention", [&] {
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
      TORCH_CHECK_INDEX(low >= 0 && static_cast<int64_t>(high) < bound,
                        "gat_attention: 'graph.", name, "' holds indices in [",
                        low, ", ", high, "], out of range for [0, ", bound,
                        ")");
    }
  });
  return in;
}

// The score of edge (j -> i) with id `id` for head h, before the LeakyReLU.
template <typename scalar_t, typename acc_t>
struct Scores {
  const scalar_t* a_src;
  const scalar_t* a_dst;
  const scalar_t* edge_score;  // nullptr if absent.
  int64_t heads;
  acc_t slope;

  acc_t raw(int64_t j, int64_t i, int64_t id, int64_t h) const {
    acc_t z = static_cast<acc_t>(a_src[j * heads + h]) +
              static_cast<acc_t>(a_dst[i * heads + h]);
    if (edge_score) z += static_cast<acc_t>(edge_score[id * heads + h]);
    return z;
  }
  // Branch-free (so that loops over heads vectorise), exactly z or
  // z * slope, NaN preserved.
  acc_t leaky(acc_t z) const {
    return std::max(z, acc_t(0)) + slope * std::min(z, acc_t(0));
  }
};

Graph by_target(const Inputs& in, bool skip) {
  return {in.rowptr.data_ptr<int64_t>(),
          in.col.data_ptr(),
          in.csr_eid.data_ptr(),
          in.col.scalar_type() == at::kLong,
          in.num_dst,
          in.num_edges,
          in.num_loops,
          skip};
}

Graph by_source(const Inputs& in, bool skip) {
  return {in.colptr.data_ptr<int64_t>(),
          in.row.data_ptr(),
          in.csc_eid.data_ptr(),
          in.row.scalar_type() == at::kLong,
          in.num_src,
          in.num_edges,
          in.num_loops,
          skip};
}

template <typename scalar_t, typename acc_t>
Scores<scalar_t, acc_t> scores_of(const Inputs& in, double negative_slope) {
  return {in.a_src.data_ptr<scalar_t>(), in.a_dst.data_ptr<scalar_t>(),
          in.edge_score ? in.edge_score->data_ptr<scalar_t>() : nullptr,
          in.heads, static_cast<acc_t>(negative_slope)};
}

// The raw scores z[k, h] of the gathered edges of `node`, which is their
// target (`as_target`) or their source.
template <int HT, typename scalar_t, typename acc_t>
void raw_scores(const Scores<scalar_t, acc_t>& sc, NodeEdges<acc_t>& ne,
                int64_t node, bool as_target) {
  const int64_t H = HT > 0 ? HT : sc.heads;
  const scalar_t* own = (as_target ? sc.a_dst : sc.a_src) + node * H;
  const scalar_t* other = as_target ? sc.a_src : sc.a_dst;
  for (int64_t k = 0; k < ne.n; ++k) {
    const scalar_t* o = other + ne.nbr[k] * H;
    acc_t* z = ne.z.data() + k * H;
    for (int64_t h = 0; h < H; ++h)
      z[h] = static_cast<acc_t>(own[h]) + static_cast<acc_t>(o[h]);
    if (sc.edge_score) {
      const scalar_t* es = sc.edge_score + ne.id[k] * H;
      for (int64_t h = 0; h < H; ++h) z[h] += static_cast<acc_t>(es[h]);
    }
  }
}

// w[k, h] = alpha = exp(LeakyReLU(z[k, h]) - lse[h]) (before dropout), lse
// being per head or, for `lse_rows`, the row of each gathered neighbour.
template <int HT, typename scalar_t, typename acc_t>
void attention(const Scores<scalar_t, acc_t>& sc, NodeEdges<acc_t>& ne,
               const acc_t* lse, bool lse_rows) {
  const int64_t H = HT > 0 ? HT : sc.heads;
  for (int64_t k = 0; k < ne.n; ++k) {
    const acc_t* l = lse_rows ? lse + ne.nbr[k] * H : lse;
    const acc_t* z = ne.z.data() + k * H;
    acc_t* w = ne.w.data() + k * H;
    for (int64_t h = 0; h < H; ++h) w[h] = exp_approx(sc.leaky(z[h]) - l[h]);
  }
}

// acc[h, c] += w[h] * row[h, c]: a gathered [H, C] row weighted per head.
// `acc` aliases neither `w` nor `row`, so the loop over c is vectorised
// without a run-time overlap check and a scalar copy (this loop is
// instantiated more than any other: less code, faster to compile).
template <int HT, typename scalar_t, typename acc_t>
inline void add_weighted_row(acc_t* __restrict acc, const acc_t* w,
                             const scalar_t* __restrict row, int64_t heads,
                             int64_t C) {
  const int64_t H = HT > 0 ? HT : heads;
  for (int64_t h = 0; h < H; ++h) {
    acc_t* __restrict ah = acc + h * C;
    const scalar_t* __restrict rh = row + h * C;
    const acc_t wh = w[h];
    for (int64_t c = 0; c < C; ++c) ah[c] += wh * static_cast<acc_t>(rh[c]);
  }
}

// The same for `acc` holding two [H, C] blocks: row h goes to the first
// block where z[h] > 0 and to the second elsewhere, so that one pass sums
// the rows that the LeakyReLU derivative weights by 1 apart from those it
// weights by `slope` (NaN goes second, as LeakyReLU' takes it to `slope`).
template <int HT, typename scalar_t, typename acc_t>
inline void add_weighted_row_by_sign(acc_t* __restrict acc, const acc_t* w,
                                     const acc_t* z,
                                     const scalar_t* __restrict row,
                                     int64_t heads, int64_t C) {
  const int64_t H = HT > 0 ? HT : heads;
  for (int64_t h = 0; h < H; ++h) {
    acc_t* __restrict ah = acc + (z[h] > acc_t(0) ? 0 : H * C) + h * C;
    const scalar_t* __restrict rh = row + h * C;
    const acc_t wh = w[h];
    for (int64_t c = 0; c < C; ++c) ah[c] += wh * static_cast<acc_t>(rh[c]);
  }
}

// Forward: one worker per block of targets. For target i: the scores of
// its edges (one gather of a_src rows), their maximum and sum of exp per
// head (the log-sum-exp, saved), the attention weights (times the dropout
// factors), then out[i] = sum_k w_k * x_{j_k}, prefetching the source rows
// ahead. NaN scores make the whole row NaN, as in PyG.
template <typename scalar_t, int HT>
void forward_kernel(const Inputs& in, bool skip, double negative_slope,
                    const Dropout& drop, at::Tensor& out, at::Tensor& lse,
                    at::Tensor& alpha, bool return_attention_weights) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t H = HT > 0 ? HT : in.heads, C = in.channels;
  const auto graph = by_target(in, skip);
  const auto sc = scores_of<scalar_t, acc_t>(in, negative_slope);
  const scalar_t* x = in.x.data_ptr<scalar_t>();
  const int64_t row_bytes = H * C * sizeof(scalar_t);
  scalar_t* po = out.data_ptr<scalar_t>();
  acc_t* pl = lse.data_ptr<acc_t>();
  scalar_t* pa =
      return_attention_weights ? alpha.data_ptr<scalar_t>() : nullptr;
  constexpr acc_t inf = std::numeric_limits<acc_t>::infinity();

  parallel_nodes(graph.ptr, in.num_dst, [&](int64_t i0, int64_t i1) {
    NodeEdges<acc_t> ne;
    int64_t q = graph.ptr[i0];
    std::vector<acc_t> m(H), s(H), f(H), acc(H * C);
    for (int64_t i = i0; i < i1; ++i) {
      // The rows of the edges up to kAhead positions past this node.
      for (const int64_t to =
               std::min(graph.ptr[i + 1] + kAhead, graph.ptr[i1]);
           q < to; ++q) {
        const int64_t j = graph.nbr_at(q);
        prefetch(sc.a_src + j * H);
        prefetch_row(x + j * H * C, row_bytes);
      }
      ne.gather(graph, i, H, [&](int64_t id) {
        if (pa) std::fill(pa + id * H, pa + (id + 1) * H, scalar_t(0));
      });
      const int64_t n = ne.n;
      raw_scores<HT>(sc, ne, i, true);
      std::fill(m.begin(), m.end(), -inf);
      std::fill(s.begin(), s.end(), acc_t(0));  // NaN flags, then sums.
      for (int64_t k = 0; k < n; ++k) {
        acc_t* z = ne.z.data() + k * H;
        for (int64_t h = 0; h < H; ++h) {
          const acc_t e = sc.leaky(z[h]);
          m[h] = std::max(m[h], e);
          s[h] += e != e ? acc_t(1) : acc_t(0);
        }
      }
      acc_t* li = pl + i * H;
      for (int64_t h = 0; h < H; ++h) {
        // The reference point of the exponentials; NaN makes all NaN.
        li[h] = s[h] > acc_t(0)
                    ? s[h] * std::numeric_limits<acc_t>::quiet_NaN()
                : m[h] == -inf ? acc_t(0)
                               : m[h];
        s[h] = acc_t(0);
      }
      for (int64_t k = 0; k < n; ++k) {
        const acc_t* z = ne.z.data() + k * H;
        acc_t* w = ne.w.data() + k * H;
        for (int64_t h = 0; h < H; ++h) {
          w[h] = exp_approx(sc.leaky(z[h]) - li[h]);
          s[h] += w[h];
        }
      }
      for (int64_t h = 0; h < H; ++h) {
        li[h] = s[h] == acc_t(0) ? -inf : li[h] + std::log(s[h]);
        s[h] = acc_t(1) / s[h];
      }
      for (int64_t k = 0; k < n; ++k) {
        acc_t* w = ne.w.data() + k * H;
        for (int64_t h = 0; h < H; ++h) w[h] *= s[h];
        if (drop.active) {
          drop.factors(ne.id[k], H, f.data());
          for (int64_t h = 0; h < H; ++h) w[h] *= f[h];
        }
        if (pa)
          for (int64_t h = 0; h < H; ++h)
            pa[ne.id[k] * H + h] = static_cast<scalar_t>(w[h]);
      }

      std::fill(acc.begin(), acc.end(), acc_t(0));
      for (int64_t k = 0; k < n; ++k) {
        add_weighted_row<HT>(acc.data(), ne.w.data() + k * H,
                             x + ne.nbr[k] * H * C, H, C);
      }
      std::copy(acc.begin(), acc.end(), po + i * H * C);
    }
  });
}

// out[h] = <a[h], b[h]> for [H, C] rows a and b.
template <int HT, typename acc_t, typename a_t, typename b_t>
inline void head_dots(acc_t* out, const a_t* a, const b_t* b, int64_t heads,
                      int64_t C) {
  const int64_t H = HT > 0 ? HT : heads;
  for (int64_t h = 0; h < H; ++h) {
    acc_t dot = 0;
    for (int64_t c = 0; c < C; ++c)
      dot +=
          static_cast<acc_t>(a[h * C + c]) * static_cast<acc_t>(b[h * C + c]);
    out[h] = dot;
  }
}

// The per-edge factors of the backward pass, for edge k of `ne` with
// attention alpha = w[k] (without dropout), raw score z[k] and dropout
// factor f: u = alpha f (the weight of the edge's row in the output),
// v = u LeakyReLU'(z) and s = alpha LeakyReLU'(z); with grad_alpha, its
// terms u ga into gu and v ga into gv (untouched without).
template <int HT, typename scalar_t, typename acc_t>
inline void edge_factors(const Scores<scalar_t, acc_t>& sc,
                         const Dropout& drop, const NodeEdges<acc_t>& ne,
                         int64_t k, const scalar_t* grad_alpha, acc_t* u,
                         acc_t* v, acc_t* s, acc_t* gu, acc_t* gv) {
  const int64_t H = HT > 0 ? HT : sc.heads;
  const acc_t* z = ne.z.data() + k * H;
  const acc_t* a = ne.w.data() + k * H;
  const int64_t id = ne.id[k];
  drop.factors(id, H, u);
  for (int64_t h = 0; h < H; ++h) {
    const acc_t lk = z[h] > acc_t(0) ? acc_t(1) : sc.slope;
    u[h] *= a[h];
    v[h] = u[h] * lk;
    s[h] = a[h] * lk;
  }
  if (grad_alpha)
    for (int64_t h = 0; h < H; ++h) {
      const acc_t ga = static_cast<acc_t>(grad_alpha[id * H + h]);
      gu[h] = u[h] * ga;
      gv[h] = v[h] * ga;
    }
}

// The backward pass. With f the dropout factors, ga = <g_i, x_j> +
// grad_alpha the gradient of an output weight alpha f, and lk =
// LeakyReLU'(z), the score gradient of edge (j -> i) is
//   dz = alpha lk (f ga - D_i),  D_i = sum_j alpha f ga.
// Its sums per target and per source never need a per-edge dot product:
//   D_i = <g_i, O_i> + sum_j u grad_alpha,          O_i = sum_j u x_j,
//   sum_j dz = <g_i, Y_i> + sum_j v grad_alpha - D_i sum_j alpha lk,
//                                                   Y_i = sum_j v x_j,
//   sum_i dz = <x_j, sum_i v g_i> + sum_i alpha lk (f grad_alpha - D_i),
// with u = alpha f and v = u lk: weighted row sums, as in the forward pass,
// and one dot product per node. As lk is 1 or `slope`, O = P + N and
// Y = P + slope N with P (N) the sum of u x_j over the edges with z > 0
// (z <= 0): one weighted row per edge, as in the forward pass, not two
// (add_weighted_row_by_sign); likewise sum_i u g_i and sum_i v g_i.
//
// Pass over targets: D_i (saved for the source pass) and grad_a_dst[i].
template <typename scalar_t, int HT>
void backward_target_kernel(const Inputs& in, bool skip, double negative_slope,
                            const Dropout& drop, const at::Tensor& grad_out,
                            const scalar_t* grad_alpha, const at::Tensor& lse,
                            at::Tensor& delta, at::Tensor& grad_dst) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t H = HT > 0 ? HT : in.heads, C = in.channels;
  const auto graph = by_target(in, skip);
  const auto sc = scores_of<scalar_t, acc_t>(in, negative_slope);
  const scalar_t* x = in.x.data_ptr<scalar_t>();
  const int64_t row_bytes = H * C * sizeof(scalar_t);
  const scalar_t* go = grad_out.data_ptr<scalar_t>();
  const acc_t* pl = lse.data_ptr<acc_t>();
  acc_t* pd = delta.data_ptr<acc_t>();
  acc_t* pg = grad_dst.data_ptr<acc_t>();

  parallel_nodes(graph.ptr, in.num_dst, [&](int64_t i0, int64_t i1) {
    NodeEdges<acc_t> ne;
    std::vector<acc_t> pn(2 * H * C), u(H), v(H), e(H), gu(H), gv(H), sl(H),
        ex(2 * H), dots(2 * H);
    int64_t q = graph.ptr[i0];
    for (int64_t i = i0; i < i1; ++i) {
      for (const int64_t to =
               std::min(graph.ptr[i + 1] + kAhead, graph.ptr[i1]);
           q < to; ++q) {
        const int64_t j = graph.nbr_at(q);
        prefetch(sc.a_src + j * H);
        prefetch_row(x + j * H * C, row_bytes);
      }
      ne.gather(graph, i, H, [](int64_t) {});
      const int64_t n = ne.n;
      raw_scores<HT>(sc, ne, i, true);
      attention<HT>(sc, ne, pl + i * H, false);
      std::fill(pn.begin(), pn.end(), acc_t(0));
      std::fill(sl.begin(), sl.end(), acc_t(0));
      std::fill(ex.begin(), ex.end(), acc_t(0));
      for (int64_t k = 0; k < n; ++k) {
        edge_factors<HT>(sc, drop, ne, k, grad_alpha, u.data(), v.data(),
                         e.data(), gu.data(), gv.data());
        for (int64_t h = 0; h < H; ++h) sl[h] += e[h];
        if (grad_alpha)
          for (int64_t h = 0; h < H; ++h) {
            ex[h] += gu[h];
            ex[H + h] += gv[h];
          }
        add_weighted_row_by_sign<HT>(pn.data(), u.data(), ne.z.data() + k * H,
                                     x + ne.nbr[k] * H * C, H, C);
      }
      // dots: <g_i, P> then <g_i, N>.
      const scalar_t* gi = go + i * H * C;
      head_dots<HT>(dots.data(), gi, pn.data(), H, C);
      head_dots<HT>(dots.data() + H, gi, pn.data() + H * C, H, C);
      acc_t* d = pd + i * H;
      acc_t* gd = pg + i * H;
      for (int64_t h = 0; h < H; ++h) {
        d[h] = dots[h] + dots[H + h] + ex[h];
        gd[h] = dots[h] + sc.slope * dots[H + h] + ex[H + h] - d[h] * sl[h];
      }
    }
  });
}

// Pass over sources: for source j, the attention of each edge (j -> i)
// recomputed from a_dst[i], lse[i] (and the edge score), then grad_x_j =
// sum_i u g_i and grad_a_src[j] (see above); `grad_edge`, if not null,
// gets dz per edge id, which takes one dot product per edge.
template <typename scalar_t, int HT>
void backward_source_kernel(const Inputs& in, bool skip, double negative_slope,
                            const Dropout& drop, const at::Tensor& grad_out,
                            const scalar_t* grad_alpha, const at::Tensor& lse,
                            const at::Tensor& delta, at::Tensor& grad_x,
                            at::Tensor& grad_src,
                            at::opmath_type<scalar_t>* grad_edge) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t H = HT > 0 ? HT : in.heads, C = in.channels;
  const auto graph = by_source(in, skip);
  const auto sc = scores_of<scalar_t, acc_t>(in, negative_slope);
  const scalar_t* x = in.x.data_ptr<scalar_t>();
  const scalar_t* go = grad_out.data_ptr<scalar_t>();
  const int64_t row_bytes = H * C * sizeof(scalar_t);
  const acc_t* pl = lse.data_ptr<acc_t>();
  const acc_t* pd = delta.data_ptr<acc_t>();
  scalar_t* px = grad_x.data_ptr<scalar_t>();
  acc_t* ps = grad_src.data_ptr<acc_t>();

  parallel_nodes(graph.ptr, in.num_src, [&](int64_t j0, int64_t j1) {
    NodeEdges<acc_t> ne;
    std::vector<acc_t> pn(2 * H * C), u(H), v(H), e(H), gu(H), gv(H, acc_t(0)),
        t(H), ga(H), dots(2 * H);
    int64_t q = graph.ptr[j0];
    for (int64_t j = j0; j < j1; ++j) {
      for (const int64_t to =
               std::min(graph.ptr[j + 1] + kAhead, graph.ptr[j1]);
           q < to; ++q) {
        const int64_t i = graph.nbr_at(q);
        prefetch(sc.a_dst + i * H);
        prefetch(pl + i * H);
        prefetch(pd + i * H);
        prefetch_row(go + i * H * C, row_bytes);
      }
      ne.gather(graph, j, H, [&](int64_t id) {
        if (grad_edge)
          std::fill(grad_edge + id * H, grad_edge + (id + 1) * H, acc_t(0));
      });
      const int64_t n = ne.n;
      raw_scores<HT>(sc, ne, j, false);
      attention<HT>(sc, ne, pl, true);
      const scalar_t* xj = x + j * H * C;
      std::fill(pn.begin(), pn.end(), acc_t(0));
      std::fill(t.begin(), t.end(), acc_t(0));
      for (int64_t k = 0; k < n; ++k) {
        const int64_t i = ne.nbr[k];
        edge_factors<HT>(sc, drop, ne, k, grad_alpha, u.data(), v.data(),
                         e.data(), gu.data(), gv.data());
        const acc_t* d = pd + i * H;
        // gv stays zero without grad_alpha.
        for (int64_t h = 0; h < H; ++h) t[h] += gv[h] - e[h] * d[h];
        const scalar_t* gi = go + i * H * C;
        add_weighted_row_by_sign<HT>(pn.data(), u.data(), ne.z.data() + k * H,
                                     gi, H, C);
        if (grad_edge) {
          head_dots<HT>(ga.data(), gi, xj, H, C);
          acc_t* ge = grad_edge + ne.id[k] * H;
          for (int64_t h = 0; h < H; ++h)
            ge[h] = v[h] * ga[h] + gv[h] - e[h] * d[h];
        }
      }
      // grad_x_j = P + N, <x_j, sum_i v g_i> = <x_j, P> + slope <x_j, N>.
      head_dots<HT>(dots.data(), xj, pn.data(), H, C);
      head_dots<HT>(dots.data() + H, xj, pn.data() + H * C, H, C);
      for (int64_t h = 0; h < H; ++h)
        ps[j * H + h] = dots[h] + sc.slope * dots[H + h] + t[h];
      for (int64_t c = 0; c < H * C; ++c)
        px[j * H * C + c] = static_cast<scalar_t>(pn[c] + pn[H * C + c]);
    }
  });
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor> gat_attention_cpu(
    const at::Tensor& x, const at::Tensor& a_src, const at::Tensor& a_dst,
    const std::optional<at::Tensor>& edge_score, const at::Tensor& rowptr,
    const at::Tensor& col, const at::Tensor& csr_eid, const at::Tensor& colptr,
    const at::Tensor& row, const at::Tensor& csc_eid, int64_t num_loops,
    bool remove_self_loops, double negative_slope, double dropout,
    const std::optional<at::Tensor>& seed, bool return_attention_weights) {
  const Inputs in = check_inputs(x, a_src, a_dst, edge_score, rowptr, col,
                                 csr_eid, colptr, row, csc_eid, num_loops);
  const Dropout drop(dropout, seed);
  const auto acc_type = at::toOpMathType(x.scalar_type());
  auto out = at::empty({in.num_dst, in.heads, in.channels}, x.options());
  auto lse = at::empty({in.num_dst, in.heads}, x.options().dtype(acc_type));
  auto alpha = at::empty(
      {return_attention_weights ? in.num_edges + num_loops : 0, in.heads},
      x.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, x.scalar_type(), "gat_attention", [&] {
        dispatch_heads(in.heads, [&](auto ht) {
          forward_kernel<scalar_t, decltype(ht)::value>(
              in, remove_self_loops, negative_slope, drop, out, lse, alpha,
              return_attention_weights);
        });
      });
  return {out, lse, alpha};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>
gat_attention_backward_cpu(
    const at::Tensor& grad_out, const std::optional<at::Tensor>& grad_alpha,
    const at::Tensor& x, const at::Tensor& a_src, const at::Tensor& a_dst,
    const std::optional<at::Tensor>& edge_score, const at::Tensor& lse,
    const at::Tensor& rowptr, const at::Tensor& col, const at::Tensor& csr_eid,
    const at::Tensor& colptr, const at::Tensor& row, const at::Tensor& csc_eid,
    int64_t num_loops, bool remove_self_loops, double negative_slope,
    double dropout, const std::optional<at::Tensor>& seed) {
  const Inputs in = check_inputs(x, a_src, a_dst, edge_score, rowptr, col,
                                 csr_eid, colptr, row, csc_eid, num_loops);
  const Dropout drop(dropout, seed);
  const auto acc_type = at::toOpMathType(x.scalar_type());
  TORCH_CHECK(
      grad_out.sizes() == at::IntArrayRef({in.num_dst, in.heads, in.channels}),
      "gat_attention_backward: grad_out must be [N_dst, H, C]");
  TORCH_CHECK(lse.sizes() == at::IntArrayRef({in.num_dst, in.heads}) &&
                  lse.scalar_type() == acc_type,
              "gat_attention_backward: bad lse");
  const auto g = grad_out.to(x.scalar_type()).contiguous();
  const auto l = lse.contiguous();
  std::optional<at::Tensor> ga;
  if (grad_alpha.has_value() && grad_alpha->numel() > 0) {
    TORCH_CHECK(grad_alpha->sizes() ==
                    at::IntArrayRef({in.num_edges + num_loops, in.heads}),
                "gat_attention_backward: grad_alpha must be "
                "[E + num_loops, H]");
    ga = grad_alpha->to(x.scalar_type()).contiguous();
  }
  const auto acc_options = x.options().dtype(acc_type);
  auto delta = at::empty({in.num_dst, in.heads}, acc_options);
  auto grad_dst = at::empty({in.num_dst, in.heads}, acc_options);
  auto grad_src = at::empty({in.num_src, in.heads}, acc_options);
  auto grad_x = at::empty_like(in.x);
  auto grad_edge = at::empty(
      {edge_score.has_value() ? in.num_edges + num_loops : 0, in.heads},
      acc_options);
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, x.scalar_type(), "gat_attention_backward",
      [&] {
        const scalar_t* pga = ga ? ga->data_ptr<scalar_t>() : nullptr;
        auto* pge = edge_score.has_value()
                        ? grad_edge.data_ptr<at::opmath_type<scalar_t>>()
                        : nullptr;
        dispatch_heads(in.heads, [&](auto ht) {
          constexpr int HT = decltype(ht)::value;
          backward_target_kernel<scalar_t, HT>(in, remove_self_loops,
                                               negative_slope, drop, g, pga, l,
                                               delta, grad_dst);
          backward_source_kernel<scalar_t, HT>(in, remove_self_loops,
                                               negative_slope, drop, g, pga, l,
                                               delta, grad_x, grad_src, pge);
        });
      });
  return {grad_x, grad_src.to(x.scalar_type()), grad_dst.to(x.scalar_type()),
          grad_edge.to(x.scalar_type())};
}

}  // namespace pyg_gat_ext
