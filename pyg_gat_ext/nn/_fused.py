r"""The fused path of :class:`pyg_gat_ext.GATConv`: whether a call can take
the :func:`pyg_gat_ext.ops.gat_attention` kernel, and the attention plus
aggregation through it, returning what PyG's :meth:`propagate` and
:meth:`edge_updater` would.

Edge lists take :func:`edge_list_attention`, which TorchScript compiles as
well; sparse adjacencies take :func:`propagate_sparse`, in Python only.
"""
from typing import List, NamedTuple, Optional, Tuple

import torch
from torch import Tensor
from torch_geometric.typing import Adj, OptTensor, SparseTensor
from torch_geometric.utils import is_torch_sparse_tensor

from pyg_gat_ext.nn import _self_loops
from pyg_gat_ext.nn._self_loops import FillValue
from pyg_gat_ext.ops import (
    GATGraph,
    cached_gat_graph,
    gat_attention,
    gat_graph,
    gatv2_attention,
)
from pyg_gat_ext.ops.attention import (
    dropout_seed,
    group_edges,
    launch,
    launch_v2,
)

#: The hooks of `MessagePassing` that the fused path would skip.
MESSAGE_PASSING_METHODS = ('message', 'edge_update', 'aggregate', 'update',
                           'message_and_aggregate', 'propagate',
                           'edge_updater')
HOOKS = ('_propagate_forward_pre_hooks', '_propagate_forward_hooks',
         '_message_forward_pre_hooks', '_message_forward_hooks',
         '_aggregate_forward_pre_hooks', '_aggregate_forward_hooks',
         '_message_and_aggregate_forward_pre_hooks',
         '_message_and_aggregate_forward_hooks',
         '_edge_update_forward_pre_hooks', '_edge_update_forward_hooks')


def use_fused(conv, edge_index: Adj) -> bool:
    r"""Whether :obj:`conv`'s forward takes the fused kernel (see
    :attr:`GATConv.fused`): raises if :obj:`fused=True` and it cannot."""
    if conv.fused is False:
        return False
    reason = unfusable(conv, edge_index)
    if reason is None:
        return True
    if conv.fused:
        raise RuntimeError(f'{type(conv).__name__}: fused=True but the fused '
                           f'kernel cannot serve this call: {reason}')
    return False


def fused_in_script(conv) -> bool:
    r"""Whether :obj:`conv`, scripted, takes the fused kernel for edge lists
    (sparse adjacencies take the :class:`MessagePassing` path there):
    decided once, at script time, as :func:`use_fused` would."""
    return conv.fused is not False and unfusable(
        conv, torch.empty(2, 0, dtype=torch.long)) is None


def unfusable(conv, edge_index: Adj) -> Optional[str]:
    r"""Why this call needs the :class:`MessagePassing` path, or
    :obj:`None`."""
    from pyg_gat_ext.nn.gat_conv import GATConv
    from pyg_gat_ext.nn.gatv2_conv import GATv2Conv
    base = GATv2Conv if isinstance(conv, GATv2Conv) else GATConv
    if conv.explain:
        return 'explain mode needs the per-edge messages'
    if getattr(conv, 'normalize', False):
        return 'normalize=True rescales the attention after the softmax'
    cls = type(conv)
    for name in MESSAGE_PASSING_METHODS:
        if getattr(cls, name) is not getattr(base, name):
            return f'{cls.__name__} overrides {name}()'
    for name in HOOKS:
        if len(getattr(conv, name)) > 0:
            return f'hooks are registered ({name})'
    if conv.aggr != 'add' or conv.decomposed_layers != 1:
        return (f"aggr={conv.aggr!r} and decomposed_layers="
                f"{conv.decomposed_layers} (the kernel sums in one pass)")
    if conv.flow != 'source_to_target' and (
            not isinstance(edge_index, Tensor)
            or is_torch_sparse_tensor(edge_index)):
        # PyG's message passing rejects this: so does the fallback.
        return "flow='target_to_source' with a sparse adjacency"
    return None


