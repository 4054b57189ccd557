// CPU kernels of the fused GATv2 attention: forward and backward, without
// ever forming the [E, H, C] sums or messages (the graph, its implicit
// self-loops and skipped edges as in attention.h).
//
// Per edge (j -> i) with id `id` and head h (rows of C channels):
//   s = x_dst[i] + x_src[j] + edge_x[id],   u = LeakyReLU(s),
//   e = <att[h], u>,   alpha = exp(e - lse_i),   out_i = sum_j alpha f x_j,
// f the dropout factor of (id, h). With g_i = dL/d out_i and grad_alpha
// the gradient of the returned weights alpha f:
//   dL/d alpha = f (<g_i, x_j> + grad_alpha[id]) =: ga,
//   de = dL/de = alpha (ga - D_i),   D_i = sum_j alpha ga  (the softmax),
//   ds = de att * LeakyReLU'(s)  (per channel; LeakyReLU' = 1 where s > 0,
//                                 else slope),
// and s is linear in its three rows, so
//   grad_x_dst[i] = sum_j ds,   grad_edge_x[id] = ds,
//   grad_x_src[j] = sum_i (alpha f g_i + ds),   grad_att = sum de u.
//
// Forward: one pass per target; for each of its counted edges the C-wide
// sums on the fly and the score, then GAT's softmax over the node's scores
// (attention.h: softmax_weights, saving lse), then the weighted sum of the
// source rows: two loops over the node's few edges (scores, then rows)
// rather than an online softmax, whose rescaling costs an [H, C]
// multiplication per new maximum; the second loop reads rows the first just
// brought into cache.
// Backward, with no atomics and a result that does not depend on the
// thread count:
// - a pass over targets: per target, its edges' sums s (kept in a
//   per-thread buffer), alpha (from lse), ga and D_i (stored, [N_dst, H]),
//   then per edge de and ds, summed into grad_x_dst[i] and written as the
//   edge's grad_edge_x row, and de u into partial sums of grad_att over
//   fixed blocks of targets (independent of the thread count), summed in
//   block order. Each edge leaves a record (EdgeState): alpha per head and
//   the signs of s per channel (one bit), E (4 H + H C / 8) bytes in all for
//   float, written in order;
// - a pass over sources (CSC) that sums alpha f g_i + ds into grad_x_src[j]
//   from the records, D_i and ga (recomputed: x_j is the pass's own row and
//   g_i is read anyway), without the sums, the score or its exponential,
//   which would cost the gathered rows x_dst[i] (and edge_x) per edge.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/ops/empty.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
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
  at::Tensor x_src, x_dst, att;
  std::optional<at::Tensor> edge_x;
  int64_t heads, channels;
};

// The op's contract on its tensors (the Python front, ops/attention.py,
// checks user input with its own messages; this guards the raw operator).
Inputs check_inputs(const char* op, const at::Tensor& x_src,
                    const at::Tensor& x_dst, const at::Tensor& att,
                    const std::optional<at::Tensor>& edge_x,
                    const at::Tensor& rowptr, const at::Tensor& col,
                    const at::Tensor& csr_eid, const at::Tensor& colptr,
                    const at::Tensor& row, const at::Tensor& csc_eid,
                    int64_t num_loops) {
  TORCH_CHECK_VALUE(x_src.dim() == 3, op,
                    ": x_src must be [N_src, H, C] (got ", x_src.sizes(), ")");
  const auto type = x_src.scalar_type();
  TORCH_CHECK_TYPE(type == at::kFloat || type == at::kDouble ||
                       type == at::kHalf || type == at::kBFloat16,
                   op,
                   ": x_src must be float32, float64, float16 or bfloat16 "
                   "(got ",
                   type, ")");
  Inputs in;
  static_cast<GraphInputs&>(in) =
      check_graph(op, x_src.size(0), rowptr, col, csr_eid, colptr, row,
                  csc_eid, num_loops);
  in.heads = x_src.size(1);
  in.channels = x_src.size(2);
  const int64_t H = in.heads, C = in.channels;
  TORCH_CHECK_VALUE(x_dst.sizes() == at::IntArrayRef({in.num_dst, H, C}), op,
                    ": x_dst must be [N_dst, H, C] = [", in.num_dst, ", ", H,
                    ", ", C, "] (got ", x_dst.sizes(), ")");
  TORCH_CHECK_VALUE(att.sizes() == at::IntArrayRef({H, C}), op,
                    ": att must be [H, C] = [", H, ", ", C, "] (got ",
                    att.sizes(), ")");
  TORCH_CHECK_TYPE(x_dst.scalar_type() == type && att.scalar_type() == type,
                   op, ": x_dst and att must have the dtype of x_src (", type,
                   "; got ", x_dst.scalar_type(), " and ", att.scalar_type(),
                   ")");
  if (edge_x.has_value()) {
    TORCH_CHECK_VALUE(
        edge_x->sizes() == at::IntArrayRef({in.num_edges + num_loops, H, C}),
        op, ": edge_x must be [E + num_loops, H, C] = [",
        in.num_edges + num_loops, ", ", H, ", ", C, "] (got ", edge_x->sizes(),
        ")");
    TORCH_CHECK_TYPE(edge_x->scalar_type() == type, op,
                     ": edge_x must have the dtype of x_src (", type, "; got ",
                     edge_x->scalar_type(), ")");
    in.edge_x = edge_x->contiguous();
  }
  in.x_src = x_src.contiguous();
  in.x_dst = x_dst.contiguous();
  in.att = att.contiguous();
  return in;
}

