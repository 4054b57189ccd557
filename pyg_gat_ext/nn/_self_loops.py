r"""Self-loops of :class:`pyg_gat_ext.GATConv`, one function per adjacency
form: existing self-loops are removed and one loop per node is appended,
in PyG's edge order, with edge features from :obj:`fill_value`.

Every function takes the node counts that :func:`node_counts` derived once
for the call, so no form can add more loops than the adjacency has rows.
All functions are TorchScript-compatible: the layer's
:class:`MessagePassing` path calls them when scripted.
"""
import typing
from typing import Optional, Tuple, Union

import torch
from torch import Tensor
from torch_geometric.typing import (
    Adj,
    OptTensor,
    SparseTensor,
    torch_sparse,
)
from torch_geometric.utils import (
    add_self_loops,
    remove_self_loops,
    scatter,
    to_edge_index,
    to_torch_coo_tensor,
    to_torch_csr_tensor,
)

if typing.TYPE_CHECKING:
    from typing import overload
else:
    from torch.jit import _overload as overload

#: The type of :obj:`GATConv(fill_value=...)` (:obj:`None` gives ones).
FillValue = Union[float, Tensor, str]


def num_loops(num_src: int, num_dst: int) -> int:
    r"""The number of self-loops PyG's layer adds: one for every node that is
    both a source and a target node (nodes :obj:`0` to :obj:`n - 1`)."""
    return min(num_src, num_dst)


def sparse_entries(adj_t: Tensor) -> Tuple[Tensor, Tensor]:
    r"""The :obj:`[2, nnz]` indices and the values of a :obj:`torch.sparse`
    adjacency, as PyG's :obj:`to_edge_index` gives them (duplicate entries of
    an uncoalesced COO tensor stay separate edges), but without marking a
    COO tensor coalesced in place, which would bump the version of the
    user's tensor and break the backward of an earlier call on it."""
    if adj_t.layout == torch.sparse_coo:
        return adj_t._indices().long(), adj_t._values()
    return to_edge_index(adj_t)


def loop_attr(edge_attr: Tensor, dst: Tensor, count: int, dim_size: int,
              fill_value: FillValue) -> Tensor:
    r"""The features of the self-loops of nodes :obj:`0, ..., count - 1`
    according to :obj:`fill_value`; :obj:`dst` holds the node each row of
    :obj:`edge_attr` points to, every entry smaller than :obj:`dim_size`."""
    size = [count] + list(edge_attr.size()[1:])
    if isinstance(fill_value, str):
        # Reduce over all nodes first, so that a bipartite graph with more
        # target than source nodes needs no out-of-range index:
        dim_size = max(dim_size, count)
        return scatter(edge_attr, dst, 0, dim_size,
                       reduce=fill_value)[:count]
    elif isinstance(fill_value, Tensor):
        value = fill_value.to(edge_attr.device, edge_attr.dtype)
        if edge_attr.dim() != value.dim():
            value = value.unsqueeze(0)
        return value.expand(size).contiguous()
    else:
        if not torch.jit.is_scripting():
            if fill_value is None:  # As PyG's `add_self_loops`: ones.
                return edge_attr.new_ones(size)
        return edge_attr.new_full(size, fill_value)


def edge_list_self_loops(edge_index: Tensor, edge_attr: OptTensor,
                         count: int, dim_size: int,
                         fill_value: FillValue) -> Tuple[Tensor, OptTensor]:
    r"""An :obj:`[2, E]` edge list (plain or :class:`EdgeIndex`, which stays
    one) with its self-loops replaced by :obj:`count` new ones."""
    edge_index, edge_attr = remove_self_loops(edge_index, edge_attr)
    if edge_attr is not None:
        edge_attr = torch.cat([
            edge_attr,
            loop_attr(edge_attr, edge_index[1], count, dim_size, fill_value)
        ], dim=0)
    edge_index, _ = add_self_loops(edge_index, num_nodes=count)
    return edge_index, edge_attr