class EdgeListSetup(NamedTuple):
    r"""What both layers' fused paths over an :obj:`[2, E]` edge list take
    from it (see :func:`edge_list_setup`)."""
    graph: List[Tensor]
    num_loops: int
    keep: OptTensor
    edge_attr: OptTensor


def edge_list_setup(edge_index: Tensor, edge_attr: OptTensor, num_src: int,
                    num_dst: int, flow: str, add_self_loops: bool,
                    fill_value: FillValue,
                    return_attention_weights: bool) -> EdgeListSetup:
    r"""The grouped graph of :obj:`edge_index` (cached in eager mode, built
    when scripted), the number of implicit self-loops, which edges are not
    self-loops (where the loops are replaced and that matters: for the
    edge features or the returned weights) and the edge features as
    :obj:`[E + num_loops, D]` rows by edge id, the loops' from
    :obj:`fill_value` last (:obj:`None` without features).
    TorchScript-compatible."""
    if torch.jit.is_scripting():
        j, i = (0, 1) if flow == 'source_to_target' else (1, 0)
        graph = list(group_edges(edge_index[j], edge_index[i], num_src,
                                 num_dst))
    else:
        graph = list(cached_gat_graph(edge_index, num_src, num_dst, flow))
    num_loops = 0
    if add_self_loops:
        num_loops = _self_loops.num_loops(num_src, num_dst)
    keep: Optional[Tensor] = None  # The edges that are not self-loops.
    if add_self_loops and (return_attention_weights
                           or edge_attr is not None):
        keep = edge_index[0] != edge_index[1]
    if edge_attr is not None:
        if edge_attr.dim() == 1:
            edge_attr = edge_attr.view(-1, 1)
        if keep is not None and num_loops > 0:
            edge_attr = torch.cat([
                edge_attr,
                _self_loops.loop_attr(edge_attr[keep], edge_index[1][keep],
                                      num_loops, max(num_src, num_dst),
                                      fill_value)
            ])
    return EdgeListSetup(graph, num_loops, keep, edge_attr)


def pyg_order(edge_index: Tensor, alpha: Tensor, setup: EdgeListSetup,
              num_src: int, num_dst: int,
              fill_value: FillValue) -> Tuple[Tensor, Tensor]:
    r"""The edges and the kernel's attention weights (by edge id) in PyG's
    order: the edges that are not self-loops, then one loop per node.
    TorchScript-compatible."""
    keep = setup.keep
    if keep is None:
        return edge_index, alpha
    num_edges = edge_index.size(1)
    alpha = torch.cat([alpha[:num_edges][keep], alpha[num_edges:]])
    edge_index, _ = _self_loops.edge_list_self_loops(
        edge_index, None, setup.num_loops, max(num_src, num_dst), fill_value)
    return edge_index, alpha


def edge_list_attention(
        x_src: Tensor, alpha_src: Tensor, alpha_dst: OptTensor,
        edge_index: Tensor, edge_attr: OptTensor, lin_edge_weight: OptTensor,
        att_edge: OptTensor, num_src: int, num_dst: int, flow: str,
        add_self_loops: bool, fill_value: FillValue, negative_slope: float,
        dropout: float,
        return_attention_weights: bool) -> Tuple[Tensor, Tensor, Tensor]:
    r"""The fused attention over an :obj:`[2, E]` edge list: self-loops are
    implicit in the kernel, which skips the existing ones, and edge scores
    are :obj:`edge_attr @ weight.t()` (see :func:`edge_score_weight`),
    never :obj:`[E, H, C]`. Returns :obj:`out`, the edges and attention
    weights in PyG's order (an empty tensor unless
    :obj:`return_attention_weights`). TorchScript-compatible: the scripted
    layer takes this path too."""
    score_weight = edge_score_weight(lin_edge_weight, att_edge, edge_attr)
    setup = edge_list_setup(edge_index,
                            None if score_weight is None else edge_attr,
                            num_src, num_dst, flow, add_self_loops,
                            fill_value, return_attention_weights)
    edge_score: Optional[Tensor] = None
    edge_attr = setup.edge_attr
    if (edge_attr is not None and score_weight is not None
            and edge_attr.size(0) > 0):  # Unused without rows, as in PyG.
        edge_score = edge_attr @ score_weight.t()
    out, lse, alpha = launch(x_src, alpha_src, alpha_dst, edge_score,
                             setup.graph, setup.num_loops, add_self_loops,
                             negative_slope, dropout, dropout_seed(dropout),
                             return_attention_weights)
    if not return_attention_weights:
        return out, edge_index, alpha_src.new_empty(0, alpha_src.size(1))
    edge_index, alpha = pyg_order(edge_index, alpha, setup, num_src, num_dst,
                                  fill_value)
    return out, edge_index, alpha


