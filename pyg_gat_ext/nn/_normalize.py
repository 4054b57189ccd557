r"""GAT normalisation (:obj:`GATConv(..., normalize=True)`), as in PyG's
development branch after 2.8: the attention matrix scaled by the in-degree,
self-loops of weight one added (the renormalisation trick), then the
symmetric normalisation :math:`\hat{D}^{-1/2} \hat{A}_{att} \hat{D}^{-1/2}`
of `"Bag of Tricks for Node Classification with Graph Neural Networks"
<https://arxiv.org/abs/2103.13355>`_, with :math:`\hat{D} = D + I`.

One function per adjacency form, TorchScript-compatible; the layer takes
the :class:`MessagePassing` path when normalising.
"""
import typing
from typing import Optional, Tuple

import torch
from torch import Tensor
from torch_geometric.typing import Adj, SparseTensor, torch_sparse
from torch_geometric.utils import (
    add_remaining_self_loops,
    add_self_loops,
    is_torch_sparse_tensor,
    scatter,
    to_torch_csr_tensor,
)

from pyg_gat_ext.nn._self_loops import sparse_entries

if typing.TYPE_CHECKING:
    from typing import overload
else:
    from torch.jit import _overload as overload


def gat_norm(edge_index: Adj, edge_weight: Tensor,
             num_nodes: Optional[int] = None, flow: str = 'source_to_target',
             dtype: Optional[torch.dtype] = None) -> Tuple[Adj, Tensor]:
    r"""PyG's :obj:`gat_norm`: the graph (without self-loops) and its
    attention :obj:`edge_weight` :obj:`[E, H]` after the softmax; returns
    the graph with one self-loop per node and the normalised attention, in
    the returned graph's edge order. :obj:`dtype` is the dtype of the
    implicit edge weights of a :class:`SparseTensor` without values."""
    if flow not in ('source_to_target', 'target_to_source'):
        raise ValueError(f"gat_norm: unknown flow '{flow}'")
    return normalize_attention(edge_index, edge_weight, num_nodes, flow,
                               dtype)


# One overload per type that `edge_index` has in a scripted `forward`.
@overload
def normalize_attention(
        edge_index: Tensor, alpha: Tensor, num_nodes: Optional[int],
        flow: str, dtype: Optional[torch.dtype]) -> Tuple[Tensor, Tensor]:
    pass


@overload
def normalize_attention(  # noqa: F811
        edge_index: SparseTensor, alpha: Tensor, num_nodes: Optional[int],
        flow: str,
        dtype: Optional[torch.dtype]) -> Tuple[SparseTensor, Tensor]:
    pass


@overload
def normalize_attention(  # noqa: F811
        edge_index: Adj, alpha: Tensor, num_nodes: Optional[int], flow: str,
        dtype: Optional[torch.dtype]) -> Tuple[Adj, Tensor]:
    pass


def normalize_attention(  # noqa: F811
        edge_index: Adj, alpha: Tensor, num_nodes: Optional[int], flow: str,
        dtype: Optional[torch.dtype]) -> Tuple[Adj, Tensor]:
    r""":func:`gat_norm` of a valid :obj:`flow`, for the layer's
    :class:`MessagePassing` path: the attention :obj:`alpha` after the
    softmax, normalised, and the graph with one self-loop per node."""
    if isinstance(edge_index, SparseTensor):
        return normalize_sparse_tensor(edge_index, alpha, dtype)
    return normalize_tensor(edge_index, alpha, num_nodes, flow)


def normalize_tensor(edge_index: Tensor, edge_weight: Tensor,
                     num_nodes: Optional[int],
                     flow: str) -> Tuple[Tensor, Tensor]:
    r""":func:`gat_norm` of an edge list or a COO or CSR :obj:`torch.sparse`
    adjacency."""
    if is_torch_sparse_tensor(edge_index):
        if edge_index.layout == torch.sparse_csc:
            raise NotImplementedError("Sparse CSC matrices are not yet "
                                      "supported in 'gat_norm'")
        return normalize_torch_sparse(edge_index, edge_weight)
    if num_nodes is None:
        num_nodes = int(edge_index.max()) + 1 if edge_index.numel() > 0 else 0
    return normalize_edge_list(edge_index, edge_weight, num_nodes, flow)