// The feature rows of the op: s = x_dst[i] + x_src[j] (+ edge_x[id]) and
// the score e[h] = <att[h], LeakyReLU(s[h])> of an edge, for [H, C] rows
// of HC = H C values.
template <typename scalar_t, typename acc_t>
struct Rows {
  const scalar_t* x_src;
  const scalar_t* x_dst;
  const scalar_t* edge_x;  // nullptr if absent.
  const acc_t* att;        // [H, C], in acc_t.
  int64_t heads, C, HC;
  acc_t slope;

  void sums(int64_t i, int64_t j, int64_t id, acc_t* __restrict s) const {
    const scalar_t* __restrict xd = x_dst + i * HC;
    const scalar_t* __restrict xs = x_src + j * HC;
    if (edge_x) {
      const scalar_t* __restrict xe = edge_x + id * HC;
      for (int64_t c = 0; c < HC; ++c)
        s[c] = static_cast<acc_t>(xd[c]) + static_cast<acc_t>(xs[c]) +
               static_cast<acc_t>(xe[c]);
    } else {
      for (int64_t c = 0; c < HC; ++c)
        s[c] = static_cast<acc_t>(xd[c]) + static_cast<acc_t>(xs[c]);
    }
  }

  // s (sums above) and e for edge (j -> i). Compiled on its own, and its
  // LeakyReLU branch-free (attention.h: leaky_relu): inlined
  // into a larger forward kernel, GCC once compiled this loop into scalar
  // code with a branch per channel that the random signs mispredict, four
  // times slower at 4 heads x 64.
  template <int HT>
  [[gnu::noinline]] void scores(int64_t i, int64_t j, int64_t id,
                                acc_t* __restrict s, acc_t* e) const {
    const int64_t H = HT > 0 ? HT : heads;
    sums(i, j, id, s);
    const acc_t sl = slope;  // Locals: the loops then vectorise.
    const acc_t* a = att;
    head_sums<HT>(e, H, C, [&](int64_t k) {
      return a[k] * leaky_relu(s[k], sl);
    });
  }

  // Prefetches the rows that edge (j -> i) reads besides x_dst[i].
  void prefetch_edge(int64_t j, int64_t id) const {
    prefetch_row(x_src + j * HC, HC * sizeof(scalar_t));
    if (edge_x) prefetch_row(edge_x + id * HC, HC * sizeof(scalar_t));
  }
};

