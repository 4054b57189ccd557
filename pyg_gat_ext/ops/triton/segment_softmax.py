r"""Triton kernels of the segment softmax, forward and backward.

The input is viewed as :obj:`[outer, num_entries, width]` with segments along
the middle dimension, grouped by a CSR :obj:`ptr` over sorted positions and
an optional :obj:`perm` (sorted position -> row). No atomics: every segment
is reduced by one program, so results are deterministic. Half and bfloat16
inputs are computed in float32, float64 inputs in float64.
"""
import math
from typing import List, Optional, Tuple

import torch
import triton
import triton.language as tl
from torch import Tensor

from pyg_gat_ext.ops import _reference
from pyg_gat_ext.ops.triton._launch import Launch, run

EPS = tl.constexpr(_reference.EPS)


@triton.jit
def _rows(perm_ptr, pos, mask, HAS_PERM: tl.constexpr):
    # The input rows at sorted positions `pos`, as int64 offsets.
    if HAS_PERM:
        return tl.load(perm_ptr + pos, mask=mask, other=0).to(tl.int64)
    return pos.to(tl.int64)


@triton.jit
def _tile(perm_ptr, start, hi, base, cols, col_mask, width,
          HAS_PERM: tl.constexpr, BLOCK_E: tl.constexpr):
    # Offsets and mask of the [BLOCK_E, BLOCK_W] tile of sorted positions
    # start ... start + BLOCK_E - 1 (below `hi`) and columns `cols`.
    pos = start + tl.arange(0, BLOCK_E)
    emask = pos < hi
    rows = _rows(perm_ptr, pos, emask, HAS_PERM)
    mask = emask[:, None] & col_mask[None, :]
    return base + rows[:, None] * width + cols[None, :], mask


