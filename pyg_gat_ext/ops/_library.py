r"""The ``pyg_gat_ext`` operator library: schemas, fake kernels, autograd,
and the device kernels.

Every op is defined once here with its pure-PyTorch reference as the default
kernel. The CPU kernel (C++, built lazily by :mod:`._cpp`) and the CUDA
kernel (Triton, when ``triton`` is installed) register under their dispatch
keys; each falls back to the reference when its kernel is unavailable, and
:func:`use_backend` (or ``PYG_GAT_EXT_BACKEND``) forces one implementation.

Segment grouping: segment ``s`` owns sorted positions ``ptr[s]`` to
``ptr[s + 1] - 1``, and position ``p`` holds row ``perm[p]`` of the input
(row ``p`` when ``perm`` is ``None``, i.e. the input is sorted). The
reference uses the per-row segment ``index`` instead; each op takes both and
derives what it lacks.
"""
import contextlib
import importlib.util
import os
import warnings
from typing import Iterator, Optional, Tuple

import torch
from torch import Tensor

from pyg_gat_ext.ops import _cpp, _reference

BACKENDS = ('auto', 'reference', 'cpp', 'triton')

#: Forced implementation, from ``PYG_GAT_EXT_BACKEND`` or :func:`use_backend`.
_forced = os.environ.get('PYG_GAT_EXT_BACKEND', 'auto')
if _forced not in BACKENDS:
    raise ValueError(f'PYG_GAT_EXT_BACKEND must be one of {BACKENDS} (got '
                     f"'{_forced}')")

#: Triton kernels are registered for CUDA when `triton` is installed, and run
#: once it imports (on first use; compiled on first launch). Under
#: ``TRITON_INTERPRET=1`` they also run on CPU tensors, which is how they are
#: tested without a GPU.
HAS_TRITON = importlib.util.find_spec('triton') is not None


def _triton_interpret() -> bool:
    return os.environ.get('TRITON_INTERPRET', '0') == '1'


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[None]:
    r"""Context manager that runs every op with implementation :obj:`name`:
    ``'reference'`` (pure PyTorch), ``'cpp'`` (CPU), ``'triton'`` (CUDA, or
    CPU under ``TRITON_INTERPRET=1``) or ``'auto'`` (the kernel of each
    device where it is available, else the reference)."""
    global _forced
    if name not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS} (got '{name}')")
    previous, _forced = _forced, name
    try:
        yield
    finally:
        _forced = previous


def use_reference() -> 'contextlib.AbstractContextManager[None]':
    r"""Shorthand for :obj:`use_backend('reference')`."""
    return use_backend('reference')


def kernel_backend(device: torch.device) -> str:
    r"""The implementation the ops run on :obj:`device`: ``'cpp'``,
    ``'triton'`` or ``'reference'``. Builds the C++ kernels if needed, and
    raises if a forced backend cannot run on :obj:`device`."""
    if _forced == 'reference':
        return 'reference'
    if _forced == 'cpp' or (_forced == 'auto' and device.type == 'cpu'):
        if device.type == 'cpu' and _cpp.load():
            return 'cpp'
        if _forced == 'cpp':
            raise RuntimeError(f"pyg_gat_ext: the 'cpp' backend cannot run "
                               f'on {device} (CPU only, and it must build)')
        return 'reference'
    if _forced == 'triton':
        if (HAS_TRITON and (device.type == 'cuda' or _triton_interpret())
                and _triton() is not None):
            return 'triton'
        raise RuntimeError(f"pyg_gat_ext: the 'triton' backend cannot run "
                           f'on {device} (needs triton to import, and CUDA '
                           f'or TRITON_INTERPRET=1)')
    if device.type == 'cuda' and HAS_TRITON and _triton() is not None:
        return 'triton'
    return 'reference'


_triton_state = {'tried': False, 'module': None}


