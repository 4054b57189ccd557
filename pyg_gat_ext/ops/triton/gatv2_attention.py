r"""Triton kernels of the fused GATv2 attention, forward and backward.

The graph, the implicit self-loops, the dropout and the accumulator types
are those of :mod:`pyg_gat_ext.ops.triton.gat_attention`, whose helpers the
kernels share. GATv2's score needs the C-wide sum
:obj:`s = x_dst[i] + x_src[j] + edge_x[eid]` of every edge, so each walk
over a node's edges gathers :obj:`[BLOCK_E, H, C]` tiles; the forward pass
therefore walks once, with an online softmax that rescales its running sum
of messages. The backward pass is a target pass (the score gradients, and
:obj:`grad_x_dst`, :obj:`grad_edge_x` and per-program partial sums of
:obj:`grad_att`) then a source pass (:obj:`grad_x_src`): no
:obj:`[E, H, C]` tensor besides :obj:`grad_edge_x`, no atomics,
deterministic.
"""
from typing import List, Optional, Tuple

import torch
import triton
import triton.language as tl
from torch import Tensor

from pyg_gat_ext.ops._reference import dropout_threshold, seed_words
from pyg_gat_ext.ops.triton._launch import Launch, run
from pyg_gat_ext.ops.triton.gat_attention import (
    SEED_WORDS,
    _by_edge_id,
    _config,
    _dense,
    _dropout,
    _edges,
    _head_tile,
    _node_range,
    _params,
    _positions,
    forward_launches,
)

#: Programs of the backward target pass at most: each walks the targets
#: :obj:`p, p + P, ...` and writes one partial sum of :obj:`grad_att`,
#: which torch adds up in a fixed order (deterministic, without atomics).
#: Enough to fill an H100 or H200 several times over at 4 programs per SM.
GRAD_ATT_PROGRAMS = 1024


@triton.jit
def _rows(ptr, rows, tile, mask, H, C, ACC: tl.constexpr):
    # Rows `rows` [BLOCK_E] of an [N, H, C] tensor: a [BLOCK_E, BLOCK_H,
    # BLOCK_C] tile.
    return tl.load(ptr + rows[:, None, None] * (H * C) + tile[None, :, :],
                   mask=mask, other=0.0).to(ACC)


@triton.jit
def _scores(s, att, slope):
    # The activations [BLOCK_E, BLOCK_H, BLOCK_C] of the sums `s` and the
    # scores [BLOCK_E, BLOCK_H].
    u = tl.where(s > 0, s, s * slope)
    return u, tl.sum(u * att[None, :, :], axis=2)


@triton.jit
def _target_scores(xs_ptr, ex_ptr, src_ptr, eid_ptr, i, pos, hi, end,
                   num_edges, xd, att, tile, xmask, slope, H, C,
                   HAS_EDGE: tl.constexpr, REMOVE_SELF_LOOPS: tl.constexpr,
                   ACC: tl.constexpr):
    # For a block of target i's positions (_edges): the edge ids, whether
    # each position exists and counts, the source rows, the sums s, their
    # activations and the scores (-inf for left-out edges).
    src, ids, exists, counts = _edges(src_ptr, eid_ptr, i, pos, hi, end,
                                      num_edges, REMOVE_SELF_LOOPS)
    mask = counts[:, None, None] & xmask[None, :, :]
    xj = _rows(xs_ptr, src, tile, mask, H, C, ACC)
    z = xj + xd[None, :, :]
    if HAS_EDGE:
        z += _rows(ex_ptr, ids, tile, mask, H, C, ACC)
    u, e = _scores(z, att, slope)
    e = tl.where(counts[:, None], e, float('-inf'))
    return ids, exists, counts, xj, z, u, e


