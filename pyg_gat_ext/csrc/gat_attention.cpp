// CPU kernels of the fused GAT attention: forward and backward, without
// ever forming the [E, H, C] messages.
//
// The graph comes grouped twice (see pyg_gat_ext/ops/attention.py): by target
// node (CSR: ptr, src, eid) and by source node (CSC: ptr_t, dst_t, eid_t),
// `eid` mapping a position to the edge id that indexes the edge scores and
// the attention weights. Nodes 0 .. num_loops - 1 also have an implicit
// self-loop with edge id E + i; with skip_self_loops, explicit edges j -> j
// do not count. The forward pass saves only the per-(node, head)
// log-sum-exp of the scores; the backward pass recomputes the attention from
// it: a pass over targets for the score gradients, then a pass over sources
// for the source-side gradients, so that no gradient is accumulated with
// atomics and the result does not depend on the thread count. Dropout
// factors come from a counter-based hash of (seed, edge id, head),
// regenerated in the backward pass and never stored.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>
#include <vector>

namespace pyg_gat_ext {
namespace {

// MurmurHash3's 32-bit finaliser.
inline uint32_t fmix32(uint32_t h) {
  h ^= h >> 16;
  h *= 0x85EBCA6Bu;
  h ^= h >> 13;
  h *= 0xC2B2AE35u;
  h ^= h >> 16;
  return h;
}

// The dropout parameters: entry (edge, head) is kept (and scaled) when its
// 24-bit hash is at least `threshold`, as pyg_gat_ext.ops._reference.
struct Dropout {
  bool active = false;
  uint32_t k0 = 0, k1 = 0;
  int64_t threshold = 0;
  double scale = 1.0;

  Dropout(double p, int64_t seed0, int64_t seed1) {
    active = p > 0.0;
    k0 = static_cast<uint32_t>(seed0);
    k1 = static_cast<uint32_t>(seed1);
    threshold = std::min<int64_t>(
        int64_t(1) << 24,
        static_cast<int64_t>(std::floor(p * 16777216.0 + 0.5)));
    scale = p >= 1.0 ? 0.0 : 1.0 / (1.0 - p);
  }

  template <typename acc_t>
  acc_t factor(int64_t edge, int64_t head) const {
    if (!active) return acc_t(1);
    const uint64_t e = static_cast<uint64_t>(edge);
    uint32_t h = fmix32(k0 ^ static_cast<uint32_t>(e & 0xFFFFFFFFu));
    h = fmix32(h ^ static_cast<uint32_t>(e >> 32) ^ k1);
    h = fmix32(h ^ (static_cast<uint32_t>(head) * 0x9E3779B9u));
    return static_cast<int64_t>(h >> 8) >= threshold
               ? static_cast<acc_t>(scale)
               : acc_t(0);
  }
};

// Everything the kernels read, as raw pointers. `nbr` and `pos_eid` belong
// to the grouping a pass walks: (src, eid) by target or (dst_t, eid_t) by
// source.
template <typename scalar_t, typename index_t>
struct Graph {
  const int64_t* ptr;
  const index_t* nbr;
  const index_t* pos_eid;
  int64_t num_nodes, num_edges, num_loops;
  bool skip_self_loops;

  // Calls f(neighbour, edge id) for every counted edge of node `i`, the
  // implicit self-loop last; `skipped(edge id)` for every left-out one.
  template <typename F, typename S>
  void for_each_edge(int64_t i, F&& f, S&& skipped) const {
    for (int64_t p = ptr[i]; p < ptr[i + 1]; ++p) {
      const int64_t j = nbr[p];
      if (skip_self_loops && j == i) {
        skipped(static_cast<int64_t>(pos_eid[p]));
        continue;
      }
      f(j, static_cast<int64_t>(pos_eid[p]));
    }
    if (i < num_loops) f(i, num_edges + i);
  }
};

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
  at::parallel_for(0, bounds.size() - 1, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) f(bounds[b], bounds[b + 1]);
  });
}

struct Inputs {
  at::Tensor x, a_src, a_dst, ptr, src, eid, ptr_t, dst_t, eid_t;
  std::optional<at::Tensor> edge_score;
  int64_t num_src, num_dst, heads, channels, num_edges, num_loops;
};