def _triton():
    # The Triton kernels module, imported on first use; None (with one
    # warning) if triton is installed but does not import.
    if not _triton_state['tried']:
        _triton_state['tried'] = True
        try:
            from pyg_gat_ext.ops import triton as triton_ops
            _triton_state['module'] = triton_ops
        except Exception as e:
            warnings.warn(
                f'pyg_gat_ext: triton is installed but does not import, '
                f'using the pure-PyTorch reference on CUDA. Cause: '
                f'{type(e).__name__}: {e}', RuntimeWarning, stacklevel=3)
    return _triton_state['module']


# segment_csr ################################################################


@torch.library.custom_op('pyg_gat_ext::segment_csr', mutates_args=())
def segment_csr(index: Tensor, num_segments: int) -> Tuple[Tensor, Tensor]:
    r"""Groups the entries of :obj:`index` by segment: returns the CSR
    pointer :obj:`ptr` and the stable permutation :obj:`perm` that sorts
    :obj:`index`."""
    return _reference.segment_csr(index, num_segments)


@segment_csr.register_fake
def _(index, num_segments):
    return (index.new_empty(num_segments + 1, dtype=torch.long),
            index.new_empty(index.size(0), dtype=torch.long))


@segment_csr.register_kernel('cpu')
def _(index, num_segments):
    if kernel_backend(index.device) == 'cpp':
        return torch.ops.pyg_gat_ext_cpu.segment_csr(index, num_segments)
    return _reference.segment_csr(index, num_segments)


# segment_softmax ############################################################


def _index(index: Optional[Tensor], ptr: Optional[Tensor],
           perm: Optional[Tensor], num_entries: int) -> Tensor:
    # The per-row segment of every entry, from whichever grouping is given.
    if index is not None:
        return index
    assert ptr is not None
    return _reference.ptr_to_index(ptr, perm, num_entries)


def _grouping(index: Optional[Tensor], ptr: Optional[Tensor],
              perm: Optional[Tensor],
              num_segments: int) -> Tuple[Tensor, Optional[Tensor]]:
    # The (ptr, perm) grouping the kernels need, built if only `index` is.
    if ptr is not None:
        return ptr.contiguous(), None if perm is None else perm.contiguous()
    assert index is not None
    return torch.ops.pyg_gat_ext.segment_csr(index, num_segments)


@torch.library.custom_op('pyg_gat_ext::segment_softmax', mutates_args=())
def segment_softmax(src: Tensor, index: Optional[Tensor],
                    ptr: Optional[Tensor], perm: Optional[Tensor],
                    num_segments: int, dim: int) -> Tensor:
    r"""Segment softmax of :obj:`src` along :obj:`dim`."""
    index = _index(index, ptr, perm, src.size(dim))
    return _reference.segment_softmax(src, index, num_segments, dim)


@segment_softmax.register_fake
def _(src, index, ptr, perm, num_segments, dim):
    return torch.empty_like(src)


@torch.library.custom_op('pyg_gat_ext::segment_softmax_backward',
                         mutates_args=())
def segment_softmax_backward(out: Tensor, grad_out: Tensor,
                             index: Optional[Tensor], ptr: Optional[Tensor],
                             perm: Optional[Tensor], num_segments: int,
                             dim: int) -> Tensor:
    r"""Gradient of :obj:`segment_softmax` given its output :obj:`out`:
    :obj:`out * (grad_out - segment_sum(grad_out * out))`."""
    index = _index(index, ptr, perm, out.size(dim))
    return _reference.segment_softmax_backward(out, grad_out, index,
                                               num_segments, dim)


@segment_softmax_backward.register_fake
def _(out, grad_out, index, ptr, perm, num_segments, dim):
    return torch.empty_like(out)


def _cpu_by_index(index: Optional[Tensor], ptr: Optional[Tensor],
                  perm: Optional[Tensor], num_segments: int,
                  num_entries: int) -> bool:
    # The C++ kernels stream an unsorted `index` with per-thread segment
    # accumulators when those cost no more than the input itself; sorted
    # input (`ptr` alone) and very sparse groupings take the segment path.
    if index is None or (ptr is not None and perm is None):
        return False
    return torch.get_num_threads() * num_segments <= num_entries