@triton.jit(do_not_specialize=SEED_WORDS)
def _gatv2_fwd(xs_ptr, xd_ptr, att_ptr, ex_ptr, ptr_ptr, src_ptr, eid_ptr,
               out_ptr, lse_ptr, alpha_ptr, param_ptr, num_edges, num_loops,
               k0: tl.int64, k1: tl.int64, threshold, H, C,
               HAS_EDGE: tl.constexpr, REMOVE_SELF_LOOPS: tl.constexpr,
               DROPOUT: tl.constexpr, RETURN_ATTENTION_WEIGHTS: tl.constexpr,
               ACC: tl.constexpr, BLOCK_E: tl.constexpr,
               BLOCK_H: tl.constexpr, BLOCK_C: tl.constexpr):
    r"""Grid :obj:`(N_dst,)`: program :obj:`i` walks target :obj:`i`'s
    edges once, keeping per head the running maximum score, the sum of
    exponentials and :obj:`sum_j exp(e_ji - max) * dropout * x_j`
    (rescaled when the maximum grows), and stores the log-sum-exp and
    :obj:`out[i]`; if :obj:`RETURN_ATTENTION_WEIGHTS`, a second walk stores
    the weights by edge id."""
    i, lo, hi, end = _node_range(ptr_ptr, num_loops)
    heads, hmask, tile, xmask = _head_tile(H, C, BLOCK_H, BLOCK_C)
    slope, scale = _params(param_ptr, ACC)
    xd = tl.load(xd_ptr + i * (H * C) + tile, mask=xmask, other=0.0).to(ACC)
    att = tl.load(att_ptr + tile, mask=xmask, other=0.0).to(ACC)

    m = tl.full([BLOCK_H], float('-inf'), ACC)
    s = tl.zeros([BLOCK_H], ACC)
    acc = tl.zeros([BLOCK_H, BLOCK_C], ACC)
    for start in range(lo, end, BLOCK_E):
        pos = start + tl.arange(0, BLOCK_E)
        ids, _, _, xj, _, _, e = _target_scores(
            xs_ptr, ex_ptr, src_ptr, eid_ptr, i, pos, hi, end, num_edges, xd,
            att, tile, xmask, slope, H, C, HAS_EDGE, REMOVE_SELF_LOOPS, ACC)
        m_new = tl.maximum(m, tl.max(e, axis=0))
        m_ref = tl.where(m_new == float('-inf'), 0.0, m_new)
        rescale = tl.exp(m - m_ref)
        p = tl.exp(e - m_ref[None, :])
        s = s * rescale + tl.sum(p, axis=0)
        if DROPOUT:
            p = p * _dropout(ids, heads, k0, k1, threshold, scale)
        acc = acc * rescale[:, None] + tl.sum(p[:, :, None] * xj, axis=0)
        m = m_new
    m = tl.where(m == float('-inf'), 0.0, m)
    lse = tl.where(s == 0, float('-inf'), m + tl.log(s))
    tl.store(lse_ptr + i * H + heads, lse, mask=hmask)
    out = acc / tl.where(s == 0, 1.0, s)[:, None]
    tl.store(out_ptr + i * (H * C) + tile,
             out.to(out_ptr.dtype.element_ty), mask=xmask)

    if RETURN_ATTENTION_WEIGHTS:
        for start in range(lo, end, BLOCK_E):
            pos = start + tl.arange(0, BLOCK_E)
            ids, exists, counts, _, _, _, e = _target_scores(
                xs_ptr, ex_ptr, src_ptr, eid_ptr, i, pos, hi, end, num_edges,
                xd, att, tile, xmask, slope, H, C, HAS_EDGE,
                REMOVE_SELF_LOOPS, ACC)
            w = tl.exp(e - lse[None, :])
            if DROPOUT:
                w = w * _dropout(ids, heads, k0, k1, threshold, scale)
            w = tl.where(counts[:, None], w, 0.0)
            offs, emask = _by_edge_id(ids, exists, heads, hmask, H)
            tl.store(alpha_ptr + offs, w.to(alpha_ptr.dtype.element_ty),
                     mask=emask)


