from typing import Optional

import torch
from torch import Tensor


def segment_softmax(
    src: Tensor,
    index: Optional[Tensor] = None,
    ptr: Optional[Tensor] = None,
    num_nodes: Optional[int] = None,
    dim: int = 0,
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
        num_segments = ptr.numel() - 1
        ptr = ptr.long()
        if index is None:
            index = torch.repeat_interleave(
                torch.arange(num_segments, device=ptr.device),
                ptr.diff(), output_size=num_entries)
    elif index is not None:
        if num_nodes is None:
            num_nodes = int(index.max()) + 1 if index.numel() > 0 else 0
        num_segments = num_nodes
    else:
        raise ValueError("segment_softmax: requires 'index' or 'ptr' to be "
                         "specified")

    if index.dim() != 1 or index.is_floating_point():
        raise ValueError(f"segment_softmax: expected 'index' to be a 1-D "
                         f"integer tensor (got shape {list(index.shape)} and "
                         f"dtype {index.dtype})")
    if index.numel() != num_entries:
        raise ValueError(f"segment_softmax: 'index' has {index.numel()} "
                         f"entries but 'src' has {num_entries} along "
                         f"dimension {dim}")
    return torch.ops.pyg_gat_ext.segment_softmax(src, index.long(), ptr,
                                                 num_segments, dim)
