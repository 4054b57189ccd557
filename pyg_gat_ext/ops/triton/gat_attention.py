r"""Triton kernels of the fused GAT attention, forward and backward.

The graph comes grouped by target (CSR: :obj:`rowptr`, :obj:`col`,
:obj:`csr_eid`) and by source (CSC: :obj:`colptr`, :obj:`row`,
:obj:`csc_eid`); see :mod:`pyg_gat_ext.ops._library`. The launchers take the
op schemas' arguments. Node :obj:`i < num_loops` has one more,
implicit self-loop with edge id :obj:`E + i`, walked as the virtual position
just past its last edge. Every program owns one node and loops over its
edges in blocks of :obj:`BLOCK_E`, gathering :obj:`[BLOCK_E, H, C]` tiles of
source features (forward) or target gradients (backward) and reducing them
in registers: no :obj:`[E, H, C]` tensor, no atomics, deterministic. Scores,
softmax statistics and accumulators are float32 for half and bfloat16 input,
float64 for float64 input.
"""
from typing import List, Optional, Tuple

import torch
import triton
import triton.language as tl
from torch import Tensor

from pyg_gat_ext.ops._reference import (
    dropout_threshold,
    gat_attention_stats,
    opmath,
    seed_words,
)
from pyg_gat_ext.ops.triton._launch import Launch, run

_M32 = 0xFFFFFFFF

#: The dropout seed's key words (`k0: tl.int64, k1: tl.int64` in the
#: kernels) are not specialised: each step draws a new seed, and Triton
#: would otherwise compile a kernel per pattern of their values (32 or 64
#: bits, divisible by 16 or not, equal to 1).
SEED_WORDS = ('k0', 'k1')


@triton.jit
def _fmix32(h):
    # MurmurHash3's finaliser on int64 values in [0, 2**32): products wrap
    # in 64 bits and are masked back to 32.
    h = h ^ (h >> 16)
    h = (h * 0x85EBCA6B) & 0xFFFFFFFF
    h = h ^ (h >> 13)
    h = (h * 0xC2B2AE35) & 0xFFFFFFFF
    return h ^ (h >> 16)


@triton.jit
def _dropout(ids, heads, k0, k1, threshold, scale):
    # The dropout factor (0 or `scale`) of every (edge id, head) pair of a
    # [BLOCK_E, BLOCK_H] tile, as pyg_gat_ext.ops._reference.dropout_hash.
    h = _fmix32((ids[:, None] & 0xFFFFFFFF) ^ k0)
    h = _fmix32(h ^ (ids[:, None] >> 32) ^ k1)
    h = _fmix32(h ^ ((heads[None, :].to(tl.int64) * 0x9E3779B9)
                     & 0xFFFFFFFF))
    return tl.where((h >> 8) >= threshold, scale, 0.0)


@triton.jit
def _edges(nbr_ptr, eid_ptr, node, pos, hi, end, num_edges,
           REMOVE_SELF_LOOPS: tl.constexpr):
    # The neighbours and edge ids of a block of positions of `node` (the
    # position `hi` is its implicit self-loop when `end > hi`), whether
    # each position exists and whether it counts (REMOVE_SELF_LOOPS leaves
    # out explicit self-loops).
    exists = pos < end
    real = pos < hi
    nbr = tl.load(nbr_ptr + pos, mask=real, other=0).to(tl.int64)
    ids = tl.load(eid_ptr + pos, mask=real, other=0).to(tl.int64)
    nbr = tl.where(real, nbr, node)
    ids = tl.where(real, ids, num_edges + node)
    counts = exists
    if REMOVE_SELF_LOOPS:
        counts = counts & ((nbr != node) | (pos >= hi))
    return nbr, ids, exists, counts


@triton.jit
def _by_edge_id(ids, valid, heads, hmask, H):
    # The offsets of a [BLOCK_E, BLOCK_H] tile of an [E', H] tensor indexed
    # by edge id, and its mask (positions `valid`, heads below H).
    return ids[:, None] * H + heads[None, :], valid[:, None] & hmask[None, :]