def replace_self_loops(row: Tensor, col: Tensor, value: Tensor, count: int,
                       dim_size: int,
                       fill_value: FillValue) -> Tuple[Tensor, Tensor, Tensor]:
    r"""The entries :obj:`(row, col, value)` of a transposed adjacency (rows
    are target nodes) without its self-loops, then one loop per node
    :obj:`0, ..., count - 1` with :obj:`fill_value` features."""
    mask = row != col
    row, col, value = row[mask], col[mask], value[mask]
    loops = torch.arange(count, device=row.device, dtype=row.dtype)
    return (torch.cat([row, loops]), torch.cat([col, loops]),
            torch.cat([value, loop_attr(value, row, count, dim_size,
                                        fill_value)], dim=0))


def torch_sparse_self_loops(adj_t: Tensor, edge_attr: OptTensor, count: int,
                            fill_value: FillValue) -> Tensor:
    r"""A transposed :obj:`torch.sparse` COO or CSR adjacency with its
    self-loops replaced: explicit edge features travel as its values, so
    they are reordered with the edges."""
    if edge_attr is not None:
        if edge_attr.dim() == 1:
            edge_attr = edge_attr.view(-1, 1)
        adj_t = set_sparse_value(adj_t, edge_attr)
    sparse_size = (adj_t.size(0), adj_t.size(1))
    layout = adj_t.layout
    edge_index, value = sparse_entries(adj_t)
    row, col, value = replace_self_loops(edge_index[0], edge_index[1], value,
                                         count, max(sparse_size), fill_value)
    edge_index = torch.stack([row, col], dim=0)
    if layout == torch.sparse_coo:
        return to_torch_coo_tensor(edge_index, value, sparse_size)
    return to_torch_csr_tensor(edge_index, value, sparse_size)


def sparse_tensor_self_loops(adj_t: SparseTensor, edge_attr: OptTensor,
                             count: int, fill_value: FillValue,
                             with_features: bool) -> SparseTensor:
    r"""A transposed :class:`SparseTensor` with its self-loops replaced.
    Without edge features this is PyG's :obj:`set_diag` (a loop for each
    node of the shorter side, which is :obj:`count`); with them (which PyG
    does not support) the features become its values and the loops get
    :obj:`fill_value`."""
    if not with_features:
        return torch_sparse.set_diag(adj_t)
    row, col, value = adj_t.coo()
    if edge_attr is not None:
        value = edge_attr
    if value is None:
        raise ValueError("GATConv: 'edge_dim' is set but neither 'edge_attr' "
                         "nor the 'SparseTensor' holds edge features")
    if value.dim() == 1:  # Features now: 1-D values would be edge weights.
        value = value.view(-1, 1)
    sparse_sizes = (adj_t.size(0), adj_t.size(1))
    row, col, value = replace_self_loops(row, col, value, count,
                                         max(sparse_sizes), fill_value)
    return SparseTensor(row=row, col=col, value=value,
                        sparse_sizes=sparse_sizes)


def set_sparse_value(adj: Tensor, value: Tensor) -> Tensor:
    r"""The sparse matrix :obj:`adj` with :obj:`value` as its values, in the
    same layout; unlike PyG's :obj:`set_sparse_value`, this also works when
    :obj:`adj` already holds multi-dimensional values."""
    size = [adj.size(0), adj.size(1)] + list(value.size()[1:])
    if adj.layout == torch.sparse_coo:
        return torch.sparse_coo_tensor(adj.indices(), value, size,
                                       device=value.device).coalesce()
    elif adj.layout == torch.sparse_csr:
        return torch.sparse_csr_tensor(adj.crow_indices(), adj.col_indices(),
                                       value, size, device=value.device)
    elif adj.layout == torch.sparse_csc:
        return torch.sparse_csc_tensor(adj.ccol_indices(), adj.row_indices(),
                                       value, size, device=value.device)
    raise ValueError(f"GATConv: unsupported sparse layout {adj.layout}")


def sparse_tensor_without_self_loops(adj_t: SparseTensor) -> SparseTensor:
    r"""A :class:`SparseTensor` without its diagonal entries."""
    row, col, _ = adj_t.coo()
    return torch_sparse.masked_select_nnz(adj_t, row != col, layout='coo')