Inputs check_inputs(const at::Tensor& x, const at::Tensor& a_src,
                    const at::Tensor& a_dst,
                    const std::optional<at::Tensor>& edge_score,
                    const at::Tensor& ptr, const at::Tensor& src,
                    const at::Tensor& eid, const at::Tensor& ptr_t,
                    const at::Tensor& dst_t, const at::Tensor& eid_t,
                    int64_t num_loops) {
  TORCH_CHECK(x.dim() == 3, "gat_attention: x must be [N_src, H, C]");
  Inputs in;
  in.num_src = x.size(0);
  in.heads = x.size(1);
  in.channels = x.size(2);
  in.num_dst = ptr.numel() - 1;
  in.num_edges = src.numel();
  in.num_loops = num_loops;
  TORCH_CHECK(
      ptr.scalar_type() == at::kLong && ptr_t.scalar_type() == at::kLong,
      "gat_attention: ptr and ptr_t must be int64");
  TORCH_CHECK(ptr_t.numel() == in.num_src + 1 && in.num_dst >= 0,
              "gat_attention: ptr_t must have N_src + 1 entries");
  TORCH_CHECK(eid.numel() == in.num_edges && dst_t.numel() == in.num_edges &&
                  eid_t.numel() == in.num_edges,
              "gat_attention: the index tensors differ in length");
  const auto index_type = src.scalar_type();
  TORCH_CHECK((index_type == at::kInt || index_type == at::kLong) &&
                  eid.scalar_type() == index_type &&
                  dst_t.scalar_type() == index_type &&
                  eid_t.scalar_type() == index_type,
              "gat_attention: src, eid, dst_t and eid_t must share one "
              "integer type (int32 or int64)");
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
  in.ptr = ptr.contiguous();
  in.src = src.contiguous();
  in.eid = eid.contiguous();
  in.ptr_t = ptr_t.contiguous();
  in.dst_t = dst_t.contiguous();
  in.eid_t = eid_t.contiguous();
  // A corrupt grouping must not send a kernel out of bounds: pointers must
  // be sorted from 0 to E and indices in range (linear scans, cheap next to
  // the E * H * C work of the kernels).
  for (const auto* p : {&in.ptr, &in.ptr_t}) {
    const int64_t* d = p->data_ptr<int64_t>();
    const int64_t n = p->numel();
    TORCH_CHECK(d[0] == 0 && d[n - 1] == in.num_edges,
                "gat_attention: a pointer must run from 0 to E");
    for (int64_t k = 1; k < n; ++k)
      TORCH_CHECK(d[k - 1] <= d[k], "gat_attention: pointer not sorted");
  }
  AT_DISPATCH_INDEX_TYPES(index_type, "gat_attention", [&] {
    const std::pair<const at::Tensor*, int64_t> ranges[] = {
        {&in.src, in.num_src},
        {&in.eid, in.num_edges},
        {&in.dst_t, in.num_dst},
        {&in.eid_t, in.num_edges}};
    for (const auto& [t, bound] : ranges) {
      const index_t* d = t->data_ptr<index_t>();
      bool ok = true;
      for (int64_t k = 0; k < in.num_edges; ++k)
        ok &= d[k] >= 0 && static_cast<int64_t>(d[k]) < bound;
      TORCH_CHECK_INDEX(ok, "gat_attention: graph index out of range");
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
  acc_t leaky(acc_t z) const { return z > acc_t(0) ? z : z * slope; }
};

template <typename scalar_t, typename index_t>
Graph<scalar_t, index_t> by_target(const Inputs& in, bool skip) {
  return {in.ptr.data_ptr<int64_t>(),
          in.src.data_ptr<index_t>(),
          in.eid.data_ptr<index_t>(),
          in.num_dst,
          in.num_edges,
          in.num_loops,
          skip};
}

template <typename scalar_t, typename index_t>
Graph<scalar_t, index_t> by_source(const Inputs& in, bool skip) {
  return {in.ptr_t.data_ptr<int64_t>(),
          in.dst_t.data_ptr<index_t>(),
          in.eid_t.data_ptr<index_t>(),
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

// Forward: one worker per block of targets. For target i, a first walk over
// its edges computes the running maximum and sum of exp per head (the
// log-sum-exp, saved); a second walk accumulates alpha * dropout * x_j into
// an [H, C] row. NaN scores propagate to the whole row, as in PyG.
template <typename scalar_t, typename index_t>
void forward_kernel(const Inputs& in, bool skip, double negative_slope,
                    const Dropout& drop, at::Tensor& out, at::Tensor& lse,
                    at::Tensor& alpha, bool need_alpha) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t H = in.heads, C = in.channels;
  const auto graph = by_target<scalar_t, index_t>(in, skip);
  const auto score = scores_of<scalar_t, acc_t>(in, negative_slope);
  const scalar_t* x = in.x.data_ptr<scalar_t>();
  scalar_t* po = out.data_ptr<scalar_t>();
  acc_t* pl = lse.data_ptr<acc_t>();
  scalar_t* pa = need_alpha ? alpha.data_ptr<scalar_t>() : nullptr;
  constexpr acc_t inf = std::numeric_limits<acc_t>::infinity();

  parallel_nodes(graph.ptr, in.num_dst, [&](int64_t i0, int64_t i1) {
    std::vector<acc_t> m(H), s(H), acc(H * C);
    for (int64_t i = i0; i < i1; ++i) {
      std::fill(m.begin(), m.end(), -inf);
      std::fill(s.begin(), s.end(), acc_t(0));
      graph.for_each_edge(
          i,
          [&](int64_t j, int64_t id) {
            for (int64_t h = 0; h < H; ++h) {
              const acc_t e = score.leaky(score.raw(j, i, id, h));
              if (e > m[h]) {
                s[h] *= std::exp(m[h] - e);
                m[h] = e;
              }
              s[h] += std::exp(e - m[h]);
            }
          },
          [&](int64_t id) {
            if (pa)
              for (int64_t h = 0; h < H; ++h) pa[id * H + h] = scalar_t(0);
          });
      acc_t* li = pl + i * H;
      for (int64_t h = 0; h < H; ++h)  // NaN stays NaN.
        li[h] = s[h] == acc_t(0) ? -inf : m[h] + std::log(s[h]);

      std::fill(acc.begin(), acc.end(), acc_t(0));
      graph.for_each_edge(
          i,
          [&](int64_t j, int64_t id) {
            const scalar_t* xj = x + j * H * C;
            for (int64_t h = 0; h < H; ++h) {
              const acc_t e = score.leaky(score.raw(j, i, id, h));
              const acc_t w = std::exp(e - li[h]) * drop.factor<acc_t>(id, h);
              if (pa) pa[id * H + h] = static_cast<scalar_t>(w);
              acc_t* ah = acc.data() + h * C;
              const scalar_t* xh = xj + h * C;
              for (int64_t c = 0; c < C; ++c)
                ah[c] += w * static_cast<acc_t>(xh[c]);
            }
          },
          [](int64_t) {});
      scalar_t* oi = po + i * H * C;
      for (int64_t k = 0; k < H * C; ++k)
        oi[k] = static_cast<scalar_t>(acc[k]);
    }
  });
}

// Backward, pass over targets: for target i and each of its edges,
// g_alpha = dropout * (<g_i, x_j> + grad_alpha) is stored by edge id in
// `dz` while D_i = sum alpha * g_alpha accumulates; a second walk turns it
// into the score gradient alpha (g_alpha - D_i) LeakyReLU'(z), summed into
// grad_a_dst. Left-out edges get zero.
template <typename scalar_t, typename index_t>
void backward_target_kernel(const Inputs& in, bool skip, double negative_slope,
                            const Dropout& drop, const at::Tensor& grad_out,
                            const scalar_t* grad_alpha, const at::Tensor& lse,
                            at::Tensor& dz, at::Tensor& grad_dst) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t H = in.heads, C = in.channels;
  const auto graph = by_target<scalar_t, index_t>(in, skip);
  const auto score = scores_of<scalar_t, acc_t>(in, negative_slope);
  const scalar_t* x = in.x.data_ptr<scalar_t>();
  const scalar_t* go = grad_out.data_ptr<scalar_t>();
  const acc_t* pl = lse.data_ptr<acc_t>();
  acc_t* pz = dz.data_ptr<acc_t>();
  acc_t* pg = grad_dst.data_ptr<acc_t>();

  parallel_nodes(graph.ptr, in.num_dst, [&](int64_t i0, int64_t i1) {
    std::vector<acc_t> d(H), gi(H * C);
    for (int64_t i = i0; i < i1; ++i) {
      const acc_t* li = pl + i * H;
      for (int64_t k = 0; k < H * C; ++k)
        gi[k] = static_cast<acc_t>(go[i * H * C + k]);
      std::fill(d.begin(), d.end(), acc_t(0));
      auto zero = [&](int64_t id) {
        for (int64_t h = 0; h < H; ++h) pz[id * H + h] = acc_t(0);
      };
      graph.for_each_edge(
          i,
          [&](int64_t j, int64_t id) {
            const scalar_t* xj = x + j * H * C;
            for (int64_t h = 0; h < H; ++h) {
              const acc_t e = score.leaky(score.raw(j, i, id, h));
              const acc_t a = std::exp(e - li[h]);
              const acc_t* gh = gi.data() + h * C;
              const scalar_t* xh = xj + h * C;
              acc_t dot = 0;
              for (int64_t c = 0; c < C; ++c)
                dot += gh[c] * static_cast<acc_t>(xh[c]);
              if (grad_alpha)
                dot += static_cast<acc_t>(grad_alpha[id * H + h]);
              const acc_t ga = dot * drop.factor<acc_t>(id, h);
              pz[id * H + h] = ga;
              d[h] += a * ga;
            }
          },
          zero);
      acc_t* gd = pg + i * H;
      for (int64_t h = 0; h < H; ++h) gd[h] = acc_t(0);
      graph.for_each_edge(
          i,
          [&](int64_t j, int64_t id) {
            for (int64_t h = 0; h < H; ++h) {
              const acc_t z = score.raw(j, i, id, h);
              const acc_t a = std::exp(score.leaky(z) - li[h]);
              const acc_t g = a * (pz[id * H + h] - d[h]) *
                              (z > acc_t(0) ? acc_t(1) : score.slope);
              pz[id * H + h] = g;
              gd[h] += g;
            }
          },
          [](int64_t) {});
    }
  });
}

// Backward, pass over sources: for source j, grad_a_src sums the score
// gradients of its edges and grad_x_j = sum_i alpha * dropout * g_i, with
// alpha recomputed from the saved log-sum-exp of target i.
template <typename scalar_t, typename index_t>
void backward_source_kernel(const Inputs& in, bool skip, double negative_slope,
                            const Dropout& drop, const at::Tensor& grad_out,
                            const at::Tensor& lse, const at::Tensor& dz,
                            at::Tensor& grad_x, at::Tensor& grad_src) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t H = in.heads, C = in.channels;
  const auto graph = by_source<scalar_t, index_t>(in, skip);
  const auto score = scores_of<scalar_t, acc_t>(in, negative_slope);
  const scalar_t* go = grad_out.data_ptr<scalar_t>();
  const acc_t* pl = lse.data_ptr<acc_t>();
  const acc_t* pz = dz.data_ptr<acc_t>();
  scalar_t* px = grad_x.data_ptr<scalar_t>();
  acc_t* ps = grad_src.data_ptr<acc_t>();

  parallel_nodes(graph.ptr, in.num_src, [&](int64_t j0, int64_t j1) {
    std::vector<acc_t> acc(H * C);
    for (int64_t j = j0; j < j1; ++j) {
      std::fill(acc.begin(), acc.end(), acc_t(0));
      acc_t* gs = ps + j * H;
      for (int64_t h = 0; h < H; ++h) gs[h] = acc_t(0);
      graph.for_each_edge(
          j,
          [&](int64_t i, int64_t id) {
            const scalar_t* gi = go + i * H * C;
            for (int64_t h = 0; h < H; ++h) {
              gs[h] += pz[id * H + h];
              const acc_t e = score.leaky(score.raw(j, i, id, h));
              const acc_t w =
                  std::exp(e - pl[i * H + h]) * drop.factor<acc_t>(id, h);
              acc_t* ah = acc.data() + h * C;
              const scalar_t* gh = gi + h * C;
              for (int64_t c = 0; c < C; ++c)
                ah[c] += w * static_cast<acc_t>(gh[c]);
            }
          },
          [](int64_t) {});
      scalar_t* xj = px + j * H * C;
      for (int64_t k = 0; k < H * C; ++k)
        xj[k] = static_cast<scalar_t>(acc[k]);
    }
  });
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> gat_attention_cpu(
    const at::Tensor& x, const at::Tensor& a_src, const at::Tensor& a_dst,
    const std::optional<at::Tensor>& edge_score, const at::Tensor& ptr,
    const at::Tensor& src, const at::Tensor& eid, const at::Tensor& ptr_t,
    const at::Tensor& dst_t, const at::Tensor& eid_t, int64_t num_loops,
    bool skip_self_loops, double negative_slope, double dropout, int64_t seed0,
    int64_t seed1, bool need_alpha) {
  const Inputs in = check_inputs(x, a_src, a_dst, edge_score, ptr, src, eid,
                                 ptr_t, dst_t, eid_t, num_loops);
  const Dropout drop(dropout, seed0, seed1);
  const auto acc_type = at::toOpMathType(x.scalar_type());
  auto out = at::empty({in.num_dst, in.heads, in.channels}, x.options());
  auto lse = at::empty({in.num_dst, in.heads}, x.options().dtype(acc_type));
  auto alpha = at::empty({need_alpha ? in.num_edges + num_loops : 0, in.heads},
                         x.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, x.scalar_type(), "gat_attention", [&] {
        AT_DISPATCH_INDEX_TYPES(src.scalar_type(), "gat_attention", [&] {
          forward_kernel<scalar_t, index_t>(in, skip_self_loops,
                                            negative_slope, drop, out, lse,
                                            alpha, need_alpha);
        });
      });
  return {out, lse, alpha};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>
gat_attention_backward_cpu(
    const at::Tensor& grad_out, const std::optional<at::Tensor>& grad_alpha,
    const at::Tensor& x, const at::Tensor& a_src, const at::Tensor& a_dst,
    const std::optional<at::Tensor>& edge_score, const at::Tensor& lse,
    const at::Tensor& ptr, const at::Tensor& src, const at::Tensor& eid,
    const at::Tensor& ptr_t, const at::Tensor& dst_t, const at::Tensor& eid_t,
    int64_t num_loops, bool skip_self_loops, double negative_slope,
    double dropout, int64_t seed0, int64_t seed1) {
  const Inputs in = check_inputs(x, a_src, a_dst, edge_score, ptr, src, eid,
                                 ptr_t, dst_t, eid_t, num_loops);
  const Dropout drop(dropout, seed0, seed1);
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
  auto dz = at::empty({in.num_edges + num_loops, in.heads}, acc_options);
  auto grad_dst = at::empty({in.num_dst, in.heads}, acc_options);
  auto grad_src = at::empty({in.num_src, in.heads}, acc_options);
  auto grad_x = at::empty_like(in.x);
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, x.scalar_type(), "gat_attention_backward",
      [&] {
        AT_DISPATCH_INDEX_TYPES(
            src.scalar_type(), "gat_attention_backward", [&] {
              backward_target_kernel<scalar_t, index_t>(
                  in, skip_self_loops, negative_slope, drop, g,
                  ga ? ga->data_ptr<scalar_t>() : nullptr, l, dz, grad_dst);
              backward_source_kernel<scalar_t, index_t>(
                  in, skip_self_loops, negative_slope, drop, g, l, dz, grad_x,
                  grad_src);
            });
      });
  auto grad_edge = edge_score.has_value()
                       ? dz.to(x.scalar_type())
                       : at::empty({0, in.heads}, x.options());
  return {grad_x, grad_src.to(x.scalar_type()), grad_dst.to(x.scalar_type()),
          grad_edge};
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(pyg_gat_ext_cpu, m) {
  m.def(
      "gat_attention(Tensor x, Tensor a_src, Tensor a_dst, "
      "Tensor? edge_score, Tensor ptr, Tensor src, Tensor eid, Tensor ptr_t, "
      "Tensor dst_t, Tensor eid_t, int num_loops, bool skip_self_loops, "
      "float negative_slope, float dropout, int seed0, int seed1, "
      "bool need_alpha) -> (Tensor, Tensor, Tensor)");
  m.def(
      "gat_attention_backward(Tensor grad_out, Tensor? grad_alpha, Tensor x, "
      "Tensor a_src, Tensor a_dst, Tensor? edge_score, Tensor lse, "
      "Tensor ptr, Tensor src, Tensor eid, Tensor ptr_t, Tensor dst_t, "
      "Tensor eid_t, int num_loops, bool skip_self_loops, "
      "float negative_slope, float dropout, int seed0, int seed1) -> "
      "(Tensor, Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(pyg_gat_ext_cpu, CPU, m) {
  m.impl("gat_attention", &gat_attention_cpu);
  m.impl("gat_attention_backward", &gat_attention_backward_cpu);
}

}  // namespace pyg_gat_ext