@triton.jit
def _scores(as_ptr, ad_ptr, es_ptr, src, dst, ids, heads, hmask, slope, H,
            HAS_EDGE: tl.constexpr, ACC: tl.constexpr):
    # Raw and LeakyReLU scores [BLOCK_E, BLOCK_H] of edges src -> dst.
    z = tl.load(as_ptr + src[:, None] * H + heads[None, :],
                mask=hmask[None, :], other=0.0).to(ACC)
    z += tl.load(ad_ptr + dst[:, None] * H + heads[None, :],
                 mask=hmask[None, :], other=0.0).to(ACC)
    if HAS_EDGE:
        z += tl.load(es_ptr + ids[:, None] * H + heads[None, :],
                     mask=hmask[None, :], other=0.0).to(ACC)
    return z, tl.where(z > 0, z, z * slope)


@triton.jit
def _node_range(ptr_ptr, num_loops):
    # The program's node and the range of its positions (_positions).
    node = tl.program_id(0).to(tl.int64)
    lo, hi, end = _positions(ptr_ptr, node, num_loops)
    return node, lo, hi, end


@triton.jit
def _positions(ptr_ptr, node, num_loops):
    # The range [lo, end) of `node`'s positions: `end` is past `hi` when
    # the node has an implicit self-loop.
    lo = tl.load(ptr_ptr + node)
    hi = tl.load(ptr_ptr + node + 1)
    return lo, hi, hi + (node < num_loops).to(hi.dtype)


@triton.jit
def _head_tile(H, C, BLOCK_H: tl.constexpr, BLOCK_C: tl.constexpr):
    # The heads and their mask, and the offsets and mask of the [H, C] tile
    # of a node's row.
    heads = tl.arange(0, BLOCK_H)
    hmask = heads < H
    chans = tl.arange(0, BLOCK_C)
    tile = heads[:, None] * C + chans[None, :]
    return heads, hmask, tile, hmask[:, None] & (chans < C)[None, :]


@triton.jit
def _params(param_ptr, ACC: tl.constexpr):
    # The LeakyReLU slope and the dropout scale.
    return tl.load(param_ptr).to(ACC), tl.load(param_ptr + 1).to(ACC)


@triton.jit(do_not_specialize=SEED_WORDS)
def _gat_fwd(x_ptr, as_ptr, ad_ptr, es_ptr, ptr_ptr, src_ptr, eid_ptr,
             out_ptr, lse_ptr, alpha_ptr, param_ptr, num_edges, num_loops,
             k0: tl.int64, k1: tl.int64, threshold, H, C,
             HAS_EDGE: tl.constexpr, REMOVE_SELF_LOOPS: tl.constexpr,
             DROPOUT: tl.constexpr, RETURN_ATTENTION_WEIGHTS: tl.constexpr,
             ACC: tl.constexpr,
             BLOCK_E: tl.constexpr, BLOCK_H: tl.constexpr,
             BLOCK_C: tl.constexpr):
    r"""Grid :obj:`(N_dst,)`: program :obj:`i` computes the log-sum-exp of
    the scores of target :obj:`i`'s edges per head (first walk, online), then
    :obj:`out[i] = sum_j alpha_ji * dropout * x_j` (second walk), and the
    weights by edge id if :obj:`RETURN_ATTENTION_WEIGHTS`."""
    i, lo, hi, end = _node_range(ptr_ptr, num_loops)
    heads, hmask, tile, xmask = _head_tile(H, C, BLOCK_H, BLOCK_C)
    slope, scale = _params(param_ptr, ACC)
    dst = tl.zeros([BLOCK_E], tl.int64) + i

    m = tl.full([BLOCK_H], float('-inf'), ACC)
    s = tl.zeros([BLOCK_H], ACC)
    for start in range(lo, end, BLOCK_E):
        pos = start + tl.arange(0, BLOCK_E)
        src, ids, exists, counts = _edges(src_ptr, eid_ptr, i, pos, hi, end,
                                          num_edges, REMOVE_SELF_LOOPS)
        _, e = _scores(as_ptr, ad_ptr, es_ptr, src, dst, ids, heads, hmask,
                       slope, H, HAS_EDGE, ACC)
        e = tl.where(counts[:, None], e, float('-inf'))
        m_new = tl.maximum(m, tl.max(e, axis=0))
        m_ref = tl.where(m_new == float('-inf'), 0.0, m_new)
        s = s * tl.exp(m - m_ref) + tl.sum(tl.exp(e - m_ref[None, :]), 0)
        m = m_new
    lse = tl.where(s == 0, float('-inf'),
                   tl.where(m == float('-inf'), 0.0, m) + tl.log(s))
    tl.store(lse_ptr + i * H + heads, lse, mask=hmask)

    acc = tl.zeros([BLOCK_H, BLOCK_C], ACC)
    for start in range(lo, end, BLOCK_E):
        pos = start + tl.arange(0, BLOCK_E)
        src, ids, exists, counts = _edges(src_ptr, eid_ptr, i, pos, hi, end,
                                          num_edges, REMOVE_SELF_LOOPS)
        _, e = _scores(as_ptr, ad_ptr, es_ptr, src, dst, ids, heads, hmask,
                       slope, H, HAS_EDGE, ACC)
        w = tl.exp(e - lse[None, :])
        if DROPOUT:
            w = w * _dropout(ids, heads, k0, k1, threshold, scale)
        w = tl.where(counts[:, None], w, 0.0)
        if RETURN_ATTENTION_WEIGHTS:
            offs, emask = _by_edge_id(ids, exists, heads, hmask, H)
            tl.store(alpha_ptr + offs, w.to(alpha_ptr.dtype.element_ty),
                     mask=emask)
        xj = tl.load(x_ptr + src[:, None, None] * (H * C) + tile[None, :, :],
                     mask=counts[:, None, None] & xmask[None, :, :],
                     other=0.0).to(ACC)
        acc += tl.sum(w[:, :, None] * xj, axis=0)
    tl.store(out_ptr + i * (H * C) + tile,
             acc.to(out_ptr.dtype.element_ty), mask=xmask)


