r"""Pure-PyTorch reference implementations: the specification of every op.

Each function here is what the C++ and Triton kernels are tested against,
and what runs when no kernel is available for a device. They follow
:func:`torch_geometric.utils.softmax` to the letter, including its numerical
conventions (the maximum is taken of the detached input, empty segments have
a maximum of zero, and ``1e-16`` is added to every denominator).
"""
from typing import Optional, Tuple

import torch
from torch import Tensor

#: Added to the softmax denominator, exactly as PyG does.
EPS = 1e-16


def _broadcast(index: Tensor, src: Tensor, dim: int) -> Tensor:
    # View a 1-D `index` along `dim` of `src` and expand it to `src`'s shape,
    # as `scatter_reduce` needs.
    shape = [1] * src.dim()
    shape[dim] = -1
    return index.view(shape).expand_as(src)


def segment_sum(src: Tensor, index: Tensor, num_segments: int,
                dim: int) -> Tensor:
    r"""Sums the entries of :obj:`src` along :obj:`dim` per segment."""
    size = list(src.shape)
    size[dim] = num_segments
    return src.new_zeros(size).scatter_add_(dim, _broadcast(index, src, dim),
                                            src)


def segment_softmax(src: Tensor, index: Tensor, num_segments: int,
                    dim: int) -> Tensor:
    r"""Softmax of :obj:`src` along :obj:`dim` within each segment.

    Entry :obj:`e` of :obj:`src` (along :obj:`dim`) belongs to segment
    :obj:`index[e]`, :obj:`0 <= index[e] < num_segments`; :obj:`index` need
    not be sorted.
    """
    size = list(src.shape)
    size[dim] = num_segments
    src_max = src.new_zeros(size).scatter_reduce_(
        dim, _broadcast(index, src, dim), src.detach(), 'amax',
        include_self=False)
    out = (src - src_max.index_select(dim, index)).exp()
    out_sum = segment_sum(out, index, num_segments, dim) + EPS
    return out / out_sum.index_select(dim, index)


def segment_softmax_backward(out: Tensor, grad_out: Tensor, index: Tensor,
                             num_segments: int, dim: int) -> Tensor:
    r"""Gradient of :func:`segment_softmax` with respect to its input.

    With :math:`y` the softmax output and :math:`g` the incoming gradient,
    :math:`\partial L / \partial x_e = y_e (g_e - \sum_{k \in s(e)} g_k y_k)`.
    """
    dot = segment_sum(grad_out * out, index, num_segments, dim)
    return out * (grad_out - dot.index_select(dim, index))


def segment_csr(index: Tensor, num_segments: int) -> Tuple[Tensor, Tensor]:
    r"""The CSR pointer of :obj:`index` and the stable permutation that
    sorts it, so that segment :obj:`s` holds entries
    :obj:`perm[ptr[s]:ptr[s + 1]]` in their original order."""
    perm = index.argsort(stable=True)
    ptr = index.new_zeros(num_segments + 1, dtype=torch.long)
    ptr[1:] = torch.bincount(index, minlength=num_segments).cumsum(0)
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
