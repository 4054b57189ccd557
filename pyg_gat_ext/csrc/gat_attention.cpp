// CPU kernels of the fused GAT attention: forward and backward, without
// ever forming the [E, H, C] messages.
//
// The graph, grouped by target and by source, its implicit self-loops and
// the edges that remove_self_loops leaves out are described in attention.h.
// The forward pass saves only the per-(node, head) log-sum-exp of the
// scores; the backward pass recomputes the attention from it: a pass over
// targets for the target-side gradients, then a pass over sources
// (recomputing the attention again) for the source-side gradients, storing
// nothing per edge, so that no gradient is accumulated with atomics and the
// result does not depend on the thread count. Dropout factors come from a
// counter-based hash of (seed, edge id, head), regenerated in the backward
// pass and never stored.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/ops/empty.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <optional>
#include <type_traits>
#include <vector>

#include "attention.h"
#include "common.h"
#include "dropout.h"
#include "kernels.h"
#include "pool.h"

namespace pyg_gat_ext {
namespace {

using namespace attention;

struct Inputs : GraphInputs {
  at::Tensor x, a_src, a_dst;
  std::optional<at::Tensor> edge_score;
  int64_t heads, channels;
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
  static_cast<GraphInputs&>(in) =
      check_graph("gat_attention", x.size(0), rowptr, col, csr_eid, colptr,
                  row, csc_eid, num_loops);
  in.heads = x.size(1);
  in.channels = x.size(2);
  TORCH_CHECK(a_src.sizes() == at::IntArrayRef({in.num_src, in.heads}) &&
                  a_dst.sizes() == at::IntArrayRef({in.num_dst, in.heads}),
              "gat_attention: a_src must be [N_src, H], a_dst [N_dst, H]");
  if (edge_score.has_value()) {
    TORCH_CHECK(edge_score->sizes() ==
                    at::IntArrayRef({in.num_edges + num_loops, in.heads}),
                "gat_attention: edge_score must be [E + num_loops, H]");
    in.edge_score = edge_score->contiguous();
  }
  in.x = x.contiguous();
  in.a_src = a_src.contiguous();
  in.a_dst = a_dst.contiguous();
  return in;
}

// The rows per target of the forward's statistics `sums`, as
// pyg_gat_ext.ops._reference.stats_slots: N_i alone where `out` holds O_i
// exactly (its dtype is acc_t), else O_i in acc_t too.
int64_t stats_slots(at::ScalarType dtype) {
  return at::toOpMathType(dtype) == dtype ? 1 : 2;
}

// z > 0 ? a : b (NaN: b) by a bit mask: GCC compiles the select of a loop
// over heads that it does not vectorise to a branch, which the signs of
// scores, random, mispredict half the time; the mask costs a few integer
// operations and never a misprediction.
template <typename acc_t>
inline acc_t if_positive(acc_t z, acc_t a, acc_t b) {
  using bits_t = bits_of<acc_t>;
  const bits_t m = bits_t(0) - static_cast<bits_t>(z > acc_t(0));
  bits_t ua, ub;
  std::memcpy(&ua, &a, sizeof(acc_t));
  std::memcpy(&ub, &b, sizeof(acc_t));
  const bits_t r = (ua & m) | (ub & ~m);
  acc_t out;
  std::memcpy(&out, &r, sizeof(acc_t));
  return out;
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
};

template <typename scalar_t, typename acc_t>
Scores<scalar_t, acc_t> scores_of(const Inputs& in, double negative_slope) {
  return {in.a_src.data_ptr<scalar_t>(), in.a_dst.data_ptr<scalar_t>(),
          in.edge_score ? in.edge_score->data_ptr<scalar_t>() : nullptr,
          in.heads, static_cast<acc_t>(negative_slope)};
}

// The raw scores z[k, h] = own[h] + other[nbr[k] * stride + h] (+ the edge
// score) of the gathered edges of a node: `own` is the node's score row
// (a_dst[i] for a target, a_src[j] for a source) and `other` that of its
// neighbours (a_src, or the targets' records of the pass over sources).
// One vector per edge (as softmax_weights' loops) for a head count known at
// compile time, where all are of the op math type.
template <int HT, typename scalar_t, typename acc_t, typename own_t,
          typename other_t>
void raw_scores(const Scores<scalar_t, acc_t>& sc, NodeEdges<acc_t>& ne,
                const own_t* own, const other_t* other, int64_t stride) {
  const int64_t H = HT > 0 ? HT : sc.heads;
  if constexpr (HT > 0 && std::is_same_v<own_t, acc_t> &&
                std::is_same_v<other_t, acc_t> &&
                std::is_same_v<scalar_t, acc_t>) {
    const auto ov = load_lanes<HT>(own);
    for (int64_t k = 0; k < ne.n; ++k) {
      auto z = ov + load_lanes<HT>(other + ne.nbr[k] * stride);
      if (sc.edge_score) z += load_lanes<HT>(sc.edge_score + ne.id[k] * HT);
      store_lanes<HT>(ne.z.data() + k * HT, z);
    }
    return;
  }
  for (int64_t k = 0; k < ne.n; ++k) {
    const other_t* o = other + ne.nbr[k] * stride;
    acc_t* z = ne.z.data() + k * H;
    for (int64_t h = 0; h < H; ++h)
      z[h] = static_cast<acc_t>(own[h]) + static_cast<acc_t>(o[h]);
    if (sc.edge_score) {
      const scalar_t* es = sc.edge_score + ne.id[k] * H;
      for (int64_t h = 0; h < H; ++h) z[h] += static_cast<acc_t>(es[h]);
    }
  }
}

// w[k, h] = alpha = exp(LeakyReLU(z[k, h]) - lse[nbr[k] * stride + h])
// (before dropout): stride 0 for one target's own lse row, else the rows of
// the gathered neighbours.
template <int HT, typename scalar_t, typename acc_t>
void attention(const Scores<scalar_t, acc_t>& sc, NodeEdges<acc_t>& ne,
               const acc_t* lse, int64_t stride) {
  const int64_t H = HT > 0 ? HT : sc.heads;
  for (int64_t k = 0; k < ne.n; ++k) {
    const acc_t* l = lse + ne.nbr[k] * stride;
    const acc_t* z = ne.z.data() + k * H;
    acc_t* w = ne.w.data() + k * H;
    if constexpr (HT > 0) {
      store_lanes<HT>(w, exp_lanes<HT, acc_t>(
                             leaky_relu(load_lanes<HT>(z), sc.slope) -
                             load_lanes<HT>(l)));
    } else {
      for (int64_t h = 0; h < H; ++h)
        w[h] = exp_approx(leaky_relu(z[h], sc.slope) - l[h]);
    }
  }
}

// LeakyReLU'(z) lane-wise, 1 or `slope` (NaN: `slope`), of the HT raw
// scores at `z`.
template <int HT, typename acc_t>
inline lanes_t<acc_t, HT> slope_lanes(const acc_t* z, acc_t slope) {
  using V = lanes_t<acc_t, HT>;
  return load_lanes<HT>(z) > acc_t(0) ? V{} + 1 : V{} + slope;
}

// Forward: one worker per block of targets. For target i: the scores of
// its edges (one gather of a_src rows), their maximum and sum of exp per
// head (the log-sum-exp, saved), the attention weights (times the dropout
// factors), then out[i] = sum_k w_k * x_{j_k}, prefetching the source rows
// ahead. NaN scores make the whole row NaN, as in PyG. With `stats`, also
// the statistics that spare the backward its gathering pass over targets
// (see backward_target_stats): the sum N of out[i] over the edges with
// z <= 0, after out[i] itself in acc_t where `out` rounds it (stats.sums,
// [N_dst, slots, H, C], slots 1 or 2) and sum_k alpha LeakyReLU'(z)
// (stats.slope_sum, [N_dst, H]), in acc_t.
template <typename acc_t>
struct Stats {
  acc_t* sums;  // nullptr without statistics.
  acc_t* slope_sum;
  int64_t slots;
};

template <typename scalar_t, int HT>
void forward_kernel(const Inputs& in, bool skip, double negative_slope,
                    const Dropout& drop, at::Tensor& out, at::Tensor& lse,
                    at::Tensor& alpha, bool return_attention_weights,
                    const Stats<at::opmath_type<scalar_t>>& stats) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t H = HT > 0 ? HT : in.heads, C = in.channels;
  const auto graph = in.by_target(skip);
  const auto sc = scores_of<scalar_t, acc_t>(in, negative_slope);
  const scalar_t* x = in.x.data_ptr<scalar_t>();
  const int64_t row_bytes = H * C * sizeof(scalar_t);
  scalar_t* po = out.data_ptr<scalar_t>();
  acc_t* pl = lse.data_ptr<acc_t>();
  scalar_t* pa =
      return_attention_weights ? alpha.data_ptr<scalar_t>() : nullptr;
  const bool stream_out = out.nbytes() >= kStreamOutputBytes;
  const bool stream_stats = out.nbytes() >= kStreamBytes;