@triton.jit(do_not_specialize=SEED_WORDS)
def _gat_bwd_dst(go_ptr, ga_ptr, x_ptr, as_ptr, ad_ptr, es_ptr, lse_ptr,
                 ptr_ptr, src_ptr, eid_ptr, dz_ptr, gdst_ptr, param_ptr,
                 num_edges, num_loops, k0: tl.int64, k1: tl.int64,
                 threshold, H, C,
                 HAS_EDGE: tl.constexpr, HAS_GA: tl.constexpr,
                 REMOVE_SELF_LOOPS: tl.constexpr, DROPOUT: tl.constexpr,
                 ACC: tl.constexpr, BLOCK_E: tl.constexpr,
                 BLOCK_H: tl.constexpr, BLOCK_C: tl.constexpr):
    r"""Grid :obj:`(N_dst,)`: program :obj:`i` stores, for each edge of
    target :obj:`i`, :obj:`g_alpha = dropout * (<g_i, x_j> + grad_alpha)` by
    edge id while :obj:`D_i = sum alpha * g_alpha` accumulates, then turns
    it into the score gradient :obj:`alpha (g_alpha - D_i) LeakyReLU'(z)`
    (zero for left-out edges), summed into :obj:`grad_a_dst[i]`."""
    i, lo, hi, end = _node_range(ptr_ptr, num_loops)
    heads, hmask, tile, xmask = _head_tile(H, C, BLOCK_H, BLOCK_C)
    slope, scale = _params(param_ptr, ACC)
    dst = tl.zeros([BLOCK_E], tl.int64) + i
    lse = tl.load(lse_ptr + i * H + heads, mask=hmask, other=0.0).to(ACC)
    gi = tl.load(go_ptr + i * (H * C) + tile, mask=xmask, other=0.0).to(ACC)

    d = tl.zeros([BLOCK_H], ACC)
    for start in range(lo, end, BLOCK_E):
        pos = start + tl.arange(0, BLOCK_E)
        src, ids, exists, counts = _edges(src_ptr, eid_ptr, i, pos, hi, end,
                                          num_edges, REMOVE_SELF_LOOPS)
        _, e = _scores(as_ptr, ad_ptr, es_ptr, src, dst, ids, heads, hmask,
                       slope, H, HAS_EDGE, ACC)
        a = tl.where(counts[:, None], tl.exp(e - lse[None, :]), 0.0)
        xj = tl.load(x_ptr + src[:, None, None] * (H * C) + tile[None, :, :],
                     mask=counts[:, None, None] & xmask[None, :, :],
                     other=0.0).to(ACC)
        ga = tl.sum(xj * gi[None, :, :], axis=2)
        offs, emask = _by_edge_id(ids, exists, heads, hmask, H)
        if HAS_GA:
            ga += tl.load(ga_ptr + offs, mask=emask, other=0.0).to(ACC)
        if DROPOUT:
            ga = ga * _dropout(ids, heads, k0, k1, threshold, scale)
        ga = tl.where(counts[:, None], ga, 0.0)
        tl.store(dz_ptr + offs, ga, mask=emask)
        d += tl.sum(a * ga, axis=0)
    tl.debug_barrier()  # The stores above are read back below.

    gd = tl.zeros([BLOCK_H], ACC)
    for start in range(lo, end, BLOCK_E):
        pos = start + tl.arange(0, BLOCK_E)
        src, ids, exists, counts = _edges(src_ptr, eid_ptr, i, pos, hi, end,
                                          num_edges, REMOVE_SELF_LOOPS)
        z, e = _scores(as_ptr, ad_ptr, es_ptr, src, dst, ids, heads, hmask,
                       slope, H, HAS_EDGE, ACC)
        a = tl.where(counts[:, None], tl.exp(e - lse[None, :]), 0.0)
        offs, emask = _by_edge_id(ids, exists, heads, hmask, H)
        ga = tl.load(dz_ptr + offs, mask=emask, other=0.0)
        g = a * (ga - d[None, :]) * tl.where(z > 0, 1.0, slope)
        g = tl.where(counts[:, None], g, 0.0)
        tl.store(dz_ptr + offs, g, mask=emask)
        gd += tl.sum(g, axis=0)
    tl.store(gdst_ptr + i * H + heads, gd, mask=hmask)