template <typename scalar_t, typename acc_t>
Rows<scalar_t, acc_t> rows_of(const Inputs& in, double negative_slope,
                              std::vector<acc_t>& att) {
  const scalar_t* pa = in.att.data_ptr<scalar_t>();
  att.assign(pa, pa + in.heads * in.channels);
  return {in.x_src.data_ptr<scalar_t>(),
          in.x_dst.data_ptr<scalar_t>(),
          in.edge_x ? in.edge_x->data_ptr<scalar_t>() : nullptr,
          att.data(),
          in.heads,
          in.channels,
          in.heads * in.channels,
          static_cast<acc_t>(negative_slope)};
}

// Forward: one worker per block of targets (see the top of the file).
template <typename scalar_t, int HT>
void forward_kernel(const Inputs& in, bool skip, double negative_slope,
                    const Dropout& drop, at::Tensor& out, at::Tensor& lse,
                    at::Tensor& alpha, bool return_attention_weights) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t H = HT > 0 ? HT : in.heads, C = in.channels, HC = H * C;
  const auto graph = in.by_target(skip);
  std::vector<acc_t> att;
  const auto rows = rows_of<scalar_t>(in, negative_slope, att);
  scalar_t* po = out.data_ptr<scalar_t>();
  acc_t* pl = lse.data_ptr<acc_t>();
  scalar_t* pa =
      return_attention_weights ? alpha.data_ptr<scalar_t>() : nullptr;

  parallel_nodes(graph.ptr, in.num_dst, [&](int64_t i0, int64_t i1) {
    NodeEdges<acc_t> ne;
    int64_t q = graph.ptr[i0];
    std::vector<acc_t> scratch(3 * H), s(HC), acc(HC);
    for (int64_t i = i0; i < i1; ++i) {
      prefetch_ahead(graph, i, graph.ptr[i1], q, [&](int64_t p) {
        rows.prefetch_edge(graph.nbr_at(p), graph.eid_at(p));
      });
      ne.gather(graph, i, H, [&](int64_t id) {
        if (pa) std::fill(pa + id * H, pa + (id + 1) * H, scalar_t(0));
      });
      for (int64_t k = 0; k < ne.n; ++k)
        rows.template scores<HT>(i, ne.nbr[k], ne.id[k], s.data(),
                                 ne.z.data() + k * H);
      softmax_weights<HT>(
          ne, H, [](auto e) { return e; }, drop, pl + i * H, pa,
          scratch.data(), [](int64_t, const acc_t*) {});
      std::fill(acc.begin(), acc.end(), acc_t(0));
      for (int64_t k = 0; k < ne.n; ++k)
        add_weighted_row<HT>(acc.data(), ne.w.data() + k * H,
                             rows.x_src + ne.nbr[k] * HC, H, C);
      std::copy(acc.begin(), acc.end(), po + i * HC);
    }
  });
}

// The gradient of the loss with respect to the weights of edge (j -> i)
// with id `id`, per head: the dropout factors f and ga = f (<g_i, x_j> +
// grad_alpha[id]) (`grad_alpha` may be null). Both backward passes compute
// it: the source pass has x_j at hand and reads g_i anyway, so this costs
// it less than the memory of keeping ga per edge.
template <int HT, typename scalar_t, typename acc_t>
inline void weight_grads(const Rows<scalar_t, acc_t>& rows,
                         const Dropout& drop, const scalar_t* g_i,
                         const scalar_t* grad_alpha, int64_t j, int64_t id,
                         acc_t* f, acc_t* ga) {
  const int64_t H = HT > 0 ? HT : rows.heads;
  head_dots<HT>(ga, g_i, rows.x_src + j * rows.HC, H, rows.C);
  drop.factors(id, H, f);
  for (int64_t h = 0; h < H; ++h) {
    const acc_t extra =
        grad_alpha ? static_cast<acc_t>(grad_alpha[id * H + h]) : acc_t(0);
    ga[h] = f[h] * (ga[h] + extra);
  }
}

// The fixed blocks of targets of the backward target pass, at most this
// many (whatever the thread count, so that the partial sums of grad_att and
// their sum do not depend on it).
constexpr int64_t kFixedBlocks = 1024;

// A target with at most this many counted edges keeps their sums s in a
// per-thread buffer between the two loops of the target pass; a target with
// more (a hub of a power-law graph) computes them again, which costs the
// reads of the rows but bounds the buffer (kStoredSums H C values).
constexpr int64_t kStoredSums = 512;