@triton.jit
def _target_edges(ga_ptr, xs_ptr, ex_ptr, src_ptr, eid_ptr, i, start, hi,
                  end, num_edges, xd, gi, att, lse, tile, xmask, heads, hmask,
                  slope, scale, k0, k1, threshold, H, C,
                  HAS_EDGE: tl.constexpr, HAS_GA: tl.constexpr,
                  REMOVE_SELF_LOOPS: tl.constexpr, DROPOUT: tl.constexpr,
                  ACC: tl.constexpr, BLOCK_E: tl.constexpr):
    # For target i's block of positions from `start`: the edge ids,
    # whether each position exists, the sums s, their activations, the
    # attention (zero for left-out edges), the dropout factor and
    # g_alpha = dropout * (<g_i, x_j> + grad_alpha).
    pos = start + tl.arange(0, BLOCK_E)
    ids, exists, counts, xj, z, u, e = _target_scores(
        xs_ptr, ex_ptr, src_ptr, eid_ptr, i, pos, hi, end, num_edges, xd,
        att, tile, xmask, slope, H, C, HAS_EDGE, REMOVE_SELF_LOOPS, ACC)
    a = tl.where(counts[:, None], tl.exp(e - lse[None, :]), 0.0)
    ga = tl.sum(xj * gi[None, :, :], axis=2)
    if HAS_GA:
        offs, emask = _by_edge_id(ids, exists, heads, hmask, H)
        ga += tl.load(ga_ptr + offs, mask=emask, other=0.0).to(ACC)
    delta = tl.full([1, 1], 1.0, ACC)
    if DROPOUT:
        delta = _dropout(ids, heads, k0, k1, threshold, scale)
    ga = tl.where(counts[:, None], ga * delta, 0.0)
    return ids, exists, z, u, a, delta, ga


@triton.jit(do_not_specialize=SEED_WORDS)
def _gatv2_bwd_dst(go_ptr, ga_ptr, xs_ptr, xd_ptr, att_ptr, ex_ptr, lse_ptr,
                   ptr_ptr, src_ptr, eid_ptr, dz_ptr, w_ptr, gxd_ptr, gex_ptr,
                   gatt_ptr, param_ptr, num_dst, num_edges, num_loops,
                   k0: tl.int64, k1: tl.int64, threshold, H, C,
                   HAS_EDGE: tl.constexpr, HAS_GA: tl.constexpr,
                   REMOVE_SELF_LOOPS: tl.constexpr, DROPOUT: tl.constexpr,
                   ACC: tl.constexpr, BLOCK_E: tl.constexpr,
                   BLOCK_H: tl.constexpr, BLOCK_C: tl.constexpr):
    r"""Grid :obj:`(P,)`, :obj:`P <= GRAD_ATT_PROGRAMS`: program :obj:`p`
    takes targets :obj:`p, p + P, ...`. For target :obj:`i` a first walk
    sums :obj:`D_i = sum_j alpha * g_alpha`; a second stores by edge id the
    score gradient :obj:`de = alpha (g_alpha - D_i)` and the weight
    :obj:`alpha * dropout` (for the source pass), and
    :obj:`ds = de * att * LeakyReLU'(s)` as :obj:`grad_edge_x` if
    :obj:`HAS_EDGE`, summing :obj:`ds` into :obj:`grad_x_dst[i]` and
    :obj:`de * LeakyReLU(s)` into the program's partial :obj:`grad_att`."""
    heads, hmask, tile, xmask = _head_tile(H, C, BLOCK_H, BLOCK_C)
    slope, scale = _params(param_ptr, ACC)
    att = tl.load(att_ptr + tile, mask=xmask, other=0.0).to(ACC)
    gatt = tl.zeros([BLOCK_H, BLOCK_C], ACC)
    for node in range(tl.program_id(0), num_dst, tl.num_programs(0)):
        i = tl.cast(node, tl.int64)
        lo, hi, end = _positions(ptr_ptr, i, num_loops)
        xd = tl.load(xd_ptr + i * (H * C) + tile, mask=xmask,
                     other=0.0).to(ACC)
        gi = tl.load(go_ptr + i * (H * C) + tile, mask=xmask,
                     other=0.0).to(ACC)
        lse = tl.load(lse_ptr + i * H + heads, mask=hmask, other=0.0).to(ACC)
        d = tl.zeros([BLOCK_H], ACC)
        gd = tl.zeros([BLOCK_H, BLOCK_C], ACC)
        for walk in tl.static_range(2):  # The second needs the first's D_i.
            for start in range(lo, end, BLOCK_E):
                ids, exists, z, u, a, delta, ga = _target_edges(
                    ga_ptr, xs_ptr, ex_ptr, src_ptr, eid_ptr, i, start, hi,
                    end, num_edges, xd, gi, att, lse, tile, xmask, heads,
                    hmask, slope, scale, k0, k1, threshold, H, C, HAS_EDGE,
                    HAS_GA, REMOVE_SELF_LOOPS, DROPOUT, ACC, BLOCK_E)
                if walk == 0:
                    d += tl.sum(a * ga, axis=0)
                else:
                    de = a * (ga - d[None, :])
                    offs, emask = _by_edge_id(ids, exists, heads, hmask, H)
                    tl.store(dz_ptr + offs, de, mask=emask)
                    tl.store(w_ptr + offs, a * delta, mask=emask)
                    ds = de[:, :, None] * att[None, :, :] * tl.where(
                        z > 0, 1.0, slope)
                    if HAS_EDGE:
                        tl.store(
                            gex_ptr + ids[:, None, None] * (H * C) +
                            tile[None, :, :], ds.to(gex_ptr.dtype.element_ty),
                            mask=exists[:, None, None] & xmask[None, :, :])
                    gd += tl.sum(ds, axis=0)
                    gatt += tl.sum(de[:, :, None] * u, axis=0)
        tl.store(gxd_ptr + i * (H * C) + tile,
                 gd.to(gxd_ptr.dtype.element_ty), mask=xmask)
    tl.store(gatt_ptr + tl.program_id(0).to(tl.int64) * (H * C) + tile,
             gatt, mask=xmask)