def edge_list_attention_v2(
        x_src: Tensor, x_dst: Tensor, att: Tensor, edge_index: Tensor,
        edge_attr: OptTensor, lin_edge_weight: OptTensor, num_src: int,
        num_dst: int, flow: str, add_self_loops: bool,
        fill_value: FillValue, negative_slope: float, dropout: float,
        return_attention_weights: bool) -> Tuple[Tensor, Tensor, Tensor]:
    r""":func:`edge_list_attention` for :class:`GATv2Conv`: the kernel
    forms each edge's :obj:`x_dst[i] + x_src[j] (+ lin_edge(e_ji))` on the
    fly; only the projected edge features, where the layer has them, are an
    :obj:`[E, H, C]` tensor (as PyG's). TorchScript-compatible."""
    heads, channels = x_src.size(1), x_src.size(2)
    setup = edge_list_setup(edge_index,
                            None if lin_edge_weight is None else edge_attr,
                            num_src, num_dst, flow, add_self_loops,
                            fill_value, return_attention_weights)
    edge_x: Optional[Tensor] = None
    edge_attr = setup.edge_attr
    if edge_attr is not None and lin_edge_weight is not None:
        edge_x = (edge_attr @ lin_edge_weight.t()).view(-1, heads, channels)
    out, lse, alpha = launch_v2(x_src, x_dst, att, edge_x, setup.graph,
                                setup.num_loops, add_self_loops,
                                negative_slope, dropout,
                                dropout_seed(dropout),
                                return_attention_weights)
    if not return_attention_weights:
        return out, edge_index, x_src.new_empty(0, heads)
    edge_index, alpha = pyg_order(edge_index, alpha, setup, num_src, num_dst,
                                  fill_value)
    return out, edge_index, alpha


def edge_score_weight(lin_edge_weight: OptTensor, att_edge: OptTensor,
                      edge_attr: OptTensor) -> OptTensor:
    r""":obj:`lin_edge` and :obj:`att_edge` in one :obj:`[H, edge_dim]`
    product, so that the edge scores are :obj:`edge_attr @ weight.t()`;
    :obj:`None` where the layer has no edge features or the call none."""
    if lin_edge_weight is None or att_edge is None or edge_attr is None:
        return None
    heads, channels = att_edge.size(1), att_edge.size(2)
    weight = lin_edge_weight.view(heads, channels, -1)
    return (weight * att_edge.view(heads, channels, 1)).sum(dim=1)


def materialize_lin_edge(conv, edge_attr: OptTensor) -> None:
    r"""Sizes a lazy :obj:`conv.lin_edge` from :obj:`edge_attr` as its first
    call would: the fused path reads its weight without calling it. Python
    only."""
    lin_edge = conv.lin_edge
    if lin_edge is None or edge_attr is None or torch.compiler.is_compiling():
        return  # (Dynamo materialises lazy modules before it traces.)
    if torch.nn.parameter.is_lazy(lin_edge.weight):
        lin_edge(edge_attr.view(edge_attr.size(0), -1))


