from typing import List, Optional, Tuple

import torch
from torch import Tensor
from torch_geometric import is_compiling


def segment_softmax(
    src: Tensor,
    index: Optional[Tensor] = None,
    ptr: Optional[Tensor] = None,
    num_nodes: Optional[int] = None,
    dim: int = 0,
    perm: Optional[Tensor] = None,
) -> Tensor:
    r"""Computes a sparsely evaluated softmax, as
    :func:`torch_geometric.utils.softmax` does, through the
    ``pyg_gat_ext::segment_softmax`` operator.

    Given a value tensor :attr:`src`, this function groups its entries along
    :attr:`dim` by :attr:`index` (in any order) or by the CSR pointer
    :attr:`ptr` (over sorted entries), and computes the softmax within each
    group:

    .. math::
        \mathrm{out}_e = \frac{\exp(\mathrm{src}_e - m_{s(e)})}
        {\sum_{k \in s(e)} \exp(\mathrm{src}_k - m_{s(e)}) + 10^{-16}},

    where :math:`m_s` is the maximum of group :math:`s`.

    Args:
        src (torch.Tensor): The source tensor, *e.g.* attention logits of
            shape :obj:`[num_edges, heads]`.
        index (torch.Tensor, optional): The group of every entry of
            :attr:`src` along :attr:`dim`. (default: :obj:`None`)
        ptr (torch.Tensor, optional): If given, computes the softmax based on
            sorted inputs in CSR representation; takes precedence over
            :attr:`index` for the grouping. (default: :obj:`None`)
        num_nodes (int, optional): The number of groups, *i.e.*
            :obj:`max_val + 1` of :attr:`index`. (default: :obj:`None`)
        dim (int, optional): The dimension in which to normalize.
            (default: :obj:`0`)
        perm (torch.Tensor, optional): With :attr:`ptr`, the permutation
            that sorts unsorted entries: group :obj:`s` holds entries
            :obj:`perm[ptr[s]:ptr[s + 1]]`. :func:`segment_csr` builds
            :obj:`(ptr, perm)` from an :attr:`index`, so that a caller can
            group a graph once and reuse it. (default: :obj:`None`)

    :rtype: :class:`torch.Tensor`

    Example:
        >>> src = torch.tensor([1., 1., 1., 1.])
        >>> segment_softmax(src, torch.tensor([0, 0, 1, 2]))
        tensor([0.5000, 0.5000, 1.0000, 1.0000])
    """
    dim = dim + src.dim() if dim < 0 else dim
    if dim < 0 or dim >= src.dim():
        raise ValueError(f"segment_softmax: 'dim' ({dim}) is out of range "
                         f"for 'src' with {src.dim()} dimensions")
    if not src.is_floating_point():
        raise TypeError(f"segment_softmax: expected a floating point 'src' "
                        f"(got {src.dtype})")
    num_entries = src.size(dim)

    if ptr is not None:
        if ptr.dim() != 1 or ptr.numel() == 0 or ptr.is_floating_point():
            raise ValueError(f"segment_softmax: expected 'ptr' to be a "
                             f"non-empty 1-D integer tensor (got shape "
                             f"{list(ptr.shape)} and dtype {ptr.dtype})")
        if num_nodes is not None and num_nodes != ptr.numel() - 1:
            raise ValueError(f"segment_softmax: 'ptr' has {ptr.numel()} "
                             f"entries, that is {ptr.numel() - 1} segments, "
                             f"but 'num_nodes' is {num_nodes}")
        N = ptr.numel() - 1
        ptr = ptr.long()
        if not is_compiling():
            _check_ptr(ptr, num_entries)
        if perm is not None:
            if perm.dim() != 1 or perm.numel() != num_entries:
                raise ValueError(f"segment_softmax: 'perm' must hold one "
                                 f"entry per row of 'src' ({num_entries}), "
                                 f"got shape {list(perm.shape)}")
            perm = perm.long()
    elif perm is not None:
        raise ValueError("segment_softmax: 'perm' needs its 'ptr'")
    elif index is not None:
        if num_nodes is None:
            N = int(index.max()) + 1 if index.numel() > 0 else 0
        else:
            N = num_nodes
    else:
        raise ValueError("segment_softmax: requires 'index' or 'ptr' to be "
                         "specified")

    if index is not None:  # With `ptr` it is optional, and not derived here.
        if index.dim() != 1 or index.is_floating_point():
            raise ValueError(f"segment_softmax: expected 'index' to be a 1-D "
                             f"integer tensor (got shape "
                             f"{list(index.shape)} and dtype {index.dtype})")
        if index.numel() != num_entries:
            raise ValueError(f"segment_softmax: 'index' has {index.numel()} "
                             f"entries but 'src' has {num_entries} along "
                             f"dimension {dim}")
        index = index.long()
        if ptr is None and src.is_cuda and not torch.jit.is_scripting():
            # The CUDA (Triton) kernels walk segments: group `index` once
            # here, so that the backward reuses the grouping instead of
            # sorting again (the C++ kernels stream `index`).
            ptr, perm = torch.ops.pyg_gat_ext.segment_csr(index, N)
    return torch.ops.pyg_gat_ext.segment_softmax(src, index, ptr, perm, N,
                                                 dim)


def _check_ptr(ptr: Tensor, num_entries: int) -> None:
    # A CSR pointer must cover the entries exactly and never decrease; one
    # host synchronisation for the three facts.
    bounds: List[int] = torch.stack([
        ptr[0], ptr[-1], (ptr.diff() < 0).sum() if ptr.numel() > 1 else
        ptr.new_zeros(())
    ]).tolist()
    if bounds[0] != 0 or bounds[1] != num_entries or bounds[2] != 0:
        raise ValueError(f"segment_softmax: 'ptr' must start at 0, end at "
                         f"the number of entries ({num_entries}) and never "
                         f"decrease (got ptr[0]={bounds[0]}, "
                         f"ptr[-1]={bounds[1]}, {bounds[2]} decreasing "
                         f"steps)")


def segment_csr(index: Tensor,
                num_nodes: Optional[int] = None) -> Tuple[Tensor, Tensor]:
    r"""Groups the entries of :obj:`index` by value: returns the CSR pointer
    :obj:`ptr` and the stable permutation :obj:`perm` that sorts
    :obj:`index`, so that group :obj:`s` holds entries
    :obj:`perm[ptr[s]:ptr[s + 1]]`. Pass both to :func:`segment_softmax` to
    reuse one grouping over many calls (a stable counting sort in C++ on
    CPU).

    Args:
        index (torch.Tensor): The group of every entry.
        num_nodes (int, optional): The number of groups, *i.e.*
            :obj:`max_val + 1` of :attr:`index`. (default: :obj:`None`)

    :rtype: (:class:`torch.Tensor`, :class:`torch.Tensor`)
    """
    if index.dim() != 1 or index.is_floating_point():
        raise ValueError(f"segment_csr: expected 'index' to be a 1-D integer "
                         f"tensor (got shape {list(index.shape)} and dtype "
                         f"{index.dtype})")
    if num_nodes is None:
        num_nodes = int(index.max()) + 1 if index.numel() > 0 else 0
    return torch.ops.pyg_gat_ext.segment_csr(index.long(), num_nodes)