// What the target pass leaves per edge for the source pass, which then reads
// two gathered rows per edge (g_i and this record) instead of four (x_dst[i]
// and edge_x for the sums, g_i, and lse_i) and recomputes neither the score
// nor its exponential: a record of alpha per head (in acc_t) and the signs
// of s, one bit per channel (s > 0, in 64-bit words), per slot: the edge's
// position in the grouping by target (E + i for i's self-loop), so that the
// target pass writes the records in order (written by edge id, the writes
// would scatter and cost more than the pass's arithmetic). The source pass
// finds an edge's slot in `slot`, by its position by source.
template <typename acc_t>
struct EdgeState {
  char* base;
  int64_t heads, words, bytes;  // bytes: of one record.
  const void* slot;             // [E], the graph's index type.
  bool wide;
  int64_t num_edges;

  acc_t* alpha(int64_t k) const {
    return reinterpret_cast<acc_t*>(base + k * bytes);
  }
  uint64_t* positive(int64_t k) const {
    return reinterpret_cast<uint64_t*>(alpha(k) + heads);
  }
  // The slot of the edge at position `p` by source (p >= E: a self-loop,
  // whose slot is p).
  int64_t slot_of(int64_t p) const {
    return p >= num_edges ? p : index_at(slot, wide, p);
  }
};

inline int64_t sign_words(int64_t HC) { return (HC + 63) / 64; }

// The bytes of one EdgeState record: H values of `acc_type` and the sign
// words, a multiple of 8 bytes (the words stay aligned).
inline int64_t record_bytes(int64_t H, int64_t HC, at::ScalarType acc_type) {
  const int64_t values = (H * at::elementSize(acc_type) + 7) / 8 * 8;
  return values + 8 * sign_words(HC);
}