def sparse_setup(conv, edge_index: Adj, edge_attr: OptTensor, num_src: int,
                 num_dst: int) -> Tuple[Adj, GATGraph, OptTensor]:
    r"""What both layers' fused paths take from a sparse adjacency
    (:obj:`torch.sparse` or :class:`SparseTensor`): the adjacency with its
    self-loops replaced as PyG does (node-level copies), the grouped graph
    of its entries and their edge features as 2-D rows (:obj:`None` for
    none, for 1-D edge weights as PyG's :obj:`collect` has it, and where
    the layer has no :obj:`lin_edge`). Python only."""
    if conv.add_self_loops and isinstance(edge_index, SparseTensor):
        edge_index = _self_loops.sparse_tensor_self_loops(
            edge_index, edge_attr, _self_loops.num_loops(num_src, num_dst),
            conv.fill_value, conv.edge_dim is not None)
        if conv.edge_dim is not None:
            edge_attr = None  # Now the values of `edge_index`.
    elif conv.add_self_loops:
        edge_index, edge_attr = _self_loops.with_self_loops(
            edge_index, edge_attr, num_src, num_dst, conv.fill_value)
    if isinstance(edge_index, SparseTensor):
        dst, src, value = edge_index.coo()
    else:
        indices, value = _self_loops.sparse_entries(edge_index)
        dst, src = indices[0], indices[1]
    if value is not None and value.dim() == 1:
        value = None  # Edge weights, not features (as PyG's `collect`).
    if edge_attr is None:
        edge_attr = value
    materialize_lin_edge(conv, edge_attr)
    if conv.lin_edge is None or edge_attr is None or edge_attr.size(0) == 0:
        edge_attr = None  # Unused without edges.
    elif edge_attr.dim() == 1:
        edge_attr = edge_attr.view(-1, 1)
    return edge_index, gat_graph(src, dst, num_src, num_dst), edge_attr


def propagate_sparse(
        conv, x_src: Tensor, alpha_src: Tensor, alpha_dst: OptTensor,
        edge_index: Adj, edge_attr: OptTensor, num_src: int, num_dst: int,
        return_attention_weights: bool) -> Tuple[Tensor, Adj, Tensor]:
    r"""The fused attention over a sparse adjacency (see
    :func:`sparse_setup`), whose entries are the edges. Returns
    :obj:`out`, the adjacency and the attention weights in its order (an
    empty tensor unless :obj:`return_attention_weights`). Python only."""
    edge_index, graph, edge_attr = sparse_setup(conv, edge_index, edge_attr,
                                                num_src, num_dst)
    edge_score = None
    if edge_attr is not None and conv.att_edge is not None:
        edge_score = edge_attr @ edge_score_weight(
            conv.lin_edge.weight, conv.att_edge, edge_attr).t()
    result = gat_attention(x_src, alpha_src, alpha_dst, graph, edge_score,
                           negative_slope=conv.negative_slope,
                           dropout=conv.dropout if conv.training else 0.0,
                           return_attention_weights=return_attention_weights)
    alpha = (result.alpha if return_attention_weights else
             alpha_src.new_empty(0, conv.heads))
    return result.out, edge_index, alpha


def propagate_sparse_v2(
        conv, x_src: Tensor, x_dst: Tensor, edge_index: Adj,
        edge_attr: OptTensor, num_src: int, num_dst: int,
        return_attention_weights: bool) -> Tuple[Tensor, Adj, Tensor]:
    r""":func:`propagate_sparse` for :class:`GATv2Conv`. Python only."""
    edge_index, graph, edge_attr = sparse_setup(conv, edge_index, edge_attr,
                                                num_src, num_dst)
    edge_x = None
    if edge_attr is not None:
        edge_x = conv.lin_edge(edge_attr).view(-1, conv.heads,
                                               conv.out_channels)
    result = gatv2_attention(
        x_src, x_dst, conv.att, graph, edge_x,
        negative_slope=conv.negative_slope,
        dropout=conv.dropout if conv.training else 0.0,
        return_attention_weights=return_attention_weights)
    alpha = (result.alpha if return_attention_weights else
             x_src.new_empty(0, conv.heads))
    return result.out, edge_index, alpha