def _inv_sqrt_degree(deg: Tensor) -> Tensor:
    # (deg + 1)^(-1/2): the degree with the added self-loop.
    out = (deg + 1).pow(-0.5)
    return out.masked_fill(out == float('inf'), 0.0)


def _target_index(row: Tensor, col: Tensor, flow: str) -> Tensor:
    # The row of an edge list that holds the aggregating nodes.
    return col if flow == 'source_to_target' else row


def normalize_edge_list(edge_index: Tensor, alpha: Tensor, num_nodes: int,
                        flow: str) -> Tuple[Tensor, Tensor]:
    r"""An :obj:`[2, E]` edge list without self-loops and its attention
    :obj:`[E, H]`: the edges with one self-loop per node appended, and the
    normalised attention."""
    row, col = edge_index[0], edge_index[1]
    ones = alpha.new_ones(row.size(0))
    deg = scatter(ones, _target_index(row, col, flow), 0, num_nodes, 'sum')
    att = deg[col].view(-1, 1) * alpha
    edge_index, att = add_self_loops(edge_index, att, fill_value=1.0,
                                     num_nodes=num_nodes)
    assert att is not None
    scale = _inv_sqrt_degree(deg)
    att = (scale[edge_index[0]].view(-1, 1) * att *
           scale[edge_index[1]].view(-1, 1))
    return edge_index, att


def normalize_torch_sparse(adj_t: Tensor,
                           alpha: Tensor) -> Tuple[Tensor, Tensor]:
    r"""A transposed COO or CSR :obj:`torch.sparse` adjacency without
    self-loops and its attention (in the order of its entries): a CSR
    adjacency with the diagonal filled, and the normalised attention in its
    order."""
    num_nodes = adj_t.size(0)
    edge_index, value = sparse_entries(adj_t)
    dst = edge_index[0]  # Rows of the transposed adjacency: targets.
    deg = scatter(value.to(alpha.dtype), dst, 0, num_nodes, 'sum')
    att = deg[dst].view(-1, 1) * alpha
    edge_index, att_opt = add_remaining_self_loops(
        edge_index, att, fill_value=1.0, num_nodes=num_nodes)
    assert att_opt is not None
    scale = _inv_sqrt_degree(deg)
    att = (scale[edge_index[1]].view(-1, 1) * att_opt *
           scale[edge_index[0]].view(-1, 1))
    # CSR order: by row, then column.
    perm = torch.argsort(edge_index[0] * num_nodes + edge_index[1])
    edge_index, att = edge_index[:, perm], att[perm]
    return to_torch_csr_tensor(edge_index, size=(num_nodes, num_nodes)), att


def normalize_sparse_tensor(
        adj_t: SparseTensor, alpha: Tensor,
        dtype: Optional[torch.dtype] = None) -> Tuple[SparseTensor, Tensor]:
    r"""A transposed :class:`SparseTensor` without self-loops and its
    attention: the adjacency with its diagonal filled (no values), and the
    normalised attention in its order."""
    if not adj_t.has_value():
        adj_t = adj_t.fill_value(1.0, dtype=dtype)
    heads = alpha.size(1) if alpha.dim() > 1 else 1
    deg = torch_sparse.sum(adj_t, dim=1).view(-1).to(alpha.dtype)
    att = adj_t.set_value(alpha, layout='coo')
    att = torch_sparse.mul(att, deg.view(-1, 1).repeat(1, heads).view(
        -1, 1, heads))
    att = torch_sparse.fill_diag(att, 1.0)
    scale = _inv_sqrt_degree(deg).view(-1, 1).repeat(1, heads)
    att = torch_sparse.mul(att, scale.view(-1, 1, heads))
    att = torch_sparse.mul(att, scale.view(1, -1, heads))
    value: Optional[Tensor] = att.storage.value()
    assert value is not None
    return att.set_value(None), value