// Pass over targets. Per target i, a first loop over its edges: s (kept),
// alpha, ga and D_i (stored in `delta`); a second: de, ds = de att
// LeakyReLU'(s) summed into grad_x_dst[i] and written as the edge's
// grad_edge_x row (if `grad_edge` is not null), de u into the partial sums
// of grad_att over the fixed blocks of targets (added up in block order),
// and the edge's record for the source pass (which skips the skipped edges
// too: their records are not written).
template <typename scalar_t, int HT>
void backward_target_kernel(const Inputs& in, bool skip, double negative_slope,
                            const Dropout& drop, const scalar_t* grad_out,
                            const scalar_t* grad_alpha, const at::Tensor& lse,
                            at::Tensor& delta, at::Tensor& grad_x_dst,
                            at::Tensor& grad_att, scalar_t* grad_edge,
                            const EdgeState<at::opmath_type<scalar_t>>& st) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t H = HT > 0 ? HT : in.heads, C = in.channels, HC = H * C;
  const int64_t W = st.words;
  const auto graph = in.by_target(skip);
  std::vector<acc_t> att;
  const auto rows = rows_of<scalar_t>(in, negative_slope, att);
  const acc_t slope = rows.slope;
  const acc_t* pl = lse.data_ptr<acc_t>();
  acc_t* pd = delta.data_ptr<acc_t>();
  scalar_t* pg = grad_x_dst.data_ptr<scalar_t>();
  const auto bounds = node_blocks(graph.ptr, in.num_dst, kFixedBlocks);
  std::vector<acc_t> parts((bounds.size() - 1) * HC, acc_t(0));
  acc_t* pp = parts.data();

  parallel_blocks(bounds, [&](int64_t b, int64_t i0, int64_t i1) {
    NodeEdges<acc_t> ne;
    int64_t q = graph.ptr[i0];
    std::vector<acc_t> sums, acc(HC), f(H);
    acc_t* __restrict part = pp + b * HC;
    for (int64_t i = i0; i < i1; ++i) {
      prefetch_ahead(graph, i, graph.ptr[i1], q, [&](int64_t p) {
        rows.prefetch_edge(graph.nbr_at(p), graph.eid_at(p));
      });
      ne.gather(graph, i, H, [&](int64_t id) {
        if (grad_edge)
          std::fill(grad_edge + id * HC, grad_edge + (id + 1) * HC,
                    scalar_t(0));
      });
      const bool kept = ne.n <= kStoredSums;
      const size_t need = static_cast<size_t>(kept ? ne.n : 1) * HC;
      if (sums.size() < need) sums.resize(need);
      const scalar_t* g_i = grad_out + i * HC;
      acc_t* d = pd + i * H;
      std::fill(d, d + H, acc_t(0));
      // w = alpha and z = ga per edge, then D_i.
      for (int64_t k = 0; k < ne.n; ++k) {
        acc_t* a = ne.w.data() + k * H;
        acc_t* ga = ne.z.data() + k * H;
        rows.template scores<HT>(i, ne.nbr[k], ne.id[k],
                                 sums.data() + (kept ? k * HC : 0), a);
        for (int64_t h = 0; h < H; ++h)
          a[h] = exp_approx(a[h] - pl[i * H + h]);
        weight_grads<HT>(rows, drop, g_i, grad_alpha, ne.nbr[k], ne.id[k],
                         f.data(), ga);
        for (int64_t h = 0; h < H; ++h) d[h] += a[h] * ga[h];
      }
      std::fill(acc.begin(), acc.end(), acc_t(0));
      for (int64_t k = 0; k < ne.n; ++k) {
        const int64_t id = ne.id[k];
        acc_t* __restrict s = sums.data();
        if (kept) {
          s += k * HC;
        } else {
          rows.sums(i, ne.nbr[k], id, s);
        }
        const int64_t slot = ne.pos[k];
        std::copy(ne.w.data() + k * H, ne.w.data() + (k + 1) * H,
                  st.alpha(slot));
        uint64_t* __restrict bits = st.positive(slot);
        for (int64_t v = 0; v < W; ++v) {  // In a register, then stored.
          uint64_t m = 0;
          const int64_t c0 = v * 64, n = std::min<int64_t>(64, HC - c0);
          for (int64_t c = 0; c < n; ++c)
            m |= static_cast<uint64_t>(s[c0 + c] > acc_t(0)) << c;
          bits[v] = m;
        }
        for (int64_t h = 0; h < H; ++h) {
          const acc_t de = ne.w[k * H + h] * (ne.z[k * H + h] - d[h]);
          // de LeakyReLU'(s): de where s > 0, else (NaN too) de slope.
          const acc_t de_slope = de * slope;
          const acc_t* __restrict a = att.data() + h * C;
          acc_t* __restrict sh = s + h * C;  // s, then ds.
          acc_t* __restrict ah = acc.data() + h * C;
          acc_t* __restrict ph = part + h * C;
          for (int64_t c = 0; c < C; ++c) {
            const acc_t v = sh[c], dl = v > acc_t(0) ? de : de_slope;
            ph[c] += dl * v;  // de u = de LeakyReLU'(s) s.
            sh[c] = dl * a[c];
            ah[c] += sh[c];
          }
        }
        if (grad_edge)
          for (int64_t c = 0; c < HC; ++c)
            grad_edge[id * HC + c] = static_cast<scalar_t>(s[c]);
      }
      std::copy(acc.begin(), acc.end(), pg + i * HC);
    }
  });
  std::vector<acc_t> sum(HC, acc_t(0));
  for (size_t b = 0; b + 1 < bounds.size(); ++b)
    for (int64_t c = 0; c < HC; ++c) sum[c] += pp[b * HC + c];
  std::copy(sum.begin(), sum.end(), grad_att.data_ptr<scalar_t>());
}

// The position by target of the edge at each position by source: the
// inverse of csr_eid composed with csc_eid ([E], the graph's index type).
at::Tensor slots_by_source(const Inputs& in) {
  const int64_t E = in.num_edges;
  auto slot = at::empty({E}, in.col.options());
  auto by_id = at::empty({E}, in.col.options());
  AT_DISPATCH_INDEX_TYPES(in.col.scalar_type(), "slots_by_source", [&] {
    const index_t* csr_eid = in.csr_eid.data_ptr<index_t>();
    const index_t* csc_eid = in.csc_eid.data_ptr<index_t>();
    index_t* ps = slot.data_ptr<index_t>();
    index_t* pi = by_id.data_ptr<index_t>();
    parallel_for(0, E, 1 << 14, [&](int64_t p0, int64_t p1) {
      for (int64_t p = p0; p < p1; ++p)
        pi[csr_eid[p]] = static_cast<index_t>(p);
    });
    parallel_for(0, E, 1 << 14, [&](int64_t p0, int64_t p1) {
      for (int64_t p = p0; p < p1; ++p) ps[p] = pi[csc_eid[p]];
    });
  });
  return slot;
}

