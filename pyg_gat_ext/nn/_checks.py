r"""Validation of the user's input to :class:`pyg_gat_ext.GATConv`, before
any computation, with errors that name the argument and the shapes
involved; and the one place where the layer's node counts are derived.

The ops check their own contract again (:mod:`pyg_gat_ext.ops`); what is
checked here is what a PyG user can get wrong. TorchScript-compatible.
"""
from typing import List, Tuple, Union

import torch
from torch import Tensor
from torch_geometric import EdgeIndex, is_compiling
from torch_geometric.typing import Adj, OptPairTensor, OptTensor, Size
from torch_geometric.utils import is_torch_sparse_tensor


def is_edge_list(edge_index: Adj) -> bool:
    r"""Whether :obj:`edge_index` is an :obj:`[2, E]` edge list (a plain
    tensor or an :class:`EdgeIndex`), not a sparse adjacency."""
    if isinstance(edge_index, Tensor):
        return edge_index.layout == torch.strided
    return False


def with_counts(edge_index: Tensor, num_src: int, num_dst: int) -> Tensor:
    r"""An :class:`EdgeIndex` whose sparse size is :obj:`(num_src,
    num_dst)`: PyG's :class:`MessagePassing` takes the node counts of an
    :class:`EdgeIndex` from its sparse size and ignores :obj:`size`, so one
    with an unknown size gets the counts the layer derived. Any other
    :obj:`edge_index` is returned as it is."""
    if not torch.jit.is_scripting():
        if (isinstance(edge_index, EdgeIndex)
                and edge_index.sparse_size() != (num_src, num_dst)):
            return EdgeIndex(edge_index.as_tensor(),
                             sparse_size=(num_src, num_dst),
                             sort_order=edge_index.sort_order,
                             is_undirected=edge_index.is_undirected)
    return edge_index


def node_counts(x_src: Tensor, x_dst: OptTensor, edge_index: Adj,
                size: Size) -> Tuple[int, int]:
    r"""The numbers of source and target nodes (the sizes of :obj:`x[0]`'s
    and :obj:`x[1]`'s sides, as :class:`MessagePassing` counts them), from
    the first of: the features :obj:`x_dst`, :obj:`size[1]`, the row count
    of a sparse adjacency, the column count of an :class:`EdgeIndex`; else
    as many as source nodes. Every count the layer uses (self-loops, the
    grouped graph, the output rows) comes from here."""
    num_src = x_src.size(0)
    if x_dst is not None:
        return num_src, x_dst.size(0)
    if size is not None:
        num_dst = size[1]
        if num_dst is not None:
            return num_src, num_dst
    if isinstance(edge_index, Tensor):
        if is_torch_sparse_tensor(edge_index):
            return num_src, edge_index.size(0)
        if not torch.jit.is_scripting() and isinstance(
                edge_index, EdgeIndex):
            num_cols = edge_index.sparse_size(1)
            if num_cols is not None:
                return num_src, num_cols
        return num_src, num_src
    return num_src, edge_index.size(0)


def check_inputs(x: Union[Tensor, OptPairTensor], edge_index: Adj,
                 edge_attr: OptTensor, size: Size,
                 in_channels: Union[int, Tuple[int, int]],
                 edge_dim: Union[int, None], flow: str) -> Tuple[int, int]:
    r"""Checks the arguments of :meth:`GATConv.forward` and returns
    :obj:`node_counts`."""
    if isinstance(x, Tensor):
        _check_features('x', x, _channels(in_channels, 0), in_channels)
        _check_features('x', x, _channels(in_channels, 1), in_channels)
        x_src, x_dst = x, torch.jit.annotate(OptTensor, x)
    else:
        x_src, x_dst = x
        _check_features('x[0]', x_src, _channels(in_channels, 0),
                        in_channels)
        if x_dst is not None:
            _check_features('x[1]', x_dst, _channels(in_channels, 1),
                            in_channels)
            _check_device('x[1]', x_dst.device, x_src.device)
    device = x_src.device
    num_src, num_dst = node_counts(x_src, x_dst, edge_index, size)

    if size is not None:
        if len(size) != 2:
            raise ValueError(f"GATConv: expected 'size' to be a pair "
                             f"(num_src_nodes, num_dst_nodes) (got {size})")
        if size[0] is not None and size[0] != num_src:
            raise ValueError(f"GATConv: 'size' is {size} but there are "
                             f"{num_src} source nodes in 'x'")
        if size[1] is not None and size[1] != num_dst:
            raise ValueError(f"GATConv: 'size' is {size} but there are "
                             f"{num_dst} target nodes in 'x'")

    if isinstance(edge_index, Tensor):
        _check_device('edge_index', edge_index.device, device)
        if is_torch_sparse_tensor(edge_index):
            if edge_index.sparse_dim() != 2:
                raise ValueError(f"GATConv: expected a sparse 'edge_index' "
                                 f"with two sparse dimensions (got shape "
                                 f"{list(edge_index.shape)})")
            _check_adjacency('sparse adjacency', edge_index.size(0),
                             edge_index.size(1), num_src, num_dst)
            num_edges = edge_index._nnz()
        else:
            # Row `j` of `edge_index` indexes the source nodes, row `i` the
            # target nodes, as in `MessagePassing`:
            bounds, names = [num_src, num_dst], ['source', 'target']
            if flow == 'target_to_source':
                bounds, names = [num_dst, num_src], ['target', 'source']
            _check_edge_index(edge_index, bounds, names)
            num_edges = edge_index.size(1)
    else:
        _check_adjacency("'SparseTensor'", edge_index.size(0),
                         edge_index.size(1), num_src, num_dst)
        num_edges = edge_index.nnz()

    if edge_attr is not None and edge_dim is not None:
        _check_edge_attr(edge_attr, edge_dim, num_edges, device)
    return num_src, num_dst


