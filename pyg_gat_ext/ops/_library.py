r"""The ``pyg_gat_ext`` operator library: schemas, fake kernels, autograd.

Every op is defined once here, with its pure-PyTorch reference as the default
kernel. Device kernels (C++ on CPU, Triton on CUDA) register under their own
dispatch keys and take precedence over the reference where they exist.
"""
from typing import Optional, Tuple

import torch
from torch import Tensor

from pyg_gat_ext.ops import _reference


@torch.library.custom_op('pyg_gat_ext::segment_softmax', mutates_args=())
def segment_softmax(src: Tensor, index: Tensor, ptr: Optional[Tensor],
                    num_segments: int, dim: int) -> Tensor:
    r"""Segment softmax of :obj:`src` along :obj:`dim`.

    :obj:`index` holds the segment of every entry; :obj:`ptr`, when given,
    is the CSR form of a sorted :obj:`index` that kernels may use instead.
    """
    return _reference.segment_softmax(src, index, num_segments, dim)


@segment_softmax.register_fake
def _(src, index, ptr, num_segments, dim):
    return torch.empty_like(src)


@torch.library.custom_op('pyg_gat_ext::segment_softmax_backward',
                         mutates_args=())
def segment_softmax_backward(out: Tensor, grad_out: Tensor, index: Tensor,
                             ptr: Optional[Tensor], num_segments: int,
                             dim: int) -> Tensor:
    r"""Gradient of :obj:`segment_softmax` given its output :obj:`out`."""
    return _reference.segment_softmax_backward(out, grad_out, index,
                                               num_segments, dim)


@segment_softmax_backward.register_fake
def _(out, grad_out, index, ptr, num_segments, dim):
    return torch.empty_like(out)


def _setup_softmax(ctx, inputs: Tuple, output: Tensor) -> None:
    _, index, ptr, num_segments, dim = inputs
    ctx.save_for_backward(output, index, ptr)
    ctx.num_segments, ctx.dim = num_segments, dim


def _softmax_grad(ctx, grad: Tensor):
    out, index, ptr = ctx.saved_tensors
    grad_src = torch.ops.pyg_gat_ext.segment_softmax_backward(
        out, grad, index, ptr, ctx.num_segments, ctx.dim)
    return grad_src, None, None, None, None


segment_softmax.register_autograd(_softmax_grad, setup_context=_setup_softmax)


def _setup_softmax_backward(ctx, inputs: Tuple, output: Tensor) -> None:
    out, grad_out, index, ptr, num_segments, dim = inputs
    ctx.save_for_backward(out, grad_out, index)
    ctx.num_segments, ctx.dim = num_segments, dim


def _softmax_backward_grad(ctx, v: Tensor):
    # grad_src_k = y_k (g_k - s_k) with s = segment_sum(g * y) gathered, so
    # for a cotangent v:  d/dg_j = y_j (v_j - t_j),
    #                     d/dy_j = v_j (g_j - s_j) - g_j t_j,
    # with t = segment_sum(v * y) gathered. Double backward for free.
    out, grad_out, index = ctx.saved_tensors
    n, dim = ctx.num_segments, ctx.dim
    s = _reference.segment_sum(grad_out * out, index, n, dim)
    t = _reference.segment_sum(v * out, index, n, dim)
    s, t = s.index_select(dim, index), t.index_select(dim, index)
    grad_y = v * (grad_out - s) - grad_out * t
    grad_g = out * (v - t)
    return grad_y, grad_g, None, None, None, None


segment_softmax_backward.register_autograd(
    _softmax_backward_grad, setup_context=_setup_softmax_backward)