@triton.jit(do_not_specialize=SEED_WORDS)
def _gat_bwd_src(go_ptr, as_ptr, ad_ptr, es_ptr, lse_ptr, ptr_ptr, dst_ptr,
                 eid_ptr, dz_ptr, gx_ptr, gsrc_ptr, param_ptr, num_edges,
                 num_loops, k0: tl.int64, k1: tl.int64, threshold, H, C,
                 HAS_EDGE: tl.constexpr, REMOVE_SELF_LOOPS: tl.constexpr,
                 DROPOUT: tl.constexpr, ACC: tl.constexpr,
                 BLOCK_E: tl.constexpr, BLOCK_H: tl.constexpr,
                 BLOCK_C: tl.constexpr):
    r"""Grid :obj:`(N_src,)`: program :obj:`j` sums the score gradients of
    source :obj:`j`'s edges into :obj:`grad_a_src[j]` and computes
    :obj:`grad_x[j] = sum_i alpha_ji * dropout * g_i`, the attention
    recomputed from each target's log-sum-exp."""
    j, lo, hi, end = _node_range(ptr_ptr, num_loops)
    heads, hmask, tile, xmask = _head_tile(H, C, BLOCK_H, BLOCK_C)
    slope, scale = _params(param_ptr, ACC)
    src = tl.zeros([BLOCK_E], tl.int64) + j

    gs = tl.zeros([BLOCK_H], ACC)
    acc = tl.zeros([BLOCK_H, BLOCK_C], ACC)
    for start in range(lo, end, BLOCK_E):
        pos = start + tl.arange(0, BLOCK_E)
        dst, ids, exists, counts = _edges(dst_ptr, eid_ptr, j, pos, hi, end,
                                          num_edges, REMOVE_SELF_LOOPS)
        offs, cmask = _by_edge_id(ids, counts, heads, hmask, H)
        gs += tl.sum(tl.load(dz_ptr + offs, mask=cmask, other=0.0), axis=0)
        _, e = _scores(as_ptr, ad_ptr, es_ptr, src, dst, ids, heads, hmask,
                       slope, H, HAS_EDGE, ACC)
        lse = tl.load(lse_ptr + dst[:, None] * H + heads[None, :],
                      mask=cmask, other=0.0)
        w = tl.exp(e - lse)
        if DROPOUT:
            w = w * _dropout(ids, heads, k0, k1, threshold, scale)
        w = tl.where(counts[:, None], w, 0.0)
        gi = tl.load(go_ptr + dst[:, None, None] * (H * C) + tile[None, :, :],
                     mask=counts[:, None, None] & xmask[None, :, :],
                     other=0.0).to(ACC)
        acc += tl.sum(w[:, :, None] * gi, axis=0)
    tl.store(gsrc_ptr + j * H + heads, gs, mask=hmask)
    tl.store(gx_ptr + j * (H * C) + tile, acc.to(gx_ptr.dtype.element_ty),
             mask=xmask)


