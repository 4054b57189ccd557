r"""Pure-PyTorch reference implementations: the specification of every op.

Each function here is what the C++ and Triton kernels are tested against,
and what runs when no kernel is available for a device. They follow
:func:`torch_geometric.utils.softmax` to the letter, including its numerical
conventions (the maximum is taken of the detached input, empty segments have
a maximum of zero, and ``1e-16`` is added to every denominator).
"""
import math
from typing import Optional, Tuple

import torch
from torch import Tensor

#: Added to the softmax denominator, exactly as PyG does.
EPS = 1e-16


def opmath(dtype: torch.dtype) -> torch.dtype:
    r"""The type the ops compute in for inputs of :obj:`dtype`: float32 for
    half precision, else :obj:`dtype` itself."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def _broadcast(index: Tensor, src: Tensor, dim: int) -> Tensor:
    # View a 1-D `index` along `dim` of `src` and expand it to `src`'s shape,
    # as `scatter_reduce` needs.
    shape = [1] * src.dim()
    shape[dim] = -1
    return index.view(shape).expand_as(src)


def segment_sum(src: Tensor, index: Tensor, num_nodes: int,
                dim: int) -> Tensor:
    r"""Sums the entries of :obj:`src` along :obj:`dim` per segment."""
    size = list(src.shape)
    size[dim] = num_nodes
    return src.new_zeros(size).scatter_add_(dim, _broadcast(index, src, dim),
                                            src)


def _segment_index(index: Optional[Tensor], ptr: Optional[Tensor],
                   perm: Optional[Tensor], num_entries: int) -> Tensor:
    # The per-row segment of every entry, from whichever grouping is given.
    if index is not None:
        return index
    assert ptr is not None
    return ptr_to_index(ptr, perm, num_entries)


def segment_softmax(src: Tensor, index: Optional[Tensor],
                    ptr: Optional[Tensor], perm: Optional[Tensor],
                    num_nodes: int, dim: int) -> Tensor:
    r"""Softmax of :obj:`src` along :obj:`dim` within each segment.

    Entry :obj:`e` of :obj:`src` (along :obj:`dim`) belongs to segment
    :obj:`index[e]`, :obj:`0 <= index[e] < num_nodes`; :obj:`index` need
    not be sorted. Without :obj:`index`, the segments are those of the CSR
    grouping :obj:`(ptr, perm)`.
    """
    index = _segment_index(index, ptr, perm, src.size(dim))
    size = list(src.shape)
    size[dim] = num_nodes
    src_max = src.new_zeros(size).scatter_reduce_(
        dim, _broadcast(index, src, dim), src.detach(), 'amax',
        include_self=False)
    out = (src - src_max.index_select(dim, index)).exp()
    out_sum = segment_sum(out, index, num_nodes, dim) + EPS
    return out / out_sum.index_select(dim, index)


def segment_softmax_backward(out: Tensor, grad_out: Tensor,
                             index: Optional[Tensor], ptr: Optional[Tensor],
                             perm: Optional[Tensor], num_nodes: int,
                             dim: int) -> Tensor:
    r"""Gradient of :func:`segment_softmax` with respect to its input.

    With :math:`y` the softmax output and :math:`g` the incoming gradient,
    :math:`\partial L / \partial x_e = y_e (g_e - \sum_{k \in s(e)} g_k y_k)`.
    """
    index = _segment_index(index, ptr, perm, out.size(dim))
    dot = segment_sum(grad_out * out, index, num_nodes, dim)
    return out * (grad_out - dot.index_select(dim, index))


def segment_csr(index: Tensor, num_nodes: int) -> Tuple[Tensor, Tensor]:
    r"""The CSR pointer of :obj:`index` and the stable permutation that
    sorts it, so that segment :obj:`s` holds entries
    :obj:`perm[ptr[s]:ptr[s + 1]]` in their original order."""
    perm = index.argsort(stable=True)
    ptr = index.new_zeros(num_nodes + 1, dtype=torch.long)
    ptr[1:] = torch.bincount(index, minlength=num_nodes).cumsum(0)
    return ptr, perm


def ptr_to_index(ptr: Tensor, perm: Optional[Tensor],
                 num_entries: int) -> Tensor:
    r"""The segment of every row from a CSR grouping: row :obj:`perm[p]`
    (or :obj:`p` if :obj:`perm` is :obj:`None`) belongs to the segment that
    owns sorted position :obj:`p`."""
    num_segments = ptr.numel() - 1
    sorted_index = torch.repeat_interleave(
        torch.arange(num_segments, device=ptr.device), ptr.diff(),
        output_size=num_entries)
    if perm is None:
        return sorted_index
    return torch.empty_like(sorted_index).index_put_((perm, ), sorted_index)


# Fused GAT attention #########################################################

_M32 = 0xFFFFFFFF


def _mul32(a: Tensor, b: int) -> Tensor:
    # (a * b) mod 2**32 for int64 `a` in [0, 2**32) and a 32-bit constant,
    # split in halves so that no int64 product overflows.
    return (a * (b & 0xFFFF) + (((a * (b >> 16)) & 0xFFFF) << 16)) & _M32


def _fmix32(h: Tensor) -> Tensor:
    # MurmurHash3's 32-bit finaliser, a bijection of [0, 2**32).
    h = h ^ (h >> 16)
    h = _mul32(h, 0x85EBCA6B)
    h = h ^ (h >> 13)
    h = _mul32(h, 0xC2B2AE35)
    return h ^ (h >> 16)


def dropout_threshold(p: float) -> int:
    r"""Entry :obj:`(edge, head)` is kept when its 24-bit hash is at least
    this integer: the probability of dropping it is :obj:`p` (exact to
    :math:`2^{-24}`). Integers, so every backend draws the same mask."""
    return min(1 << 24, math.floor(p * 16777216.0 + 0.5))


def dropout_hash(edge: Tensor, heads: int, seed: Tuple[int, int]) -> Tensor:
    r"""The counter-based random number of every :obj:`(edge, head)` pair:
    a 24-bit integer (as int64 of shape :obj:`[len(edge), heads]`) that
    depends only on the edge id, the head and the two 32-bit key words
    :obj:`seed`, so the forward and backward passes of every backend
    regenerate the same dropout mask without storing it."""
    edge = edge.to(torch.long).view(-1, 1)
    head = torch.arange(heads, device=edge.device).view(1, -1)
    h = _fmix32((edge & _M32) ^ seed[0])
    h = _fmix32(h ^ (edge >> 32) ^ seed[1])
    h = _fmix32(h ^ _mul32(head, 0x9E3779B9))
    return h >> 8


def head_scores(x: Tensor, att: Tensor) -> Tensor:
    r"""GAT's node scores: :obj:`out[n, k, h] = <x[n, h], att[k, h]>` for
    node features :obj:`x` of shape :obj:`[N, H, C]` and :obj:`K` attention
    vectors :obj:`att` of shape :obj:`[K, H, C]`, i.e. PyG's
    :obj:`(x * att[k]).sum(dim=-1)` for every :obj:`k`, computed in the op
    math type of :obj:`x`. Returns :obj:`[N, K, H]`."""
    acc = opmath(x.dtype)
    return torch.einsum('nhc,khc->nkh', x.to(acc), att.to(acc)).to(x.dtype)


def head_scores_backward(grad: Tensor, x: Tensor,
                         att: Tensor) -> Tuple[Tensor, Tensor]:
    r"""The gradients of :func:`head_scores` for :obj:`grad` of shape
    :obj:`[N, K, H]`: :obj:`grad_x[n, h] = sum_k grad[n, k, h] att[k, h]`
    and :obj:`grad_att[k, h] = sum_n grad[n, k, h] x[n, h]`."""
    acc = opmath(x.dtype)
    grad = grad.to(acc)
    grad_x = torch.einsum('nkh,khc->nhc', grad, att.to(acc))
    grad_att = torch.einsum('nkh,nhc->khc', grad, x.to(acc))
    return grad_x.to(x.dtype), grad_att.to(att.dtype)


def linear(x: Tensor, weight: Tensor, max_density: float) -> Tensor:
    r"""The layers' projection :obj:`x @ weight.T` of node features
    :obj:`x` of shape :obj:`[N, K]` by a :obj:`[M, K]` weight, computed in
    the op math type of :obj:`x`. The kernels skip the zero entries of
    :obj:`x` where a sample of its rows holds at most :obj:`max_density`
    non-zeros (which changes the result only by rounding); the reference
    ignores :obj:`max_density`."""
    acc = opmath(x.dtype)
    return (x.to(acc) @ weight.to(acc).t()).to(x.dtype)


def linear_weight_grad(grad: Tensor, x: Tensor,
                       max_density: float) -> Tensor:
    r"""The gradient of :func:`linear` with respect to its weight for
    :obj:`grad` of shape :obj:`[N, M]`: :obj:`grad.T @ x`."""
    acc = opmath(x.dtype)
    return (grad.to(acc).t() @ x.to(acc)).to(x.dtype)


def dropout(x: Tensor, p: float, seed: Optional[Tensor]) -> Tensor:
    r"""Dropout with a counter-based mask: element :obj:`k` of :obj:`x`
    (in row-major order) is kept, times :math:`1 / (1 - p)`, when
    :obj:`dropout_hash(k, 1, seed)` is at least :obj:`dropout_threshold(p)`;
    else it is multiplied by zero (so NaN stays NaN, as in
    :func:`torch.nn.functional.dropout`). The identity without a seed or
    with :obj:`p = 0`. The mask depends on the seed and the index only: the
    gradient is this function of the incoming gradient with the same seed.
    """
    x = x.contiguous()
    if p <= 0.0 or seed is None:
        return x.clone()
    acc = opmath(x.dtype)
    index = torch.arange(x.numel(), device=x.device)
    keep = dropout_hash(index, 1, seed_words(seed)).view(x.shape)
    keep = keep >= dropout_threshold(p)
    scale = 0.0 if p >= 1.0 else 1.0 / (1.0 - p)
    return (x.to(acc) * (keep.to(acc) * scale)).to(x.dtype)


def _edge_list(rowptr: Tensor, col: Tensor, csr_eid: Tensor,
               num_loops: int, remove_self_loops: bool):
    # Every edge the attention runs over, in CSR order followed by the
    # implicit self-loops of nodes 0 ... num_loops - 1 (edge ids E + i):
    # source, target, edge id and whether it counts.
    num_edges = col.numel()
    dst = ptr_to_index(rowptr, None, num_edges)
    src, eid = col.to(torch.long), csr_eid.to(torch.long)
    valid = src != dst
    if not remove_self_loops:
        valid = torch.ones_like(valid)
    if num_loops > 0:
        loop = torch.arange(num_loops, device=src.device)
        src, dst = torch.cat([src, loop]), torch.cat([dst, loop])
        eid = torch.cat([eid, loop + num_edges])
        valid = torch.cat([valid, torch.ones_like(loop, dtype=torch.bool)])
    return src, dst, eid, valid.view(-1, 1)


def _gat_edges(a_src: Tensor, a_dst: Tensor, edge_score: Optional[Tensor],
               rowptr: Tensor, col: Tensor, csr_eid: Tensor, num_loops: int,
               remove_self_loops: bool, negative_slope: float):
    # The edges of `_edge_list`, and each one's raw and activated score.
    src, dst, eid, valid = _edge_list(rowptr, col, csr_eid, num_loops,
                                      remove_self_loops)
    z = a_src.index_select(0, src) + a_dst.index_select(0, dst)
    if edge_score is not None:
        z = z + edge_score.index_select(0, eid)
    e = torch.nn.functional.leaky_relu(z, negative_slope)
    return src, dst, eid, valid, z, e


def seed_words(seed: Optional[Tensor]) -> Tuple[int, int]:
    r"""The two 32-bit key words of the dropout hash from the seed tensor of
    the ops ((0, 0) without one)."""
    if seed is None:
        return 0, 0
    words = [int(w) for w in seed.tolist()]
    return words[0], words[1]


def _gat_dropout(eid: Tensor, heads: int, dropout: float,
                 seed: Optional[Tensor], like: Tensor) -> Tensor:
    # The dropout factor of every (edge, head): 0 or 1 / (1 - p).
    if dropout <= 0.0 or seed is None:
        return torch.ones_like(like)
    keep = dropout_hash(eid, heads, seed_words(seed))
    keep = keep >= dropout_threshold(dropout)
    scale = 0.0 if dropout >= 1.0 else 1.0 / (1.0 - dropout)
    return keep.to(like.dtype) * scale


def gat_attention(x: Tensor, a_src: Tensor, a_dst: Tensor,
                  edge_score: Optional[Tensor], rowptr: Tensor, col: Tensor,
                  csr_eid: Tensor, colptr: Tensor, row: Tensor,
                  csc_eid: Tensor, num_loops: int, remove_self_loops: bool,
                  negative_slope: float, dropout: float,
                  seed: Optional[Tensor], return_attention_weights: bool,
                  save_stats: bool = False
                  ) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    r"""GAT attention and aggregation over a graph grouped by target node.

    Target :obj:`i` owns the CSR positions :obj:`rowptr[i]` to
    :obj:`rowptr[i + 1] - 1`; position :obj:`p` is the edge
    :obj:`csr_eid[p]` from source :obj:`col[p]`. (The grouping by source,
    :obj:`colptr, row, csc_eid`, is for the kernels' backward; unused
    here.) Nodes :obj:`0 ... num_loops - 1` also get an implicit
    self-loop, edge id :obj:`E + i`; with :obj:`remove_self_loops`, the
    explicit edges :obj:`j -> j` do not count.
    Every counted edge :math:`(j, i)` has the score

    .. math::
        e_{ji} = \mathrm{LeakyReLU}(a^s_j + a^d_i + a^e_{ji}),

    with :math:`a^e` the rows of :obj:`edge_score` by edge id (zero if
    :obj:`None`), and

    .. math::
        \mathrm{out}_i = \sum_j \alpha_{ji} \delta_{ji} x_j, \quad
        \alpha_{ji} = \exp(e_{ji} - \mathrm{lse}_i), \quad
        \mathrm{lse}_i = \log \sum_j \exp e_{ji},

    per head, with :math:`\delta` the dropout factor (0 or
    :math:`1 / (1 - p)`, from :func:`dropout_hash`). Returns :obj:`out`
    :obj:`[N_dst, H, C]`, :obj:`lse` :obj:`[N_dst, H]` (:math:`-\infty`
    for a node without edges; float32 for half-precision :obj:`x`) and, if
    :obj:`return_attention_weights`, the weights
    :math:`\alpha \delta` by edge id :obj:`[E + num_loops, H]` (zero for a
    skipped edge); else an empty :obj:`[0, H]` tensor. The last two outputs
    are :func:`gat_attention_stats`'s (if :obj:`save_stats`).
    """
    edges = _gat_edges(a_src, a_dst, edge_score, rowptr, col, csr_eid,
                       num_loops, remove_self_loops, negative_slope)
    src, dst, eid, valid, _, e = edges
    out, lse, weights = _softmax_aggregate(x, e, src, dst, eid, valid,
                                           rowptr.numel() - 1, dropout, seed,
                                           return_attention_weights)
    if save_stats and a_src.dtype == opmath(a_src.dtype):
        # The scores are already in the accumulator type: reused.
        return (out, lse, weights) + _edge_stats(
            x, edges, lse, rowptr.numel() - 1, negative_slope, dropout, seed)
    return (out, lse, weights) + gat_attention_stats(
        x, a_src, a_dst, edge_score, lse, rowptr, col, csr_eid, num_loops,
        remove_self_loops, negative_slope, dropout, seed, save_stats)


def gat_attention_stats(x: Tensor, a_src: Tensor, a_dst: Tensor,
                        edge_score: Optional[Tensor], lse: Tensor,
                        rowptr: Tensor, col: Tensor, csr_eid: Tensor,
                        num_loops: int, remove_self_loops: bool,
                        negative_slope: float, dropout: float,
                        seed: Optional[Tensor],
                        save_stats: bool) -> Tuple[Tensor, Tensor]:
    r"""The statistics of :func:`gat_attention` that let a backward skip
    its pass over every edge by target (the C++ kernels use them; a
    gradient of the attention weights still takes that pass): per target
    and head, :obj:`out_sums` :obj:`[N_dst, S, H, C]`, the sum over the
    edges whose raw score :math:`z` is not positive,
    :math:`N_i = \sum_{j: z_{ji} \le 0} \alpha_{ji} \delta_{ji} x_j` (NaN
    counting as not positive), after :math:`\mathrm{out}_i` itself where
    :obj:`out` is rounded (half precision: :obj:`S = 2`, see
    :func:`stats_slots`; else :obj:`S = 1` and the backward takes
    :obj:`out`), and :obj:`slope_sum` :obj:`[N_dst, H]`,
    :math:`\sum_j \alpha_{ji} \mathrm{LeakyReLU}'(z_{ji})`, both in the
    accumulator type of :obj:`x`. Without :obj:`save_stats`, empty tensors
    with no rows."""
    if not save_stats:
        return _no_stats(x)
    edges = _gat_edges(*_opmath(a_src, a_dst, edge_score), rowptr, col,
                       csr_eid, num_loops, remove_self_loops, negative_slope)
    return _edge_stats(x, edges, lse, rowptr.numel() - 1, negative_slope,
                       dropout, seed)


def stats_slots(dtype: torch.dtype) -> int:
    r"""The rows per target of :func:`gat_attention_stats`'s
    :obj:`out_sums` for features of :obj:`dtype`: :math:`N_i` alone where
    :obj:`out` is exact in the accumulator type (float32, float64), else
    :math:`\mathrm{out}_i` unrounded too."""
    return 1 if opmath(dtype) == dtype else 2


def _no_stats(x: Tensor) -> Tuple[Tensor, Tensor]:
    # The statistics without `save_stats`: no rows.
    acc = opmath(x.dtype)
    return (x.new_zeros(0, stats_slots(x.dtype), x.size(1), x.size(2),
                        dtype=acc),
            x.new_zeros(0, x.size(1), dtype=acc))


def _edge_stats(x: Tensor, edges: Tuple, lse: Tensor, num_dst: int,
                negative_slope: float, dropout: float,
                seed: Optional[Tensor]) -> Tuple[Tensor, Tensor]:
    # gat_attention_stats from `_gat_edges`' edges and scores.
    src, dst, eid, valid, z, e = edges
    acc = opmath(x.dtype)
    alpha = (e - lse.index_select(0, dst)).exp().masked_fill(~valid, 0.0)
    weight = alpha * _gat_dropout(eid, x.size(1), dropout, seed, alpha)
    rows = weight.unsqueeze(-1) * x.to(acc).index_select(0, src)
    negative = rows.masked_fill((z > 0).unsqueeze(-1), 0.0)
    sums = [rows, negative][2 - stats_slots(x.dtype):]
    out_sums = x.new_zeros(num_dst, len(sums), x.size(1), x.size(2),
                           dtype=acc).index_add_(0, dst,
                                                 torch.stack(sums, dim=1))
    slope_sum = segment_sum(alpha * _leaky_derivative(z, negative_slope),
                            dst, num_dst, 0)
    return out_sums, slope_sum


def _leaky_derivative(z: Tensor, negative_slope: float) -> Tensor:
    # LeakyReLU'(z): 1 where z > 0, else (NaN too) the slope, as torch's
    # backward takes it at 0.
    return torch.full_like(z, negative_slope).masked_fill_(z > 0, 1.0)


def _softmax_aggregate(x: Tensor, e: Tensor, src: Tensor, dst: Tensor,
                       eid: Tensor, valid: Tensor, num_dst: int,
                       dropout: float, seed: Optional[Tensor],
                       return_attention_weights: bool
                       ) -> Tuple[Tensor, Tensor, Tensor]:
    # The softmax of the scores `e` [E', H] of `_edge_list`'s edges per
    # target, with dropout, and the sum of the weighted source rows of `x`:
    # (out, lse, weights by edge id) as the attention ops return them.
    heads = x.size(1)
    e = e.masked_fill(~valid, float('-inf'))
    m = e.new_full((num_dst, heads), float('-inf'))
    m = m.scatter_reduce(0, dst.view(-1, 1).expand_as(e), e, 'amax')
    m_safe = m.masked_fill(m == float('-inf'), 0.0)
    s = segment_sum((e - m_safe.index_select(0, dst)).exp(), dst, num_dst, 0)
    lse = m_safe + s.log()
    alpha = (e - lse.index_select(0, dst)).exp().masked_fill(~valid, 0.0)
    alpha = alpha * _gat_dropout(eid, heads, dropout, seed, alpha)
    out = x.new_zeros(num_dst, heads, x.size(2)).index_add_(
        0, dst, alpha.unsqueeze(-1) * x.index_select(0, src))
    weights = alpha.new_empty(0, heads)
    if return_attention_weights:
        # Edge ids are E + num_loops distinct integers below E + num_loops:
        weights = alpha.new_zeros(src.numel(), heads).index_put_((eid, ),
                                                                 alpha)
    return out, lse.to(opmath(x.dtype)), weights


def gat_attention_backward(
    grad_out: Tensor, grad_alpha: Optional[Tensor], x: Tensor,
    a_src: Tensor, a_dst: Tensor, edge_score: Optional[Tensor], lse: Tensor,
    rowptr: Tensor, col: Tensor, csr_eid: Tensor, colptr: Tensor,
    row: Tensor, csc_eid: Tensor, num_loops: int, remove_self_loops: bool,
    negative_slope: float, dropout: float, seed: Optional[Tensor],
    out_sums: Optional[Tensor] = None, slope_sum: Optional[Tensor] = None,
    out: Optional[Tensor] = None
) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    r"""Gradients of :func:`gat_attention`'s :obj:`out` (and of its
    weights, if :obj:`grad_alpha` is given, by edge id) with respect to
    :obj:`x`, :obj:`a_src`, :obj:`a_dst` and :obj:`edge_score` (by edge
    id, :obj:`[E + num_loops, H]`; empty if :obj:`edge_score` is
    :obj:`None`), recomputing the attention from :obj:`lse`:

    .. math::
        g^\alpha_{ji} = \delta_{ji} (\langle g_i, x_j \rangle
        + g^w_{ji}), \quad
        D_i = \sum_j \alpha_{ji} g^\alpha_{ji}, \quad
        \frac{\partial L}{\partial z_{ji}} = \alpha_{ji}
        (g^\alpha_{ji} - D_i) \, \mathrm{LeakyReLU}'(z_{ji}),

    which is summed per target for :obj:`a_dst`, per source for
    :obj:`a_src`; :math:`\partial L / \partial x_j = \sum_i \alpha_{ji}
    \delta_{ji} g_i`. The forward's statistics (:func:`gat_attention_stats`)
    and :obj:`out` are for the kernels; this computes without them.
    """
    src, dst, eid, valid, z, e = _gat_edges(a_src, a_dst, edge_score, rowptr,
                                            col, csr_eid, num_loops,
                                            remove_self_loops, negative_slope)
    grad_x, de = _softmax_aggregate_backward(grad_out, grad_alpha, x, e, lse,
                                             src, dst, eid, valid, dropout,
                                             seed)
    dz = de * _leaky_derivative(z, negative_slope)
    grad_src = segment_sum(dz, src, a_src.size(0), 0)
    grad_dst = segment_sum(dz, dst, a_dst.size(0), 0)
    grad_edge = dz.new_empty(0, x.size(1))
    if edge_score is not None:
        grad_edge = torch.zeros_like(edge_score).index_put_((eid, ), dz)
    return grad_x, grad_src, grad_dst, grad_edge


def _softmax_aggregate_backward(
        grad_out: Tensor, grad_alpha: Optional[Tensor], x: Tensor, e: Tensor,
        lse: Tensor, src: Tensor, dst: Tensor, eid: Tensor, valid: Tensor,
        dropout: float, seed: Optional[Tensor]) -> Tuple[Tensor, Tensor]:
    # The gradients of `_softmax_aggregate`'s out (and weights) with
    # respect to `x` and to the activated scores `e` [E', H], the attention
    # recomputed from `lse`.
    alpha = (e - lse.index_select(0, dst)).exp().masked_fill(~valid, 0.0)
    delta = _gat_dropout(eid, x.size(1), dropout, seed, alpha)
    g_dst = grad_out.index_select(0, dst)
    g_alpha = (g_dst * x.index_select(0, src)).sum(-1)
    if grad_alpha is not None:
        g_alpha = g_alpha + grad_alpha.index_select(0, eid)
    g_alpha = delta * g_alpha
    d = segment_sum(alpha * g_alpha, dst, lse.size(0), 0)
    de = alpha * (g_alpha - d.index_select(0, dst))
    grad_x = torch.zeros_like(x).index_add_(
        0, src, (alpha * delta).unsqueeze(-1) * g_dst)
    return grad_x, de


# Fused GATv2 attention #######################################################


def _gatv2_edges(x_src: Tensor, x_dst: Tensor, att: Tensor,
                 edge_x: Optional[Tensor], rowptr: Tensor, col: Tensor,
                 csr_eid: Tensor, num_loops: int, remove_self_loops: bool,
                 negative_slope: float):
    # The edges of `_edge_list`, each one's C-wide sums before the
    # nonlinearity [E', H, C], their activation and the score [E', H].
    src, dst, eid, valid = _edge_list(rowptr, col, csr_eid, num_loops,
                                      remove_self_loops)
    s = x_dst.index_select(0, dst) + x_src.index_select(0, src)
    if edge_x is not None:
        s = s + edge_x.index_select(0, eid)
    u = torch.nn.functional.leaky_relu(s, negative_slope)
    return src, dst, eid, valid, s, u, (u * att).sum(-1)


def gatv2_attention(x_src: Tensor, x_dst: Tensor, att: Tensor,
                    edge_x: Optional[Tensor], rowptr: Tensor, col: Tensor,
                    csr_eid: Tensor, colptr: Tensor, row: Tensor,
                    csc_eid: Tensor, num_loops: int, remove_self_loops: bool,
                    negative_slope: float, dropout: float,
                    seed: Optional[Tensor], return_attention_weights: bool
                    ) -> Tuple[Tensor, Tensor, Tensor]:
    r"""GATv2 attention and aggregation over a graph grouped by target node,
    on the edges of :func:`gat_attention` (same grouping, implicit
    self-loops, :obj:`remove_self_loops` and dropout). Every counted edge
    :math:`(j, i)` has, per head, the score

    .. math::
        e_{ji} = \mathbf{a}^\top \mathrm{LeakyReLU}(\mathbf{s}_{ji}),
        \quad \mathbf{s}_{ji} = \mathbf{x}^d_i + \mathbf{x}^s_j
        + \mathbf{x}^e_{ji},

    with :obj:`x_dst` :obj:`[N_dst, H, C]`, :obj:`x_src` :obj:`[N_src, H,
    C]`, :obj:`att` :obj:`[H, C]` and :math:`\mathbf{x}^e` the rows of
    :obj:`edge_x` :obj:`[E + num_loops, H, C]` by edge id (zero if
    :obj:`None`), and :math:`\mathrm{out}_i = \sum_j \alpha_{ji}
    \delta_{ji} \mathbf{x}^s_j` with the softmax and outputs of
    :func:`gat_attention`. PyG's ``GATv2Conv`` forms :math:`\mathbf{s}`
    and the messages for every edge; the kernels form neither.
    """
    dtype = x_src.dtype  # Half precision is computed in float32.
    x_src, x_dst, att, edge_x = _opmath(x_src, x_dst, att, edge_x)
    src, dst, eid, valid, _, _, e = _gatv2_edges(x_src, x_dst, att, edge_x,
                                                 rowptr, col, csr_eid,
                                                 num_loops, remove_self_loops,
                                                 negative_slope)
    out, lse, weights = _softmax_aggregate(x_src, e, src, dst, eid, valid,
                                           rowptr.numel() - 1, dropout, seed,
                                           return_attention_weights)
    return out.to(dtype), lse, weights.to(dtype)


def _opmath(*tensors: Optional[Tensor]) -> Tuple[Optional[Tensor], ...]:
    # The tensors in the type the ops compute in (see `opmath`).
    return tuple(None if t is None else t.to(opmath(t.dtype))
                 for t in tensors)


def gatv2_attention_backward(
    grad_out: Tensor, grad_alpha: Optional[Tensor], x_src: Tensor,
    x_dst: Tensor, att: Tensor, edge_x: Optional[Tensor], lse: Tensor,
    rowptr: Tensor, col: Tensor, csr_eid: Tensor, colptr: Tensor,
    row: Tensor, csc_eid: Tensor, num_loops: int, remove_self_loops: bool,
    negative_slope: float, dropout: float, seed: Optional[Tensor]
) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    r"""Gradients of :func:`gatv2_attention`'s :obj:`out` (and weights, if
    :obj:`grad_alpha` is given) with respect to :obj:`x_src`, :obj:`x_dst`,
    :obj:`att` and :obj:`edge_x` (by edge id; empty :obj:`[0, H, C]` if
    :obj:`None`). With :math:`\partial L / \partial e_{ji} = \alpha_{ji}
    (g^\alpha_{ji} - D_i)` as in :func:`gat_attention_backward`,

    .. math::
        \frac{\partial L}{\partial \mathbf{s}_{ji}} =
        \frac{\partial L}{\partial e_{ji}} \, \mathbf{a} \odot
        \mathrm{LeakyReLU}'(\mathbf{s}_{ji}), \quad
        \frac{\partial L}{\partial \mathbf{a}} = \sum_{(j, i)}
        \frac{\partial L}{\partial e_{ji}}
        \mathrm{LeakyReLU}(\mathbf{s}_{ji}),

    summed per target for :obj:`x_dst`, per source (with the aggregation's
    :math:`\sum_i \alpha_{ji} \delta_{ji} g_i`) for :obj:`x_src`, and
    kept per edge for :obj:`edge_x`.
    """
    dtypes = [t.dtype for t in (x_src, x_dst, att)]
    grad_out, grad_alpha, x_src, x_dst, att = _opmath(grad_out, grad_alpha,
                                                      x_src, x_dst, att)
    edge_dtype = None if edge_x is None else edge_x.dtype
    edge_x, = _opmath(edge_x)
    src, dst, eid, valid, s, u, e = _gatv2_edges(x_src, x_dst, att, edge_x,
                                                 rowptr, col, csr_eid,
                                                 num_loops, remove_self_loops,
                                                 negative_slope)
    grad_x, de = _softmax_aggregate_backward(grad_out, grad_alpha, x_src, e,
                                             lse, src, dst, eid, valid,
                                             dropout, seed)
    slope = torch.full_like(s, negative_slope).masked_fill_(s > 0, 1.0)
    ds = de.unsqueeze(-1) * att * slope
    grad_att = (de.unsqueeze(-1) * u).sum(0)
    grad_src = grad_x.index_add_(0, src, ds)
    grad_dst = segment_sum(ds, dst, x_dst.size(0), 0)
    grad_edge = ds.new_empty(0, x_src.size(1), x_src.size(2))
    if edge_x is not None:
        grad_edge = torch.zeros_like(edge_x).index_put_((eid, ), ds)
        grad_edge = grad_edge.to(edge_dtype)
    return (grad_src.to(dtypes[0]), grad_dst.to(dtypes[1]),
            grad_att.to(dtypes[2]), grad_edge.to(dtypes[0]) if edge_x is None
            else grad_edge)