def _channels(in_channels: Union[int, Tuple[int, int]], i: int) -> int:
    # The expected width of source (0) or target (1) features, -1 if lazy.
    if isinstance(in_channels, int):
        return in_channels
    return in_channels[i]


def _check_features(name: str, x: Tensor, channels: int,
                    in_channels: Union[int, Tuple[int, int]]) -> None:
    if x.dim() != 2:
        raise ValueError(f"GATConv: expected '{name}' to be a 2-D tensor "
                         f"[num_nodes, num_features] (got shape "
                         f"{list(x.shape)})")
    if not x.is_floating_point():
        raise TypeError(f"GATConv: expected floating point '{name}' (got "
                        f"{x.dtype})")
    if channels != -1 and x.size(1) != channels:
        raise ValueError(f"GATConv: '{name}' has {x.size(1)} features (shape "
                         f"{list(x.shape)}) but the layer expects {channels} "
                         f"(in_channels={in_channels})")


def _check_device(name: str, device: torch.device,
                  expected: torch.device) -> None:
    if device != expected:
        raise ValueError(f"GATConv: '{name}' is on {device} but the node "
                         f"features are on {expected}; move both to one "
                         f"device")


def _check_adjacency(what: str, rows: int, cols: int, num_src: int,
                     num_dst: int) -> None:
    # A transposed adjacency: one row per target, one column per source.
    if rows != num_dst or cols != num_src:
        raise ValueError(f"GATConv: the transposed {what} 'edge_index' has "
                         f"shape [{rows}, {cols}] but 'x' gives "
                         f"{num_dst} target and {num_src} source nodes "
                         f"(expected [{num_dst}, {num_src}])")


def _check_edge_index(edge_index: Tensor, bounds: List[int],
                      names: List[str]) -> None:
    if (edge_index.is_floating_point() or edge_index.is_complex()
            or edge_index.dtype == torch.bool):
        raise ValueError(f"GATConv: expected 'edge_index' to be an integer "
                         f"tensor (got {edge_index.dtype})")
    if edge_index.dim() != 2 or edge_index.size(0) != 2:
        raise ValueError(f"GATConv: expected 'edge_index' to have shape "
                         f"[2, num_edges] (got {list(edge_index.shape)})")
    plain = edge_index
    if not torch.jit.is_scripting() and isinstance(edge_index, EdgeIndex):
        plain = edge_index.as_subclass(Tensor)
        for i, num in enumerate(edge_index.sparse_size()):
            if num is not None and num != bounds[i]:
                raise ValueError(f"GATConv: 'edge_index' has sparse size "
                                 f"{edge_index.sparse_size()} but 'x' "
                                 f"has {bounds[i]} {names[i]} nodes")
    if edge_index.numel() == 0 or is_compiling():
        return
    # One reduction and one host sync for the range check:
    low, high = torch.aminmax(plain, dim=1)
    lows: List[int] = low.tolist()
    highs: List[int] = high.tolist()
    for i in range(2):
        if lows[i] < 0 or highs[i] >= bounds[i]:
            bad = lows[i] if lows[i] < 0 else highs[i]
            raise IndexError(f"GATConv: 'edge_index[{i}]' holds index {bad}, "
                             f"out of range for {bounds[i]} {names[i]} nodes "
                             f"(valid: 0 to {bounds[i] - 1})")


def _check_edge_attr(edge_attr: Tensor, edge_dim: int, num_edges: int,
                     device: torch.device) -> None:
    if edge_attr.dim() not in (1, 2):
        raise ValueError(f"GATConv: expected 'edge_attr' to be 1-D or 2-D "
                         f"(got shape {list(edge_attr.shape)})")
    if not edge_attr.is_floating_point():
        raise TypeError(f"GATConv: expected floating point 'edge_attr' (got "
                        f"{edge_attr.dtype})")
    _check_device('edge_attr', edge_attr.device, device)
    if edge_attr.size(0) != num_edges:
        raise ValueError(f"GATConv: 'edge_attr' has {edge_attr.size(0)} rows "
                         f"(shape {list(edge_attr.shape)}) but 'edge_index' "
                         f"has {num_edges} edges")
    width = 1 if edge_attr.dim() == 1 else edge_attr.size(1)
    if width != edge_dim:
        raise ValueError(f"GATConv: 'edge_attr' has {width} features (shape "
                         f"{list(edge_attr.shape)}) but the layer has "
                         f"edge_dim={edge_dim}")