// Pass over sources: grad_x_src[j] = sum_i (alpha f g_i + ds), from the
// edges' records and D_i, with ga again (weight_grads), de = alpha (ga -
// D_i) and ds = att (de where s > 0, else de slope): the sum over i of the
// factors of att is taken first.
template <typename scalar_t, int HT>
void backward_source_kernel(const Inputs& in, bool skip, double negative_slope,
                            const Dropout& drop, const scalar_t* grad_out,
                            const scalar_t* grad_alpha,
                            const at::Tensor& delta, at::Tensor& grad_x_src,
                            const EdgeState<at::opmath_type<scalar_t>>& st) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t H = HT > 0 ? HT : in.heads, C = in.channels, HC = H * C;
  const auto graph = in.by_source(skip);
  std::vector<acc_t> att;
  const auto rows = rows_of<scalar_t>(in, negative_slope, att);
  const acc_t slope = rows.slope;
  const acc_t* pd = delta.data_ptr<acc_t>();
  scalar_t* px = grad_x_src.data_ptr<scalar_t>();
  const int64_t row_bytes = HC * sizeof(scalar_t);

  parallel_nodes(graph.ptr, in.num_src, [&](int64_t j0, int64_t j1) {
    NodeEdges<acc_t> ne;
    int64_t q = graph.ptr[j0];
    std::vector<acc_t> acc(HC), dl(HC), f(H), ga(H);
    for (int64_t j = j0; j < j1; ++j) {
      prefetch_ahead(graph, j, graph.ptr[j1], q, [&](int64_t p) {
        const int64_t i = graph.nbr_at(p);
        prefetch_row(grad_out + i * HC, row_bytes);
        prefetch_row(st.alpha(st.slot_of(p)), st.bytes);
        prefetch(pd + i * H);
        if (grad_alpha) prefetch(grad_alpha + graph.eid_at(p) * H);
      });
      ne.gather(graph, j, H, [](int64_t) {});
      std::fill(acc.begin(), acc.end(), acc_t(0));
      std::fill(dl.begin(), dl.end(), acc_t(0));
      for (int64_t k = 0; k < ne.n; ++k) {
        const int64_t i = ne.nbr[k], slot = st.slot_of(ne.pos[k]);
        const scalar_t* __restrict g_i = grad_out + i * HC;
        const acc_t* __restrict alpha = st.alpha(slot);
        const uint64_t* __restrict bits = st.positive(slot);
        weight_grads<HT>(rows, drop, g_i, grad_alpha, j, ne.id[k], f.data(),
                         ga.data());
        for (int64_t h = 0; h < H; ++h) {
          const acc_t de = alpha[h] * (ga[h] - pd[i * H + h]);
          const acc_t w = alpha[h] * f[h], de_slope = de * slope;
          const scalar_t* __restrict gh = g_i + h * C;
          acc_t* __restrict ah = acc.data() + h * C;
          acc_t* __restrict lh = dl.data() + h * C;
          for (int64_t c = 0; c < C; ++c) {
            const int64_t b = h * C + c;
            ah[c] += w * static_cast<acc_t>(gh[c]);
            lh[c] += (bits[b >> 6] >> (b & 63)) & 1 ? de : de_slope;
          }
        }
      }
      for (int64_t c = 0; c < HC; ++c)
        px[j * HC + c] = static_cast<scalar_t>(acc[c] + att[c] * dl[c]);
    }
  });
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor> gatv2_attention_cpu(
    const at::Tensor& x_src, const at::Tensor& x_dst, const at::Tensor& att,
    const std::optional<at::Tensor>& edge_x, const at::Tensor& rowptr,
    const at::Tensor& col, const at::Tensor& csr_eid, const at::Tensor& colptr,
    const at::Tensor& row, const at::Tensor& csc_eid, int64_t num_loops,
    bool remove_self_loops, double negative_slope, double dropout,
    const std::optional<at::Tensor>& seed, bool return_attention_weights) {
  const Inputs in =
      check_inputs("gatv2_attention", x_src, x_dst, att, edge_x, rowptr, col,
                   csr_eid, colptr, row, csc_eid, num_loops);
  const Dropout drop(dropout, seed);
  at::Tensor out, lse, alpha;
  std::tie(out, lse, alpha) =
      forward_outputs(in, in.x_src, return_attention_weights);
  dispatch_kernel(in.x_src.scalar_type(), in.heads, [&](auto t, auto ht) {
    forward_kernel<decltype(t), decltype(ht)::value>(
        in, remove_self_loops, negative_slope, drop, out, lse, alpha,
        return_attention_weights);
  });
  return {out, lse, alpha};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>
gatv2_attention_backward_cpu(
    const at::Tensor& grad_out, const std::optional<at::Tensor>& grad_alpha,
    const at::Tensor& x_src, const at::Tensor& x_dst, const at::Tensor& att,
    const std::optional<at::Tensor>& edge_x, const at::Tensor& lse,
    const at::Tensor& rowptr, const at::Tensor& col, const at::Tensor& csr_eid,
    const at::Tensor& colptr, const at::Tensor& row, const at::Tensor& csc_eid,
    int64_t num_loops, bool remove_self_loops, double negative_slope,
    double dropout, const std::optional<at::Tensor>& seed) {
  const char* op = "gatv2_attention_backward";
  const Inputs in = check_inputs(op, x_src, x_dst, att, edge_x, rowptr, col,
                                 csr_eid, colptr, row, csc_eid, num_loops);
  const Dropout drop(dropout, seed);
  const auto type = in.x_src.scalar_type();
  const auto acc_type = at::toOpMathType(type);
  const int64_t H = in.heads, C = in.channels;
  const auto grads = check_grads(op, in, in.x_src, grad_out, lse, grad_alpha);
  const auto options = in.x_src.options();
  const int64_t num_ids = in.num_edges + num_loops;
  const int64_t words = sign_words(H * C);
  const int64_t record = record_bytes(H, H * C, acc_type);
  const auto slot = slots_by_source(in);  // Its scratch freed before:
  auto state = at::empty({num_ids, record}, options.dtype(at::kByte));
  auto delta = at::empty({in.num_dst, H}, options.dtype(acc_type));
  auto grad_att = at::empty({H, C}, options);
  auto grad_x_src = empty_pooled(in.x_src.sizes(), in.x_src.options());
  auto grad_x_dst = empty_pooled(in.x_dst.sizes(), in.x_dst.options());
  auto grad_edge = at::empty({in.edge_x ? num_ids : 0, H, C}, options);
  dispatch_kernel(type, H, [&](auto t, auto ht) {
    using scalar_t = decltype(t);
    using acc_t = at::opmath_type<scalar_t>;
    constexpr int HT = decltype(ht)::value;
    const auto& ga = grads.grad_alpha;
    const scalar_t* pg = grads.grad_out.data_ptr<scalar_t>();
    const scalar_t* pga = ga ? ga->data_ptr<scalar_t>() : nullptr;
    const EdgeState<acc_t> st{reinterpret_cast<char*>(state.data_ptr()),
                              H,
                              words,
                              record,
                              slot.data_ptr(),
                              slot.scalar_type() == at::kLong,
                              in.num_edges};
    backward_target_kernel<scalar_t, HT>(
        in, remove_self_loops, negative_slope, drop, pg, pga, grads.lse, delta,
        grad_x_dst, grad_att,
        in.edge_x ? grad_edge.data_ptr<scalar_t>() : nullptr, st);
    backward_source_kernel<scalar_t, HT>(in, remove_self_loops, negative_slope,
                                         drop, pg, pga, delta, grad_x_src, st);
  });
  return {grad_x_src, grad_x_dst, grad_att, grad_edge};
}

}  // namespace pyg_gat_ext