def csc_as_csr(edge_index: Tensor,
               edge_attr: OptTensor) -> Tuple[Tensor, OptTensor]:
    r"""A :obj:`torch.sparse` CSC adjacency as CSR (PyG's message passing
    takes COO and CSR), with explicit edge features as its values so that
    they follow the edges; any other :obj:`edge_index` unchanged."""
    if edge_index.layout != torch.sparse_csc:
        return edge_index, edge_attr
    if edge_attr is not None:
        if edge_attr.dim() == 1:
            edge_attr = edge_attr.view(-1, 1)
        edge_index = set_sparse_value(edge_index, edge_attr)
    return (edge_index.to_sparse_csr(),
            torch.jit.annotate(Optional[Tensor], None))


def with_self_loops(edge_index: Tensor, edge_attr: OptTensor, num_src: int,
                    num_dst: int,
                    fill_value: FillValue) -> Tuple[Tensor, OptTensor]:
    r"""A tensor :obj:`edge_index` (edge list or :obj:`torch.sparse`
    adjacency) with its self-loops replaced as PyG's layer does; edge
    features of a sparse adjacency become its values (then the returned
    :obj:`edge_attr` is :obj:`None`)."""
    count = num_loops(num_src, num_dst)
    if edge_index.layout != torch.strided:
        edge_index = torch_sparse_self_loops(edge_index, edge_attr, count,
                                             fill_value)
        return edge_index, torch.jit.annotate(Optional[Tensor], None)
    return edge_list_self_loops(edge_index, edge_attr, count,
                                max(num_src, num_dst), fill_value)


# One overload per type that `edge_index` has in a scripted `forward`.
@overload
def message_passing_self_loops(
        edge_index: Tensor, edge_attr: OptTensor, num_src: int, num_dst: int,
        add_loops: bool, normalize: bool, fill_value: FillValue,
        with_features: bool) -> Tuple[Tensor, OptTensor]:
    pass


@overload
def message_passing_self_loops(  # noqa: F811
        edge_index: SparseTensor, edge_attr: OptTensor, num_src: int,
        num_dst: int, add_loops: bool, normalize: bool,
        fill_value: FillValue,
        with_features: bool) -> Tuple[SparseTensor, OptTensor]:
    pass


@overload
def message_passing_self_loops(  # noqa: F811
        edge_index: Adj, edge_attr: OptTensor, num_src: int, num_dst: int,
        add_loops: bool, normalize: bool, fill_value: FillValue,
        with_features: bool) -> Tuple[Adj, OptTensor]:
    pass


def message_passing_self_loops(  # noqa: F811
        edge_index: Adj, edge_attr: OptTensor, num_src: int, num_dst: int,
        add_loops: bool, normalize: bool, fill_value: FillValue,
        with_features: bool) -> Tuple[Adj, OptTensor]:
    r"""The graph and edge features that the layer's :class:`MessagePassing`
    path attends over: without self-loops if :obj:`normalize` (the
    normalisation adds its own), else with them replaced if
    :obj:`add_loops`. With :obj:`with_features`, the features of a
    :class:`SparseTensor` become its values (then :obj:`edge_attr` is
    :obj:`None`)."""
    if normalize:
        if isinstance(edge_index, Tensor):
            return remove_self_loops(edge_index, edge_attr)
        if isinstance(edge_index, SparseTensor):
            return sparse_tensor_without_self_loops(edge_index), edge_attr
    elif add_loops:
        if isinstance(edge_index, Tensor):
            return with_self_loops(edge_index, edge_attr, num_src, num_dst,
                                   fill_value)
        if isinstance(edge_index, SparseTensor):
            edge_index = sparse_tensor_self_loops(
                edge_index, edge_attr, num_loops(num_src, num_dst),
                fill_value, with_features)
            if with_features:  # Now its values.
                edge_attr = torch.jit.annotate(Optional[Tensor], None)
    return edge_index, edge_attr
