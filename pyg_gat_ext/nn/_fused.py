r"""The fused path of :class:`pyg_gat_ext.GATConv`: whether a call can take
the :func:`pyg_gat_ext.ops.gat_attention` kernel, and the attention plus
aggregation through it, returning what PyG's :meth:`propagate` and
:meth:`edge_updater` would.

Edge lists take :func:`edge_list_attention`, which TorchScript compiles as
well; sparse adjacencies take :func:`propagate_sparse`, in Python only.
"""
from typing import Optional, Tuple

import torch
from torch import Tensor
from torch_geometric.typing import Adj, OptTensor, SparseTensor
from torch_geometric.utils import is_torch_sparse_tensor

from pyg_gat_ext.nn import _self_loops
from pyg_gat_ext.nn._self_loops import FillValue
from pyg_gat_ext.ops import cached_gat_graph, gat_attention, gat_graph
from pyg_gat_ext.ops.attention import dropout_seed, group_edges, launch

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
        raise RuntimeError(f'GATConv: fused=True but the fused kernel cannot '
                           f'serve this call: {reason}')
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
    if conv.explain:
        return 'explain mode needs the per-edge messages'
    if conv.normalize:
        return 'normalize=True rescales the attention after the softmax'
    cls = type(conv)
    for name in MESSAGE_PASSING_METHODS:
        if getattr(cls, name) is not getattr(GATConv, name):
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
    # The grouped graph is cached in eager mode, built when scripted.
    if torch.jit.is_scripting():
        j, i = (0, 1) if flow == 'source_to_target' else (1, 0)
        graph = list(group_edges(edge_index[j], edge_index[i], num_src,
                                 num_dst))
    else:
        graph = list(cached_gat_graph(edge_index, num_src, num_dst, flow))
    score_weight = edge_score_weight(lin_edge_weight, att_edge, edge_attr)
    num_loops = 0
    if add_self_loops:
        num_loops = _self_loops.num_loops(num_src, num_dst)
    keep: Optional[Tensor] = None  # The edges that are not self-loops.
    if add_self_loops and (return_attention_weights
                           or edge_attr is not None):
        keep = edge_index[0] != edge_index[1]
    edge_score: Optional[Tensor] = None
    if (edge_attr is not None and score_weight is not None
            and edge_attr.size(0) + num_loops > 0):
        if edge_attr.dim() == 1:
            edge_attr = edge_attr.view(-1, 1)
        edge_score = edge_attr @ score_weight.t()
        if keep is not None and num_loops > 0:
            loop_attr = _self_loops.loop_attr(edge_attr[keep],
                                              edge_index[1][keep], num_loops,
                                              max(num_src, num_dst),
                                              fill_value)
            edge_score = torch.cat([edge_score, loop_attr @ score_weight.t()])
    out, lse, alpha = launch(x_src, alpha_src, alpha_dst, edge_score, graph,
                             num_loops, add_self_loops, negative_slope,
                             dropout, dropout_seed(dropout),
                             return_attention_weights)
    if not return_attention_weights:
        return out, edge_index, alpha_src.new_empty(0, alpha_src.size(1))
    if keep is not None:
        # The edges and weights in PyG's order: the edges that are not
        # self-loops, then one loop per node.
        num_edges = edge_index.size(1)
        alpha = torch.cat([alpha[:num_edges][keep], alpha[num_edges:]])
        edge_index, _ = _self_loops.edge_list_self_loops(
            edge_index, None, num_loops, max(num_src, num_dst), fill_value)
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
    if lin_edge is None or conv.att_edge is None or edge_attr is None:
        return
    if torch.nn.parameter.is_lazy(lin_edge.weight):
        lin_edge(edge_attr.view(edge_attr.size(0), -1))


def propagate_sparse(
        conv, x_src: Tensor, alpha_src: Tensor, alpha_dst: OptTensor,
        edge_index: Adj, edge_attr: OptTensor, num_src: int, num_dst: int,
        return_attention_weights: bool) -> Tuple[Tensor, Adj, Tensor]:
    r"""The fused attention over a sparse adjacency (:obj:`torch.sparse` or
    :class:`SparseTensor`): its self-loops are replaced as PyG does
    (node-level copies), then its entries are the edges. Returns
    :obj:`out`, the adjacency and the attention weights in its order (an
    empty tensor unless :obj:`return_attention_weights`). Python only."""
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
    edge_score = None
    materialize_lin_edge(conv, edge_attr)
    score_weight = edge_score_weight(
        None if conv.lin_edge is None else conv.lin_edge.weight,
        conv.att_edge, edge_attr)
    if (edge_attr is not None and score_weight is not None
            and edge_attr.size(0) > 0):  # Unused without edges.
        if edge_attr.dim() == 1:
            edge_attr = edge_attr.view(-1, 1)
        edge_score = edge_attr @ score_weight.t()
    result = gat_attention(x_src, alpha_src, alpha_dst,
                           gat_graph(src, dst, num_src, num_dst), edge_score,
                           negative_slope=conv.negative_slope,
                           dropout=conv.dropout if conv.training else 0.0,
                           return_attention_weights=return_attention_weights)
    alpha = (result.alpha if return_attention_weights else
             alpha_src.new_empty(0, conv.heads))
    return result.out, edge_index, alpha