def _run(name: str, tensors, index, ptr, perm, num_segments: int, dim: int):
    # Runs op `name` ('segment_softmax' or 'segment_softmax_backward') on
    # its tensor inputs with the implementation `kernel_backend` picks: each
    # implementation has a function of that name (the C++ one by `index`
    # with the suffix '_index').
    backend = kernel_backend(tensors[0].device)
    num_entries = tensors[0].size(dim)
    if backend == 'reference':
        index = _index(index, ptr, perm, num_entries)
        return getattr(_reference, name)(*tensors, index, num_segments, dim)
    if backend == 'cpp' and _cpu_by_index(index, ptr, perm, num_segments,
                                          num_entries):
        return getattr(torch.ops.pyg_gat_ext_cpu, name + '_index')(
            *tensors, index.contiguous(), num_segments, dim)
    ptr, perm = _grouping(index, ptr, perm, num_segments)
    kernels = torch.ops.pyg_gat_ext_cpu if backend == 'cpp' else _triton()
    return getattr(kernels, name)(*tensors, ptr, perm, dim)


def _softmax_kernel(src, index, ptr, perm, num_segments, dim):
    return _run('segment_softmax', [src], index, ptr, perm, num_segments,
                dim)


def _softmax_backward_kernel(out, grad_out, index, ptr, perm, num_segments,
                             dim):
    return _run('segment_softmax_backward', [out, grad_out], index, ptr,
                perm, num_segments, dim)


# The same Python kernel serves both devices: it picks the implementation.
for _device in ('cpu', 'cuda'):
    segment_softmax.register_kernel(_device)(_softmax_kernel)
    segment_softmax_backward.register_kernel(_device)(
        _softmax_backward_kernel)


def _setup_softmax(ctx, inputs: Tuple, output: Tensor) -> None:
    _, index, ptr, perm, num_segments, dim = inputs
    ctx.save_for_backward(output, index, ptr, perm)
    ctx.num_segments, ctx.dim = num_segments, dim


def _softmax_grad(ctx, grad: Tensor):
    out, index, ptr, perm = ctx.saved_tensors
    grad_src = torch.ops.pyg_gat_ext.segment_softmax_backward(
        out, grad, index, ptr, perm, ctx.num_segments, ctx.dim)
    return grad_src, None, None, None, None, None


segment_softmax.register_autograd(_softmax_grad, setup_context=_setup_softmax)


def _setup_softmax_backward(ctx, inputs: Tuple, output: Tensor) -> None:
    out, grad_out, index, ptr, perm, num_segments, dim = inputs
    ctx.save_for_backward(out, grad_out, index, ptr, perm)
    ctx.num_segments, ctx.dim = num_segments, dim


def _softmax_backward_grad(ctx, v: Tensor):
    # grad_src_k = y_k (g_k - s_k) with s = segment_sum(g * y) gathered, so
    # for a cotangent v:  d/dg_j = y_j (v_j - t_j),
    #                     d/dy_j = v_j (g_j - s_j) - g_j t_j,
    # with t = segment_sum(v * y) gathered: double backward for free.
    out, grad_out, index, ptr, perm = ctx.saved_tensors
    n, dim = ctx.num_segments, ctx.dim
    index = _index(index, ptr, perm, out.size(dim))
    s = _reference.segment_sum(grad_out * out, index, n, dim)
    t = _reference.segment_sum(v * out, index, n, dim)
    s, t = s.index_select(dim, index), t.index_select(dim, index)
    grad_y = v * (grad_out - s) - grad_out * t
    grad_g = out * (v - t)
    return grad_y, grad_g, None, None, None, None, None


segment_softmax_backward.register_autograd(
    _softmax_backward_grad, setup_context=_setup_softmax_backward)


# gat_attention ##############################################################
#
# The graph travels as two groupings of the same edges: by target (CSR: ptr,
# src, eid) for the forward and the target-side gradients, and by source
# (CSC: ptr_t, dst_t, eid_t) for the source-side gradients, so that no
# gradient is accumulated with atomics. `eid` maps a position to the edge id
# that indexes `edge_score` and the attention weights.