@triton.jit
def _program_columns(num_entries, width, outer, BLOCK_W: tl.constexpr):
    # Program p of the one-dimensional grid is (i, o, j) = (row block, outer
    # slice, column block) with j fastest: its first segment block, columns
    # and the int64 offset of slice o. (CUDA limits the grid's other
    # dimensions to 65535 programs, too few for `outer` or `width`.)
    pid = tl.program_id(0).to(tl.int64)
    col_blocks = tl.cdiv(width, BLOCK_W)
    j = pid % col_blocks
    o = (pid // col_blocks) % outer
    i = pid // col_blocks // outer
    cols = j * BLOCK_W + tl.arange(0, BLOCK_W)
    base = o * num_entries * width
    return i, cols, cols < width, base


@triton.jit
def _segment_bounds(ptr_ptr, seg, num_segments):
    # [lo, hi) of segment `seg`, empty past the last segment (the last row
    # block may be partial).
    seg_c = tl.minimum(seg, num_segments - 1)
    lo = tl.load(ptr_ptr + seg_c)
    valid = (seg < num_segments).to(lo.dtype)
    return lo, lo + (tl.load(ptr_ptr + seg_c + 1) - lo) * valid


@triton.jit
def _segment_softmax_fwd(
    src_ptr, out_ptr, ptr_ptr, perm_ptr,
    num_segments, num_entries, width, outer,
    HAS_PERM: tl.constexpr, ROWS: tl.constexpr, BLOCK_E: tl.constexpr,
    BLOCK_W: tl.constexpr, ACC: tl.constexpr,
):
    r"""Grid: (cdiv(num_segments, ROWS) * outer * cdiv(width, BLOCK_W),).
    Program (i, o, j) normalises segments i * ROWS ... i * ROWS + ROWS - 1
    for outer index o and columns j * BLOCK_W ... + BLOCK_W - 1: a first loop
    over each segment's entries keeps the running maximum and the sum of
    exponentials relative to it (online softmax), a second writes
    exp(x - max) / (sum + 1e-16), NaN where PyG's softmax gives NaN."""
    i, cols, col_mask, base = _program_columns(num_entries, width, outer,
                                               BLOCK_W)
    for k in tl.static_range(ROWS):
        lo, hi = _segment_bounds(ptr_ptr, i * ROWS + k, num_segments)
        m = tl.full([BLOCK_W], float('-inf'), ACC)
        s = tl.zeros([BLOCK_W], ACC)
        bad = tl.zeros([BLOCK_W], tl.int32)
        for start in range(lo, hi, BLOCK_E):
            offs, mask = _tile(perm_ptr, start, hi, base, cols, col_mask,
                               width, HAS_PERM, BLOCK_E)
            x = tl.load(src_ptr + offs, mask=mask,
                        other=float('-inf')).to(ACC)
            bad += tl.sum(((x != x) | (x == float('inf'))).to(tl.int32), 0)
            tile_max = tl.max(tl.where(x == x, x, float('-inf')), 0)
            new_m = tl.maximum(m, tile_max)
            # Rescale the sum: a factor 0 while the maximum was -inf.
            scale = tl.where(m == new_m, 1.0, tl.exp(m - new_m))
            d = x - new_m[None, :]
            e = tl.where(d == d, tl.exp(d), 0.0)  # -inf - -inf adds 0.
            s = s * scale + tl.sum(e, 0)
            m = new_m
        is_nan = (bad > 0) | (m == float('-inf'))
        denom = s + EPS
        for start in range(lo, hi, BLOCK_E):
            offs, mask = _tile(perm_ptr, start, hi, base, cols, col_mask,
                               width, HAS_PERM, BLOCK_E)
            x = tl.load(src_ptr + offs, mask=mask, other=0.0).to(ACC)
            y = tl.exp(x - m[None, :]) / denom[None, :]
            y = tl.where(is_nan[None, :], float('nan'), y)
            tl.store(out_ptr + offs, y.to(out_ptr.dtype.element_ty),
                     mask=mask)


@triton.jit
def _segment_softmax_bwd(
    out_ptr, grad_ptr, grad_src_ptr, ptr_ptr, perm_ptr,
    num_segments, num_entries, width, outer,
    HAS_PERM: tl.constexpr, ROWS: tl.constexpr, BLOCK_E: tl.constexpr,
    BLOCK_W: tl.constexpr, ACC: tl.constexpr,
):
    r"""Grid as :func:`_segment_softmax_fwd`. Per segment, a first loop sums
    grad * out, a second writes out * (grad - sum)."""
    i, cols, col_mask, base = _program_columns(num_entries, width, outer,
                                               BLOCK_W)
    for k in tl.static_range(ROWS):
        lo, hi = _segment_bounds(ptr_ptr, i * ROWS + k, num_segments)
        dot = tl.zeros([BLOCK_W], ACC)
        for start in range(lo, hi, BLOCK_E):
            offs, mask = _tile(perm_ptr, start, hi, base, cols, col_mask,
                               width, HAS_PERM, BLOCK_E)
            y = tl.load(out_ptr + offs, mask=mask, other=0.0).to(ACC)
            g = tl.load(grad_ptr + offs, mask=mask, other=0.0).to(ACC)
            dot += tl.sum(y * g, 0)
        for start in range(lo, hi, BLOCK_E):
            offs, mask = _tile(perm_ptr, start, hi, base, cols, col_mask,
                               width, HAS_PERM, BLOCK_E)
            y = tl.load(out_ptr + offs, mask=mask, other=0.0).to(ACC)
            g = tl.load(grad_ptr + offs, mask=mask, other=0.0).to(ACC)
            dx = y * (g - dot[None, :])
            tl.store(grad_src_ptr + offs,
                     dx.to(grad_src_ptr.dtype.element_ty), mask=mask)


def _launches(kernel, tensors, ptr: Tensor, perm: Optional[Tensor],
              dim: int) -> Tuple[List[Launch], Tensor]:
    # The launch of `kernel` over `tensors` (contiguous, same shape; the
    # result is written into a new tensor shaped like them, returned too).
    first = tensors[0]
    result = torch.empty_like(first)
    outer = math.prod(first.shape[:dim])
    num_entries, width = first.size(dim), math.prod(first.shape[dim + 1:])
    num_segments = ptr.numel() - 1
    if first.numel() == 0 or num_segments == 0:
        return [], result
    # Tiles of at most 1024 elements: at 2048, some variant spills on sm_80
    # or sm_90 (tests/ops/test_triton_compile.py, full matrix).
    block_w = min(triton.next_power_of_2(max(width, 1)), 64)
    rows = 4 if num_segments >= 4096 else 1
    grid = (triton.cdiv(num_segments, rows) * outer *
            triton.cdiv(width, block_w), )
    launch = Launch(
        kernel, grid,
        (*tensors, result, ptr, perm if perm is not None else ptr,
         num_segments, num_entries, width, outer),
        dict(HAS_PERM=perm is not None, ROWS=rows,
             BLOCK_E=max(16, min(128, 1024 // block_w)), BLOCK_W=block_w,
             ACC=tl.float64 if first.dtype == torch.float64 else tl.float32))
    return [launch], result


def _grouping(index: Optional[Tensor], ptr: Optional[Tensor],
              perm: Optional[Tensor],
              num_nodes: int) -> Tuple[Tensor, Optional[Tensor]]:
    # The kernels walk segments: group an `index` first (a counting sort).
    if ptr is not None:
        return ptr.contiguous(), None if perm is None else perm.contiguous()
    assert index is not None
    return torch.ops.pyg_gat_ext.segment_csr(index, num_nodes)


def segment_softmax_launches(
        src: Tensor, index: Optional[Tensor], ptr: Optional[Tensor],
        perm: Optional[Tensor], num_nodes: int,
        dim: int) -> Tuple[List[Launch], Tensor]:
    r"""The launch of :func:`_segment_softmax_fwd` for the op's arguments
    (none for empty input), and the output it writes."""
    ptr, perm = _grouping(index, ptr, perm, num_nodes)
    return _launches(_segment_softmax_fwd, [src.contiguous()], ptr, perm,
                     dim)


def segment_softmax(*args, **kwargs) -> Tensor:
    r"""Launches :func:`_segment_softmax_fwd` (see there for the grid;
    arguments as :func:`segment_softmax_launches`)."""
    return run(*segment_softmax_launches(*args, **kwargs))


def segment_softmax_backward_launches(
        out: Tensor, grad_out: Tensor, index: Optional[Tensor],
        ptr: Optional[Tensor], perm: Optional[Tensor], num_nodes: int,
        dim: int) -> Tuple[List[Launch], Tensor]:
    r"""The launch of :func:`_segment_softmax_bwd` for the op's arguments
    (none for empty input), and the output it writes."""
    ptr, perm = _grouping(index, ptr, perm, num_nodes)
    tensors = [out.contiguous(), grad_out.to(out.dtype).contiguous()]
    return _launches(_segment_softmax_bwd, tensors, ptr, perm, dim)


def segment_softmax_backward(*args, **kwargs) -> Tensor:
    r"""Launches :func:`_segment_softmax_bwd` (see there for the grid;
    arguments as :func:`segment_softmax_backward_launches`)."""
    return run(*segment_softmax_backward_launches(*args, **kwargs))


def segment_csr(index: Tensor, num_nodes: int) -> Tuple[Tensor, Tensor]:
    r"""The grouping of :obj:`index` (see
    :func:`pyg_gat_ext.ops._reference.segment_csr`, which runs on CUDA)."""
    return _reference.segment_csr(index, num_nodes)