@triton.jit
def _gatv2_bwd_src(go_ptr, xs_ptr, xd_ptr, att_ptr, ptr_ptr, dst_ptr,
                   eid_ptr, dz_ptr, w_ptr, gex_ptr, gxs_ptr, param_ptr,
                   num_edges, num_loops, H, C, HAS_EDGE: tl.constexpr,
                   REMOVE_SELF_LOOPS: tl.constexpr, ACC: tl.constexpr,
                   BLOCK_E: tl.constexpr, BLOCK_H: tl.constexpr,
                   BLOCK_C: tl.constexpr):
    r"""Grid :obj:`(N_src,)`: program :obj:`j` computes
    :obj:`grad_x_src[j] = sum_i alpha_ji * dropout * g_i + ds_ji` from the
    weights and score gradients the target pass stored by edge id;
    :obj:`ds` is read back from :obj:`grad_edge_x` if :obj:`HAS_EDGE`,
    else formed again from the sign of :obj:`s`."""
    j, lo, hi, end = _node_range(ptr_ptr, num_loops)
    heads, hmask, tile, xmask = _head_tile(H, C, BLOCK_H, BLOCK_C)
    slope, _ = _params(param_ptr, ACC)
    xj = tl.load(xs_ptr + j * (H * C) + tile, mask=xmask, other=0.0).to(ACC)
    att = tl.load(att_ptr + tile, mask=xmask, other=0.0).to(ACC)

    acc = tl.zeros([BLOCK_H, BLOCK_C], ACC)
    for start in range(lo, end, BLOCK_E):
        pos = start + tl.arange(0, BLOCK_E)
        dst, ids, exists, counts = _edges(dst_ptr, eid_ptr, j, pos, hi, end,
                                          num_edges, REMOVE_SELF_LOOPS)
        offs, cmask = _by_edge_id(ids, counts, heads, hmask, H)
        mask = counts[:, None, None] & xmask[None, :, :]
        w = tl.load(w_ptr + offs, mask=cmask, other=0.0)
        gi = _rows(go_ptr, dst, tile, mask, H, C, ACC)
        if HAS_EDGE:
            ds = _rows(gex_ptr, ids, tile, mask, H, C, ACC)
        else:
            z = _rows(xd_ptr, dst, tile, mask, H, C, ACC) + xj[None, :, :]
            de = tl.load(dz_ptr + offs, mask=cmask, other=0.0)
            ds = de[:, :, None] * att[None, :, :] * tl.where(z > 0, 1.0,
                                                             slope)
        acc += tl.sum(w[:, :, None] * gi + ds, axis=0)
    tl.store(gxs_ptr + j * (H * C) + tile, acc.to(gxs_ptr.dtype.element_ty),
             mask=xmask)


def gatv2_attention_launches(
        x_src: Tensor, x_dst: Tensor, att: Tensor, edge_x: Optional[Tensor],
        *graph) -> Tuple[List[Launch], Tuple[Tensor, Tensor, Tensor]]:
    r"""The launch of :func:`_gatv2_fwd` for the op's arguments (those from
    :obj:`rowptr` on as :func:`forward_launches` takes them), and the
    outputs :obj:`(out, lse, alpha)` it writes."""
    return forward_launches(_gatv2_fwd, x_src, (x_dst, att), edge_x, *graph)