def _opmath(dtype: torch.dtype) -> torch.dtype:
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


@torch.library.custom_op('pyg_gat_ext::gat_attention', mutates_args=())
def gat_attention(x: Tensor, a_src: Tensor, a_dst: Tensor,
                  edge_score: Optional[Tensor], ptr: Tensor, src: Tensor,
                  eid: Tensor, ptr_t: Tensor, dst_t: Tensor, eid_t: Tensor,
                  num_loops: int, skip_self_loops: bool,
                  negative_slope: float, dropout: float,
                  seed: Optional[Tensor],
                  need_alpha: bool) -> Tuple[Tensor, Tensor, Tensor]:
    r"""Fused GAT attention and aggregation (see
    :func:`pyg_gat_ext.ops._reference.gat_attention`)."""
    out, lse, alpha = _reference.gat_attention(
        x, a_src, a_dst, edge_score, ptr, src, eid, num_loops,
        skip_self_loops, negative_slope, dropout, seed, need_alpha)
    return out, lse.to(_opmath(x.dtype)), alpha


@gat_attention.register_fake
def _(x, a_src, a_dst, edge_score, ptr, src, eid, ptr_t, dst_t, eid_t,
      num_loops, skip_self_loops, negative_slope, dropout, seed, need_alpha):
    num_dst, heads = ptr.size(0) - 1, x.size(1)
    num_alpha = src.size(0) + num_loops if need_alpha else 0
    return (x.new_empty(num_dst, heads, x.size(2)),
            x.new_empty(num_dst, heads, dtype=_opmath(x.dtype)),
            x.new_empty(num_alpha, heads))


@torch.library.custom_op('pyg_gat_ext::gat_attention_backward',
                         mutates_args=())
def gat_attention_backward(
        grad_out: Tensor, grad_alpha: Optional[Tensor], x: Tensor,
        a_src: Tensor, a_dst: Tensor, edge_score: Optional[Tensor],
        lse: Tensor, ptr: Tensor, src: Tensor, eid: Tensor, ptr_t: Tensor,
        dst_t: Tensor, eid_t: Tensor,
        num_loops: int, skip_self_loops: bool,
        negative_slope: float, dropout: float, seed: Optional[Tensor]
) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    r"""Gradients of :func:`gat_attention` (see
    :func:`pyg_gat_ext.ops._reference.gat_attention_backward`)."""
    return _reference.gat_attention_backward(
        grad_out, grad_alpha, x, a_src, a_dst, edge_score, lse, ptr, src,
        eid, num_loops, skip_self_loops, negative_slope, dropout, seed)


@gat_attention_backward.register_fake
def _(grad_out, grad_alpha, x, a_src, a_dst, edge_score, lse, ptr, src, eid,
      ptr_t, dst_t, eid_t, num_loops, skip_self_loops, negative_slope,
      dropout, seed):
    grad_edge = (x.new_empty(0, x.size(1))
                 if edge_score is None else torch.empty_like(edge_score))
    return (torch.empty_like(x), torch.empty_like(a_src),
            torch.empty_like(a_dst), grad_edge)


def _attention_kernels(device: torch.device):
    # The module whose `gat_attention(_backward)` run on `device`.
    backend = kernel_backend(device)
    if backend == 'cpp':
        return _cpp_attention
    if backend == 'triton':
        return _triton()
    return None


def _attention_kernel(x, a_src, a_dst, edge_score, ptr, src, eid, ptr_t,
                      dst_t, eid_t, num_loops, skip_self_loops,
                      negative_slope, dropout, seed, need_alpha):
    kernels = _attention_kernels(x.device)
    if kernels is None:
        out, lse, alpha = _reference.gat_attention(
            x, a_src, a_dst, edge_score, ptr, src, eid, num_loops,
            skip_self_loops, negative_slope, dropout, seed, need_alpha)
        return out, lse.to(_opmath(x.dtype)), alpha
    return kernels.gat_attention(x, a_src, a_dst, edge_score, ptr, src, eid,
                                 ptr_t, dst_t, eid_t, num_loops,
                                 skip_self_loops, negative_slope, dropout,
                                 _reference.seed_words(seed), need_alpha)