def _config(x: Tensor, dropout: float, negative_slope: float,
            backward: bool):
    # Block sizes, the accumulator type, and the [slope, dropout scale]
    # parameters in that type (float arguments would be float32). A
    # [BLOCK_E, BLOCK_H, BLOCK_C] tile has at most 2048 elements in the
    # forward pass, 1024 in float64 and 512 in the backward kernels (which
    # also hold a row of the output gradient and, with edge scores and
    # dropout, more per-edge values), and at most 32 edges: with more, some
    # variant spills registers or needs more than 128 on sm_80 or sm_90
    # (tests/ops/test_triton_compile.py, full matrix).
    heads, channels = x.size(1), x.size(2)
    block_h = triton.next_power_of_2(heads)
    block_c = triton.next_power_of_2(channels)
    acc = opmath(x.dtype)
    tile = 512 if backward else 1024 if acc == torch.float64 else 2048
    block_e = max(1, min(32, tile // (block_h * block_c)))
    scale = 0.0 if dropout >= 1.0 else 1.0 / (1.0 - dropout)
    params = torch.tensor([negative_slope, scale], dtype=acc, device=x.device)
    tl_acc = tl.float64 if acc == torch.float64 else tl.float32
    return dict(H=heads, C=channels, ACC=tl_acc, BLOCK_E=block_e,
                BLOCK_H=block_h, BLOCK_C=block_c), params, acc


def _dense(*tensors: Tensor) -> Tuple[Tensor, ...]:
    return tuple(t.contiguous() for t in tensors)


def gat_attention_launches(
        x: Tensor, a_src: Tensor, a_dst: Tensor, edge_score: Optional[Tensor],
        *graph) -> Tuple[List[Launch], Tuple[Tensor, Tensor, Tensor]]:
    r"""The launch of :func:`_gat_fwd` for the op's arguments (those from
    :obj:`rowptr` on as :func:`forward_launches` takes them), and the
    outputs :obj:`(out, lse, alpha)` it writes."""
    return forward_launches(_gat_fwd, x, (a_src, a_dst), edge_score, *graph)


def forward_launches(
        kernel, x: Tensor, inputs: Tuple[Tensor, ...], edge: Optional[Tensor],
        rowptr: Tensor, col: Tensor, csr_eid: Tensor, colptr: Tensor,
        row: Tensor, csc_eid: Tensor, num_loops: int, remove_self_loops: bool,
        negative_slope: float, dropout: float, seed: Optional[Tensor],
        return_attention_weights: bool
) -> Tuple[List[Launch], Tuple[Tensor, Tensor, Tensor]]:
    r"""The launch of an attention op's forward :obj:`kernel` (GAT's or
    GATv2's), which takes :obj:`x` (the source rows it sums), the op's
    other :obj:`inputs`, the edge input (:obj:`x` in place of a missing
    one), the grouping by target, the outputs :obj:`(out, lse, alpha)`,
    the parameters and the flags, one program per target."""
    # The kernels index rows by their sizes: dense row-major inputs only.
    x, rowptr, col, csr_eid = _dense(x, rowptr, col, csr_eid)
    inputs = _dense(*inputs)
    edge = _dense(edge)[0] if edge is not None else None
    num_dst, heads, num_edges = rowptr.numel() - 1, x.size(1), col.numel()
    k0, k1 = seed_words(seed)
    meta, params, acc = _config(x, dropout, negative_slope, False)
    out = x.new_empty(num_dst, heads, x.size(2))
    lse = x.new_empty(num_dst, heads, dtype=acc)
    alpha = x.new_empty(
        num_edges + num_loops if return_attention_weights else 0, heads)
    launch = Launch(
        kernel, (num_dst, ),
        (x, *inputs, edge if edge is not None else x, rowptr, col, csr_eid,
         out, lse, alpha, params, num_edges, num_loops, k0, k1,
         dropout_threshold(dropout)),
        dict(HAS_EDGE=edge is not None, REMOVE_SELF_LOOPS=remove_self_loops,
             DROPOUT=dropout > 0.0,
             RETURN_ATTENTION_WEIGHTS=return_attention_weights, **meta))
    return [launch], (out, lse, alpha)


def gat_attention(*args) -> Tuple[Tensor, ...]:
    r"""Launches :func:`_gat_fwd` (arguments as the op's): returns
    :obj:`(out, lse, alpha)` and the backward statistics of the C++
    kernels, which the Triton backward does not use: computed by the
    reference if the op's last argument :obj:`save_stats` is set (the
    layers never ask for them on CUDA), else empty."""
    save_stats = len(args) > 16 and bool(args[16])
    out, lse, alpha = run(*gat_attention_launches(*args[:16]))
    x, a_src, a_dst, edge_score, rowptr, col, csr_eid = args[:7]
    return (out, lse, alpha) + gat_attention_stats(
        x, a_src, a_dst, edge_score, lse, rowptr, col, csr_eid, *args[10:15],
        save_stats)


def gat_attention_backward_launches(
    grad_out: Tensor, grad_alpha: Optional[Tensor], x: Tensor, a_src: Tensor,
    a_dst: Tensor, edge_score: Optional[Tensor], lse: Tensor, rowptr: Tensor,
    col: Tensor, csr_eid: Tensor, colptr: Tensor, row: Tensor,
    csc_eid: Tensor, num_loops: int, remove_self_loops: bool,
    negative_slope: float, dropout: float, seed: Optional[Tensor],
    out_sums: Optional[Tensor] = None, slope_sum: Optional[Tensor] = None,
    out: Optional[Tensor] = None
) -> Tuple[List[Launch], Tuple[Tensor, Tensor, Tensor, Optional[Tensor]]]:
    r"""The launches of :func:`_gat_bwd_dst` then :func:`_gat_bwd_src` for
    the op's arguments (the C++ kernels' statistics :obj:`out_sums`,
    :obj:`slope_sum` and :obj:`out` unused), and the buffers they write:
    :obj:`grad_x`, the score gradients of the sources and targets (in the
    accumulator type), and the per-edge score gradients when there are edge
    scores (else :obj:`None`)."""
    (x, a_src, a_dst, lse, rowptr, col, csr_eid, colptr, row,
     csc_eid) = _dense(x, a_src, a_dst, lse, rowptr, col, csr_eid, colptr,
                       row, csc_eid)
    edge_score = _dense(edge_score)[0] if edge_score is not None else None
    num_src, heads = x.size(0), x.size(1)
    num_dst, num_edges = rowptr.numel() - 1, col.numel()
    k0, k1 = seed_words(seed)
    meta, params, acc = _config(x, dropout, negative_slope, True)
    grad_out = grad_out.to(x.dtype).contiguous()
    has_ga = grad_alpha is not None and grad_alpha.numel() > 0
    es = edge_score if edge_score is not None else a_src
    dz = x.new_empty(num_edges + num_loops, heads, dtype=acc)
    grad_dst = x.new_empty(num_dst, heads, dtype=acc)
    grad_src = x.new_empty(num_src, heads, dtype=acc)
    grad_x = torch.empty_like(x)
    common = dict(HAS_EDGE=edge_score is not None,
                  REMOVE_SELF_LOOPS=remove_self_loops,
                  DROPOUT=dropout > 0.0, **meta)
    threshold = dropout_threshold(dropout)
    launches = [
        Launch(_gat_bwd_dst, (num_dst, ),
               (grad_out, grad_alpha.contiguous() if has_ga else dz, x,
                a_src, a_dst, es, lse, rowptr, col, csr_eid, dz, grad_dst,
                params, num_edges, num_loops, k0, k1, threshold),
               dict(HAS_GA=has_ga, **common)),
        Launch(_gat_bwd_src, (num_src, ),
               (grad_out, a_src, a_dst, es, lse, colptr, row, csc_eid, dz,
                grad_x, grad_src, params, num_edges, num_loops, k0, k1,
                threshold), common),
    ]
    return launches, (grad_x, grad_src, grad_dst,
                      dz if edge_score is not None else None)


def gat_attention_backward(*args,
                           **kwargs) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    r"""Launches :func:`_gat_bwd_dst` then :func:`_gat_bwd_src` (arguments
    as :func:`gat_attention_backward_launches`): returns the gradients of
    :obj:`x`, :obj:`a_src`, :obj:`a_dst` and :obj:`edge_score`."""
    grad_x, grad_src, grad_dst, dz = run(
        *gat_attention_backward_launches(*args, **kwargs))
    dtype = grad_x.dtype
    grad_edge = (dz.to(dtype)
                 if dz is not None else grad_x.new_empty(0, grad_x.size(1)))
    return grad_x, grad_src.to(dtype), grad_dst.to(dtype), grad_edge