def gatv2_attention(*args, **kwargs) -> Tuple[Tensor, Tensor, Tensor]:
    r"""Launches :func:`_gatv2_fwd` (arguments as
    :func:`gatv2_attention_launches`): returns :obj:`(out, lse, alpha)`."""
    return run(*gatv2_attention_launches(*args, **kwargs))


def gatv2_attention_backward_launches(
    grad_out: Tensor, grad_alpha: Optional[Tensor], x_src: Tensor,
    x_dst: Tensor, att: Tensor, edge_x: Optional[Tensor], lse: Tensor,
    rowptr: Tensor, col: Tensor, csr_eid: Tensor, colptr: Tensor,
    row: Tensor, csc_eid: Tensor, num_loops: int, remove_self_loops: bool,
    negative_slope: float, dropout: float, seed: Optional[Tensor]
) -> Tuple[List[Launch], Tuple[Tensor, Tensor, Tensor, Tensor]]:
    r"""The launches of :func:`_gatv2_bwd_dst` then :func:`_gatv2_bwd_src`
    for the op's arguments, and the buffers they write: the gradients of
    :obj:`x_src`, :obj:`x_dst` and :obj:`edge_x` (empty :obj:`[0, H, C]`
    without edge features) and the partial sums of the gradient of
    :obj:`att` (:obj:`[P, H, C]` in the accumulator type)."""
    (x_src, x_dst, att, lse, rowptr, col, csr_eid, colptr, row,
     csc_eid) = _dense(x_src, x_dst, att, lse, rowptr, col, csr_eid, colptr,
                       row, csc_eid)
    edge_x = _dense(edge_x)[0] if edge_x is not None else None
    num_src, heads, channels = x_src.shape
    num_dst, num_edges = rowptr.numel() - 1, col.numel()
    k0, k1 = seed_words(seed)
    meta, params, acc = _config(x_src, dropout, negative_slope, True)
    grad_out = grad_out.to(x_src.dtype).contiguous()
    has_ga = grad_alpha is not None and grad_alpha.numel() > 0
    dz = x_src.new_empty(num_edges + num_loops, heads, dtype=acc)
    w = torch.empty_like(dz)
    grad_src, grad_dst = torch.empty_like(x_src), torch.empty_like(x_dst)
    grad_edge = (torch.empty_like(edge_x) if edge_x is not None else
                 x_src.new_empty(0, heads, channels))
    programs = min(num_dst, GRAD_ATT_PROGRAMS)
    grad_att = x_src.new_empty(programs, heads, channels, dtype=acc)
    common = dict(HAS_EDGE=edge_x is not None,
                  REMOVE_SELF_LOOPS=remove_self_loops, **meta)
    launches = [
        Launch(_gatv2_bwd_dst, (programs, ),
               (grad_out, grad_alpha.contiguous() if has_ga else dz, x_src,
                x_dst, att, edge_x if edge_x is not None else x_src, lse,
                rowptr, col, csr_eid, dz, w, grad_dst, grad_edge, grad_att,
                params, num_dst, num_edges, num_loops, k0, k1,
                dropout_threshold(dropout)),
               dict(HAS_GA=has_ga, DROPOUT=dropout > 0.0, **common)),
        Launch(_gatv2_bwd_src, (num_src, ),
               (grad_out, x_src, x_dst, att, colptr, row, csc_eid, dz, w,
                grad_edge, grad_src, params, num_edges, num_loops), common),
    ]
    return launches, (grad_src, grad_dst, grad_att, grad_edge)


def gatv2_attention_backward(
        *args, **kwargs) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    r"""Launches :func:`_gatv2_bwd_dst` then :func:`_gatv2_bwd_src`
    (arguments as :func:`gatv2_attention_backward_launches`): returns the
    gradients of :obj:`x_src`, :obj:`x_dst`, :obj:`att` (the partial sums
    added in program order) and :obj:`edge_x`."""
    grad_src, grad_dst, grad_att, grad_edge = run(
        *gatv2_attention_backward_launches(*args, **kwargs))
    return grad_src, grad_dst, grad_att.sum(0).to(grad_src.dtype), grad_edge