  parallel_nodes(graph.ptr, in.num_dst, [&](int64_t i0, int64_t i1) {
    NodeEdges<acc_t> ne;
    int64_t q = graph.ptr[i0];
    const int64_t HC = H * C;
    std::vector<acc_t> scratch(3 * H), acc((stats.sums ? 2 : 1) * HC), sl(H);
    // sum_k alpha LeakyReLU'(z) per head: in a register for a head count
    // known at compile time (through memory, a dependency chain per edge).
    lanes_t<acc_t, (HT > 0 ? HT : 1)> slv;
    for (int64_t i = i0; i < i1; ++i) {
      // The rows of the edges up to kAhead positions past this node.
      prefetch_ahead(graph, i, graph.ptr[i1], q, [&](int64_t p) {
        const int64_t j = graph.nbr_at(p);
        prefetch(sc.a_src + j * H);
        prefetch_row(x + j * HC, row_bytes);
      });
      ne.gather(graph, i, H, [&](int64_t id) {
        if (pa) std::fill(pa + id * H, pa + (id + 1) * H, scalar_t(0));
      });
      const int64_t n = ne.n;
      raw_scores<HT>(sc, ne, sc.a_dst + i * H, sc.a_src, H);
      std::fill(sl.begin(), sl.end(), acc_t(0));
      slv = decltype(slv){};
      softmax_weights<HT>(
          ne, H, [slope = sc.slope](auto z) { return leaky_relu(z, slope); },
          drop, pl + i * H, pa, scratch.data(),
          [&](int64_t k, const acc_t* a) {
            if (!stats.sums) return;
            const acc_t* z = ne.z.data() + k * H;
            if constexpr (HT > 0) {
              slv += load_lanes<HT>(a) * slope_lanes<HT>(z, sc.slope);
            } else {
              for (int64_t h = 0; h < H; ++h)
                sl[h] += a[h] * if_positive(z[h], acc_t(1), sc.slope);
            }
          });
      if (stats.sums) {
        if constexpr (HT > 0) {
          store_lanes<HT>(stats.slope_sum + i * H, slv);
        } else {
          std::copy(sl.begin(), sl.end(), stats.slope_sum + i * H);
        }
      }
      std::fill(acc.begin(), acc.end(), acc_t(0));
      if (stats.sums) {
        for (int64_t k = 0; k < n; ++k)
          add_weighted_row<HT>(acc.data(), ne.w.data() + k * H,
                               x + ne.nbr[k] * HC, H, C, ne.z.data() + k * H);
        sum_blocks(acc.data(), HC);
        store_row(stats.sums + i * stats.slots * HC,
                  acc.data() + (2 - stats.slots) * HC, stats.slots * HC,
                  stream_stats);
      } else {
        for (int64_t k = 0; k < n; ++k)
          add_weighted_row<HT>(acc.data(), ne.w.data() + k * H,
                               x + ne.nbr[k] * HC, H, C);
      }
      store_row(po + i * HC, acc.data(), HC, stream_out);
    }
    stream_fence();
  });
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
  if constexpr (HT > 0) {
    using V = lanes_t<acc_t, HT>;
    const V av = load_lanes<HT>(a), uv = load_lanes<HT>(u) * av;
    const V lk = slope_lanes<HT>(z, sc.slope);
    store_lanes<HT>(u, uv);
    store_lanes<HT>(v, uv * lk);
    store_lanes<HT>(s, av * lk);
  } else {
    for (int64_t h = 0; h < H; ++h) {
      const acc_t lk = if_positive(z[h], acc_t(1), sc.slope);
      u[h] *= a[h];
      v[h] = u[h] * lk;
      s[h] = a[h] * lk;
    }
  }
  if (grad_alpha)
    for (int64_t h = 0; h < H; ++h) {
      const acc_t ga = static_cast<acc_t>(grad_alpha[id * H + h]);
      gu[h] = u[h] * ga;
      gv[h] = v[h] * ga;
    }
}

// t[h] += gv[h] - s[h] d[h]: an edge's terms of grad_a_src[j] beside the
// dot product (see backward_source_kernel).
template <int HT, typename acc_t>
inline void add_source_terms(acc_t* __restrict t, const acc_t* __restrict gv,
                             const acc_t* __restrict s,
                             const acc_t* __restrict d, int64_t heads) {
  if constexpr (HT > 0) {
    store_lanes<HT>(t, load_lanes<HT>(t) + (load_lanes<HT>(gv) -
                                            load_lanes<HT>(s) *
                                                load_lanes<HT>(d)));
  } else {
    for (int64_t h = 0; h < heads; ++h) t[h] += gv[h] - s[h] * d[h];
  }
}

// D_i and grad_a_dst[i] from target i's sums O_i and N_i ([H, C] each;
// see below), `slope_sum` sum_j alpha lk and `extra` the terms of
// grad_alpha, sum_j u grad_alpha then sum_j v grad_alpha (null: none);
// `dt` holds 2 H values.
template <int HT, typename scalar_t, typename acc_t>
inline void target_grads(const scalar_t* g_i, const acc_t* o_i,
                         const acc_t* n_i, const acc_t* slope_sum,
                         const acc_t* extra,
                         acc_t slope, int64_t heads, int64_t C, acc_t* d,
                         acc_t* grad_dst, acc_t* dt) {
  const int64_t H = HT > 0 ? HT : heads;
  head_dots<HT>(dt, g_i, o_i, H, C);      // <g_i, O_i>
  head_dots<HT>(dt + H, g_i, n_i, H, C);  // <g_i, N_i>
  for (int64_t h = 0; h < H; ++h) {
    d[h] = dt[h] + (extra ? extra[h] : acc_t(0));
    grad_dst[h] = dt[h] - (acc_t(1) - slope) * dt[H + h] +
                  (extra ? extra[H + h] : acc_t(0)) - d[h] * slope_sum[h];
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
// and one dot product per node. As lk is 1 or `slope`, Y = O - (1 - slope) N
// with N the sum of u x_j over the edges with z <= 0 (O is the forward's
// out_i; add_weighted_row and sum_blocks give both); likewise sum_i u
// g_i and sum_i v g_i.
//
// What the pass over sources reads of each edge's target i, packed into
// one record per target: a_dst[i], lse[i] and D_i (3 H values in acc_t), at
// a stride that keeps a record within as few cache lines as its size
// allows (the next power of two below 64 bytes, else whole lines). Read
// from three arrays they cost three gathered cache lines per edge; packed,
// one or two. The pass over targets writes each record as it computes D_i.
template <typename acc_t>
struct TargetRecords {
  at::Tensor data;  // Owns `first`.
  acc_t* first;
  int64_t stride;  // In acc_t values.
  int64_t heads;

  const acc_t* at(int64_t i) const { return first + i * stride; }

  // Writes target i's a_dst and lse (and zero padding) and returns where
  // its D_i goes.
  template <typename scalar_t>
  acc_t* begin(int64_t i, const scalar_t* a_dst, const acc_t* lse) const {
    const int64_t H = heads;
    acc_t* r = first + i * stride;
    for (int64_t h = 0; h < H; ++h) {
      r[h] = static_cast<acc_t>(a_dst[i * H + h]);
      r[H + h] = lse[i * H + h];
    }
    std::fill(r + 3 * H, r + stride, acc_t(0));
    return r + 2 * H;
  }
};

template <typename acc_t>
TargetRecords<acc_t> make_records(const Inputs& in) {
  const int64_t H = in.heads;
  int64_t bytes = 3 * H * static_cast<int64_t>(sizeof(acc_t));
  if (bytes < 64) {
    int64_t p = 1;
    while (p < bytes) p *= 2;
    bytes = p;
  } else {
    bytes = (bytes + 63) / 64 * 64;
  }
  const int64_t stride = bytes / static_cast<int64_t>(sizeof(acc_t));
  const auto type = c10::CppTypeToScalarType<acc_t>::value;
  auto data = at::empty({in.num_dst, stride}, in.x.options().dtype(type));
  return {data, data.template data_ptr<acc_t>(), stride, H};
}

// Pass over targets: D_i (saved for the source pass) and grad_a_dst[i].
template <typename scalar_t, int HT>
void backward_target_kernel(const Inputs& in, bool skip, double negative_slope,
                            const Dropout& drop, const at::Tensor& grad_out,
                            const scalar_t* grad_alpha, const at::Tensor& lse,
                            const TargetRecords<at::opmath_type<scalar_t>>& rec,
                            at::Tensor& grad_dst) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t H = HT > 0 ? HT : in.heads, C = in.channels;
  const auto graph = in.by_target(skip);
  const auto sc = scores_of<scalar_t, acc_t>(in, negative_slope);
  const scalar_t* x = in.x.data_ptr<scalar_t>();
  const int64_t row_bytes = H * C * sizeof(scalar_t);
  const scalar_t* go = grad_out.data_ptr<scalar_t>();
  const acc_t* pl = lse.data_ptr<acc_t>();
  acc_t* pg = grad_dst.data_ptr<acc_t>();

  parallel_nodes(graph.ptr, in.num_dst, [&](int64_t i0, int64_t i1) {
    NodeEdges<acc_t> ne;
    std::vector<acc_t> pn(2 * H * C), u(H), v(H), e(H), gu(H), gv(H), sl(H),
        ex(2 * H), dots(2 * H);
    int64_t q = graph.ptr[i0];
    for (int64_t i = i0; i < i1; ++i) {
      prefetch_ahead(graph, i, graph.ptr[i1], q, [&](int64_t p) {
        const int64_t j = graph.nbr_at(p);
        prefetch(sc.a_src + j * H);
        prefetch_row(x + j * H * C, row_bytes);
      });
      ne.gather(graph, i, H, [](int64_t) {});
      const int64_t n = ne.n;
      raw_scores<HT>(sc, ne, sc.a_dst + i * H, sc.a_src, H);
      attention<HT>(sc, ne, pl + i * H, 0);
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
        add_weighted_row<HT>(pn.data(), u.data(), x + ne.nbr[k] * H * C, H, C,
                             ne.z.data() + k * H);
      }
      sum_blocks(pn.data(), H * C);
      target_grads<HT>(go + i * H * C, pn.data(), pn.data() + H * C,
                       sl.data(), grad_alpha ? ex.data() : nullptr, sc.slope,
                       H, C, rec.begin(i, sc.a_dst, pl), pg + i * H,
                       dots.data());
    }
  });
}

// The pass over targets from the forward's statistics (forward_kernel),
// for a backward without grad_alpha: N_i (and O_i, or the forward's `out`
// where it equals O_i) and sum_j alpha lk are saved, so D_i and
// grad_a_dst[i] take two dot products per head and no gathered row, where
// backward_target_kernel gathers every edge's x_j and a_src[j] again (as
// many rows as the forward).
template <typename scalar_t, int HT>
void backward_target_stats(const Inputs& in, double negative_slope,
                           const at::Tensor& grad_out, const at::Tensor& sums,
                           const at::Tensor& out, const at::Tensor& slope_sum,
                           const at::Tensor& lse,
                           const TargetRecords<at::opmath_type<scalar_t>>& rec,
                           at::Tensor& grad_dst) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t H = HT > 0 ? HT : in.heads, C = in.channels, HC = H * C;
  const acc_t slope = static_cast<acc_t>(negative_slope);
  const scalar_t* go = grad_out.data_ptr<scalar_t>();
  // O_i and N_i: both in `sums` ([N, 2, H, C]), or O_i in `out` (acc_t).
  const int64_t slots = sums.size(1);
  const acc_t* pn = sums.data_ptr<acc_t>() + (slots - 1) * HC;
  const acc_t* po = slots == 2 ? sums.data_ptr<acc_t>() : out.data_ptr<acc_t>();
  const int64_t o_stride = slots == 2 ? 2 * HC : HC;
  const acc_t* psl = slope_sum.data_ptr<acc_t>();
  const scalar_t* pa = in.a_dst.data_ptr<scalar_t>();
  const acc_t* pl = lse.data_ptr<acc_t>();
  acc_t* pg = grad_dst.data_ptr<acc_t>();
  parallel_for(0, in.num_dst, 1024, [&](int64_t i0, int64_t i1) {
    std::vector<acc_t> dots(2 * H);
    for (int64_t i = i0; i < i1; ++i)
      target_grads<HT>(go + i * HC, po + i * o_stride, pn + i * slots * HC,
                       psl + i * H, static_cast<const acc_t*>(nullptr), slope,
                       H, C, rec.begin(i, pa, pl), pg + i * H, dots.data());
  });
}