def _attention_backward_kernel(grad_out, grad_alpha, x, a_src, a_dst,
                               edge_score, lse, ptr, src, eid, ptr_t, dst_t,
                               eid_t, num_loops, skip_self_loops,
                               negative_slope, dropout, seed):
    kernels = _attention_kernels(x.device)
    if kernels is None:
        return _reference.gat_attention_backward(
            grad_out, grad_alpha, x, a_src, a_dst, edge_score, lse, ptr, src,
            eid, num_loops, skip_self_loops, negative_slope, dropout, seed)
    return kernels.gat_attention_backward(
        grad_out, grad_alpha, x, a_src, a_dst, edge_score, lse, ptr, src,
        eid, ptr_t, dst_t, eid_t, num_loops, skip_self_loops, negative_slope,
        dropout, _reference.seed_words(seed))


for _device in ('cpu', 'cuda'):
    gat_attention.register_kernel(_device)(_attention_kernel)
    gat_attention_backward.register_kernel(_device)(
        _attention_backward_kernel)


class _CppAttention:
    # The C++ entry points, called like the Triton launchers.
    @staticmethod
    def gat_attention(x, a_src, a_dst, edge_score, ptr, src, eid, ptr_t,
                      dst_t, eid_t, num_loops, skip_self_loops,
                      negative_slope, dropout, seed, need_alpha):
        return torch.ops.pyg_gat_ext_cpu.gat_attention(
            x, a_src, a_dst, edge_score, ptr, src, eid, ptr_t, dst_t, eid_t,
            num_loops, skip_self_loops, negative_slope, dropout, seed[0],
            seed[1], need_alpha)

    @staticmethod
    def gat_attention_backward(grad_out, grad_alpha, x, a_src, a_dst,
                               edge_score, lse, ptr, src, eid, ptr_t, dst_t,
                               eid_t, num_loops, skip_self_loops,
                               negative_slope, dropout, seed):
        return torch.ops.pyg_gat_ext_cpu.gat_attention_backward(
            grad_out, grad_alpha, x, a_src, a_dst, edge_score, lse, ptr, src,
            eid, ptr_t, dst_t, eid_t, num_loops, skip_self_loops,
            negative_slope, dropout, seed[0], seed[1])


_cpp_attention = _CppAttention()

def _setup_attention(ctx, inputs: Tuple, output: Tuple) -> None:
    (x, a_src, a_dst, edge_score, ptr, src, eid, ptr_t, dst_t, eid_t,
     num_loops, skip_self_loops, negative_slope, dropout, seed, _) = inputs
    ctx.save_for_backward(x, a_src, a_dst, edge_score, output[1], ptr, src,
                          eid, ptr_t, dst_t, eid_t, seed)
    ctx.params = (num_loops, skip_self_loops, negative_slope, dropout)
    ctx.has_alpha = output[2].numel() > 0


def _attention_grad(ctx, grad_out, grad_lse, grad_alpha):
    # The log-sum-exp is a saved statistic, not differentiable; a gradient
    # of the returned attention weights flows into the scores.
    (x, a_src, a_dst, edge_score, lse, ptr, src, eid, ptr_t, dst_t, eid_t,
     seed) = ctx.saved_tensors
    if grad_out is None:
        grad_out = x.new_zeros(lse.size(0), x.size(1), x.size(2))
    if not ctx.has_alpha:
        grad_alpha = None
    grads = torch.ops.pyg_gat_ext.gat_attention_backward(
        grad_out.contiguous(), grad_alpha, x, a_src, a_dst, edge_score, lse,
        ptr, src, eid, ptr_t, dst_t, eid_t, *ctx.params, seed)
    grad_x, grad_src, grad_dst, grad_edge = grads
    return (grad_x, grad_src, grad_dst,
            None if edge_score is None else grad_edge) + (None, ) * 12


gat_attention.register_autograd(_attention_grad,
                                setup_context=_setup_attention)