// Pass over sources: for source j, the attention of each edge (j -> i)
// recomputed from a_dst[i], lse[i] (and the edge score), then grad_x_j =
// sum_i u g_i and grad_a_src[j] (see above); `grad_edge`, if not null,
// gets dz per edge id, which takes one dot product per edge.
template <typename scalar_t, int HT>
void backward_source_kernel(const Inputs& in, bool skip, double negative_slope,
                            const Dropout& drop, const at::Tensor& grad_out,
                            const scalar_t* grad_alpha,
                            const TargetRecords<at::opmath_type<scalar_t>>& rec,
                            at::Tensor& grad_x, at::Tensor& grad_src,
                            at::opmath_type<scalar_t>* grad_edge) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t H = HT > 0 ? HT : in.heads, C = in.channels;
  const auto graph = in.by_source(skip);
  const auto sc = scores_of<scalar_t, acc_t>(in, negative_slope);
  const scalar_t* x = in.x.data_ptr<scalar_t>();
  const scalar_t* go = grad_out.data_ptr<scalar_t>();
  const int64_t row_bytes = H * C * sizeof(scalar_t);
  const int64_t rec_bytes = 3 * H * sizeof(acc_t);
  scalar_t* px = grad_x.data_ptr<scalar_t>();
  acc_t* ps = grad_src.data_ptr<acc_t>();
  const bool stream = grad_x.nbytes() >= kStreamOutputBytes;

  parallel_nodes(graph.ptr, in.num_src, [&](int64_t j0, int64_t j1) {
    NodeEdges<acc_t> ne;
    std::vector<acc_t> pn(2 * H * C), u(H), v(H), e(H), gu(H), gv(H, acc_t(0)),
        t(H), ga(H), dots(2 * H);
    int64_t q = graph.ptr[j0];
    for (int64_t j = j0; j < j1; ++j) {
      prefetch_ahead(graph, j, graph.ptr[j1], q, [&](int64_t p) {
        const int64_t i = graph.nbr_at(p);
        prefetch_row(rec.at(i), rec_bytes);
        prefetch_row(go + i * H * C, row_bytes);
      });
      ne.gather(graph, j, H, [&](int64_t id) {
        if (grad_edge)
          std::fill(grad_edge + id * H, grad_edge + (id + 1) * H, acc_t(0));
      });
      const int64_t n = ne.n;
      raw_scores<HT>(sc, ne, sc.a_src + j * H, rec.at(0), rec.stride);
      attention<HT>(sc, ne, rec.at(0) + H, rec.stride);
      const scalar_t* xj = x + j * H * C;
      std::fill(pn.begin(), pn.end(), acc_t(0));
      std::fill(t.begin(), t.end(), acc_t(0));
      for (int64_t k = 0; k < n; ++k) {
        const int64_t i = ne.nbr[k];
        edge_factors<HT>(sc, drop, ne, k, grad_alpha, u.data(), v.data(),
                         e.data(), gu.data(), gv.data());
        const acc_t* d = rec.at(i) + 2 * H;
        // gv stays zero without grad_alpha.
        add_source_terms<HT>(t.data(), gv.data(), e.data(), d, H);
        const scalar_t* gi = go + i * H * C;
        add_weighted_row<HT>(pn.data(), u.data(), gi, H, C,
                             ne.z.data() + k * H);
        if (grad_edge) {
          head_dots<HT>(ga.data(), gi, xj, H, C);
          acc_t* ge = grad_edge + ne.id[k] * H;
          for (int64_t h = 0; h < H; ++h)
            ge[h] = v[h] * ga[h] + gv[h] - e[h] * d[h];
        }
      }
      sum_blocks(pn.data(), H * C);
      // grad_x_j = sum_i u g_i, the first sum, and <x_j, sum_i v g_i> =
      // <x_j, first> - (1 - slope) <x_j, second>.
      head_dots<HT>(dots.data(), xj, pn.data(), H, C);
      head_dots<HT>(dots.data() + H, xj, pn.data() + H * C, H, C);
      for (int64_t h = 0; h < H; ++h)
        ps[j * H + h] = dots[h] - (acc_t(1) - sc.slope) * dots[H + h] + t[h];
      store_row(px + j * H * C, pn.data(), H * C, stream);
    }
    stream_fence();
  });
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
gat_attention_cpu(const at::Tensor& x, const at::Tensor& a_src,
                  const at::Tensor& a_dst,
                  const std::optional<at::Tensor>& edge_score,
                  const at::Tensor& rowptr, const at::Tensor& col,
                  const at::Tensor& csr_eid, const at::Tensor& colptr,
                  const at::Tensor& row, const at::Tensor& csc_eid,
                  int64_t num_loops, bool remove_self_loops,
                  double negative_slope, double dropout,
                  const std::optional<at::Tensor>& seed,
                  bool return_attention_weights, bool save_stats) {
  const Inputs in = check_inputs(x, a_src, a_dst, edge_score, rowptr, col,
                                 csr_eid, colptr, row, csc_eid, num_loops);
  const Dropout drop(dropout, seed);
  at::Tensor out, lse, alpha;
  std::tie(out, lse, alpha) =
      forward_outputs(in, in.x, return_attention_weights);
  const int64_t rows = save_stats ? in.num_dst : 0;
  const auto acc_options = x.options().dtype(lse.scalar_type());
  const int64_t slots = stats_slots(x.scalar_type());
  auto sums = empty_pooled({rows, slots, in.heads, in.channels}, acc_options);
  auto slope_sum = at::empty({rows, in.heads}, acc_options);
  dispatch_kernel(x.scalar_type(), in.heads, [&](auto t, auto ht) {
    using scalar_t = decltype(t);
    using acc_t = at::opmath_type<scalar_t>;
    const Stats<acc_t> stats{
        save_stats ? sums.data_ptr<acc_t>() : nullptr,
        save_stats ? slope_sum.data_ptr<acc_t>() : nullptr, slots};
    forward_kernel<scalar_t, decltype(ht)::value>(
        in, remove_self_loops, negative_slope, drop, out, lse, alpha,
        return_attention_weights, stats);
  });
  return {out, lse, alpha, sums, slope_sum};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>
gat_attention_backward_cpu(
    const at::Tensor& grad_out, const std::optional<at::Tensor>& grad_alpha,
    const at::Tensor& x, const at::Tensor& a_src, const at::Tensor& a_dst,
    const std::optional<at::Tensor>& edge_score, const at::Tensor& lse,
    const at::Tensor& rowptr, const at::Tensor& col, const at::Tensor& csr_eid,
    const at::Tensor& colptr, const at::Tensor& row, const at::Tensor& csc_eid,
    int64_t num_loops, bool remove_self_loops, double negative_slope,
    double dropout, const std::optional<at::Tensor>& seed,
    const std::optional<at::Tensor>& out_sums,
    const std::optional<at::Tensor>& slope_sum,
    const std::optional<at::Tensor>& out) {
  const Inputs in = check_inputs(x, a_src, a_dst, edge_score, rowptr, col,
                                 csr_eid, colptr, row, csc_eid, num_loops);
  const Dropout drop(dropout, seed);
  const auto acc_type = at::toOpMathType(x.scalar_type());
  const auto grads = check_grads("gat_attention_backward", in, in.x, grad_out,
                                 lse, grad_alpha);
  // The forward's statistics, if given (they do not cover grad_alpha).
  const bool has_stats = out_sums.has_value() && out_sums->numel() > 0 &&
                         slope_sum.has_value() && slope_sum->numel() > 0;
  at::Tensor sums, sl, o;
  if (has_stats) {
    const int64_t slots = stats_slots(x.scalar_type());
    TORCH_CHECK_VALUE(
        out_sums->sizes() ==
                at::IntArrayRef({in.num_dst, slots, in.heads, in.channels}) &&
            slope_sum->sizes() == at::IntArrayRef({in.num_dst, in.heads}),
        "gat_attention_backward: out_sums must be [N_dst, ", slots,
        ", H, C] and slope_sum [N_dst, H] (got ", out_sums->sizes(), " and ",
        slope_sum->sizes(), ")");
    if (slots == 1) {
      TORCH_CHECK_VALUE(
          out.has_value() && out->scalar_type() == x.scalar_type() &&
              out->sizes() ==
                  at::IntArrayRef({in.num_dst, in.heads, in.channels}),
          "gat_attention_backward: with one slot of out_sums, 'out' must be "
          "the forward's output [N_dst, H, C] of x's dtype");
      o = out->contiguous();
    }
    TORCH_CHECK_TYPE(out_sums->scalar_type() == acc_type &&
                         slope_sum->scalar_type() == acc_type,
                     "gat_attention_backward: out_sums and slope_sum must be ",
                     acc_type, " (got ", out_sums->scalar_type(), " and ",
                     slope_sum->scalar_type(), ")");
    sums = out_sums->contiguous();
    sl = slope_sum->contiguous();
  }
  const auto acc_options = x.options().dtype(acc_type);
  auto grad_dst = at::empty({in.num_dst, in.heads}, acc_options);
  auto grad_src = at::empty({in.num_src, in.heads}, acc_options);
  auto grad_x = empty_pooled(in.x.sizes(), in.x.options());
  auto grad_edge = at::empty(
      {edge_score.has_value() ? in.num_edges + num_loops : 0, in.heads},
      acc_options);
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, x.scalar_type(), "gat_attention_backward",
      [&] {
        const auto& ga = grads.grad_alpha;
        const scalar_t* pga = ga ? ga->data_ptr<scalar_t>() : nullptr;
        auto* pge = edge_score.has_value()
                        ? grad_edge.data_ptr<at::opmath_type<scalar_t>>()
                        : nullptr;
        dispatch_heads(in.heads, [&](auto ht) {
          constexpr int HT = decltype(ht)::value;
          const auto rec = make_records<at::opmath_type<scalar_t>>(in);
          if (has_stats && !pga) {
            backward_target_stats<scalar_t, HT>(in, negative_slope,
                                                grads.grad_out, sums, o, sl,
                                                grads.lse, rec, grad_dst);
          } else {
            backward_target_kernel<scalar_t, HT>(
                in, remove_self_loops, negative_slope, drop, grads.grad_out,
                pga, grads.lse, rec, grad_dst);
          }
          backward_source_kernel<scalar_t, HT>(
              in, remove_self_loops, negative_slope, drop, grads.grad_out, pga,
              rec, grad_x, grad_src, pge);
        });
      });
  return {grad_x, grad_src.to(x.scalar_type()), grad_dst.to(x.scalar_type()),
          grad_edge.to(x.scalar_type())};
}

}  // namespace pyg_gat_ext
