import typing
from typing import List, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn import Parameter
from torch_geometric import EdgeIndex, is_compiling
from torch_geometric.nn.conv import MessagePassing
from torch_geometric.nn.dense.linear import Linear
from torch_geometric.nn.inits import glorot, zeros
from torch_geometric.typing import (
    Adj,
    NoneType,
    OptPairTensor,
    OptTensor,
    Size,
    SparseTensor,
    torch_sparse,
)
from torch_geometric.utils import (
    add_self_loops,
    is_torch_sparse_tensor,
    remove_self_loops,
    scatter,
    to_edge_index,
    to_torch_coo_tensor,
    to_torch_csr_tensor,
)

from pyg_gat_ext.ops import (
    cached_gat_graph,
    gat_attention,
    gat_graph,
    segment_softmax,
)

if typing.TYPE_CHECKING:
    from typing import overload
else:
    from torch.jit import _overload_method as overload


class GATConv(MessagePassing):
    r"""The graph attentional operator from the `"Graph Attention Networks"
    <https://arxiv.org/abs/1710.10903>`_ paper, a drop-in replacement for
    :class:`torch_geometric.nn.GATConv`.

    .. math::
        \mathbf{x}^{\prime}_i = \sum_{j \in \mathcal{N}(i) \cup \{ i \}}
        \alpha_{i,j}\mathbf{\Theta}_s\mathbf{x}_{j},

    with attention coefficients

    .. math::
        \alpha_{i,j} = \operatorname{softmax}_{j \in \mathcal{N}(i) \cup
        \{ i \}} \left( \mathrm{LeakyReLU}\left(
        \mathbf{a}^{\top}_{s} \mathbf{\Theta}_{s}\mathbf{x}_j
        + \mathbf{a}^{\top}_{t} \mathbf{\Theta}_{t}\mathbf{x}_i
        + \mathbf{a}^{\top}_{e} \mathbf{\Theta}_{e} \mathbf{e}_{j,i}
        \right)\right),

    where the edge term is present only when :obj:`edge_dim` is set, and
    :math:`\mathbf{\Theta}_{s} = \mathbf{\Theta}_{t}` unless the layer is
    bipartite.

    By default the layer runs on the fused kernel
    :func:`pyg_gat_ext.ops.gat_attention`, which computes the attention and
    the aggregation in one pass per node, adds the self-loops implicitly and
    never forms the :obj:`[E, heads, out_channels]` messages. It falls back
    to the :class:`MessagePassing` hooks (:meth:`edge_update`, with the
    softmax through :func:`pyg_gat_ext.ops.segment_softmax`, and
    :meth:`message`) when something needs the per-edge messages: explain
    mode, a subclass overriding them, or registered hooks. On the fused
    path, attention dropout draws its mask inside the kernel (same
    distribution as PyG's, other draws).

    The constructor, parameter names, initialisation, :obj:`state_dict`,
    :meth:`forward` inputs and outputs and :obj:`repr` are those of
    :class:`torch_geometric.nn.GATConv`, so :meth:`load_state_dict` works in
    both directions. Unlike PyG's layer, inputs are validated before any
    computation, the layer compiles with :func:`torch.jit.script` (also with
    :obj:`return_attention_weights`), and the differences listed in the
    migration guide give a result where PyG raises.

    Args:
        in_channels (int or tuple): Size of each input sample, or :obj:`-1` to
            derive the size from the first input(s) to the forward method.
            A tuple corresponds to the sizes of source and target
            dimensionalities in case of a bipartite graph.
        out_channels (int): Size of each output sample.
        heads (int, optional): Number of multi-head-attentions.
            (default: :obj:`1`)
        concat (bool, optional): If set to :obj:`False`, the multi-head
            attentions are averaged instead of concatenated.
            (default: :obj:`True`)
        negative_slope (float, optional): LeakyReLU angle of the negative
            slope. (default: :obj:`0.2`)
        dropout (float, optional): Dropout probability of the normalized
            attention coefficients, which exposes each node to a
            stochastically sampled neighborhood during training.
            (default: :obj:`0`)
        add_self_loops (bool, optional): If set to :obj:`False`, will not add
            self-loops to the input graph. (default: :obj:`True`)
        edge_dim (int, optional): Edge feature dimensionality (in case
            there are any). (default: :obj:`None`)
        fill_value (float or torch.Tensor or str, optional): The way to
            generate edge features of self-loops (in case
            :obj:`edge_dim != None`): the value itself if given as
            :obj:`float` or :class:`torch.Tensor`, or a reduction of the
            features of the edges pointing to each node if given as one of
            :obj:`"add"`, :obj:`"mean"`, :obj:`"min"`, :obj:`"max"`,
            :obj:`"mul"`. (default: :obj:`"mean"`)
        bias (bool, optional): If set to :obj:`False`, the layer will not learn
            an additive bias. (default: :obj:`True`)
        residual (bool, optional): If set to :obj:`True`, the layer will add
            a learnable skip-connection. (default: :obj:`False`)
        fused (bool, optional): :obj:`None` takes the fused kernel unless
            something needs the per-edge messages, :obj:`True` always takes
            it (an error where it cannot serve), :obj:`False` always takes
            the :class:`MessagePassing` path, e.g. to reproduce PyG's
            attention-dropout draws. Also settable per layer as
            :obj:`conv.fused`, or for every layer as :obj:`GATConv.fused`.
            (default: :obj:`None`)
        **kwargs (optional): Additional arguments of
            :class:`torch_geometric.nn.conv.MessagePassing`.

    Shapes:
        - **input:**
          node features :math:`(|\mathcal{V}|, F_{in})` or
          :math:`((|\mathcal{V_s}|, F_{s}), (|\mathcal{V_t}|, F_{t}))`
          if bipartite,
          edge indices :math:`(2, |\mathcal{E}|)`,
          edge features :math:`(|\mathcal{E}|, D)` *(optional)*
        - **output:** node features :math:`(|\mathcal{V}|, H * F_{out})` or
          :math:`(|\mathcal{V}_t|, H * F_{out})` if bipartite
          (:math:`F_{out}` instead of :math:`H * F_{out}` if
          :obj:`concat=False`).
          If :obj:`return_attention_weights=True`, additionally
          :math:`((2, |\mathcal{E}|), (|\mathcal{E}|, H))`, where
          :math:`|\mathcal{E}|` counts the added self-loops.
    """
    #: Which path :meth:`forward` takes: :obj:`None` (default) the fused
    #: kernel unless something needs per-edge messages, :obj:`True` always
    #: the fused kernel (an error where it cannot serve), :obj:`False` always
    #: the :class:`MessagePassing` path. Set it per layer (or through the
    #: :obj:`fused` argument), or on the class for every layer.
    fused: Optional[bool] = None

    def __init__(
        self,
        in_channels: Union[int, Tuple[int, int]],
        out_channels: int,
        heads: int = 1,
        concat: bool = True,
        negative_slope: float = 0.2,
        dropout: float = 0.0,
        add_self_loops: bool = True,
        edge_dim: Optional[int] = None,
        fill_value: Union[float, Tensor, str] = 'mean',
        bias: bool = True,
        residual: bool = False,
        fused: Optional[bool] = None,
        **kwargs,
    ):
        kwargs.setdefault('aggr', 'add')
        super().__init__(node_dim=0, **kwargs)
        if fused is not None:
            self.fused = fused

        self.in_channels = in_channels
        self.out_channels = out_channels
        self.heads = heads
        self.concat = concat
        self.negative_slope = negative_slope
        self.dropout = dropout
        self.add_self_loops = add_self_loops
        self.edge_dim = edge_dim
        self.fill_value = fill_value
        self.residual = residual

        # A bipartite layer transforms source and target nodes separately:
        self.lin = self.lin_src = self.lin_dst = None
        if isinstance(in_channels, int):
            self.lin = Linear(in_channels, heads * out_channels, bias=False,
                              weight_initializer='glorot')
        else:
            self.lin_src = Linear(in_channels[0], heads * out_channels, False,
                                  weight_initializer='glorot')
            self.lin_dst = Linear(in_channels[1], heads * out_channels, False,
                                  weight_initializer='glorot')

        self.att_src = Parameter(torch.empty(1, heads, out_channels))
        self.att_dst = Parameter(torch.empty(1, heads, out_channels))

        if edge_dim is not None:
            self.lin_edge = Linear(edge_dim, heads * out_channels, bias=False,
                                   weight_initializer='glorot')
            self.att_edge = Parameter(torch.empty(1, heads, out_channels))
        else:
            self.lin_edge = None
            self.register_parameter('att_edge', None)

        total_out_channels = out_channels * (heads if concat else 1)

        if residual:
            self.res = Linear(
                in_channels
                if isinstance(in_channels, int) else in_channels[1],
                total_out_channels,
                bias=False,
                weight_initializer='glorot',
            )
        else:
            self.register_parameter('res', None)

        if bias:
            self.bias = Parameter(torch.empty(total_out_channels))
        else:
            self.register_parameter('bias', None)

        self.reset_parameters()

    def reset_parameters(self):
        super().reset_parameters()
        if self.lin is not None:
            self.lin.reset_parameters()
        if self.lin_src is not None:
            self.lin_src.reset_parameters()
        if self.lin_dst is not None:
            self.lin_dst.reset_parameters()
        if self.lin_edge is not None:
            self.lin_edge.reset_parameters()
        if self.res is not None:
            self.res.reset_parameters()
        glorot(self.att_src)
        glorot(self.att_dst)
        glorot(self.att_edge)
        zeros(self.bias)

    @overload
    def forward(
        self,
        x: Union[Tensor, OptPairTensor],
        edge_index: Adj,
        edge_attr: OptTensor = None,
        size: Size = None,
        return_attention_weights: NoneType = None,
    ) -> Tensor:
        pass

    @overload
    def forward(  # noqa: F811
        self,
        x: Union[Tensor, OptPairTensor],
        edge_index: Tensor,
        edge_attr: OptTensor = None,
        size: Size = None,
        return_attention_weights: bool = None,
    ) -> Tuple[Tensor, Tuple[Tensor, Tensor]]:
        pass

    @overload
    def forward(  # noqa: F811
        self,
        x: Union[Tensor, OptPairTensor],
        edge_index: SparseTensor,
        edge_attr: OptTensor = None,
        size: Size = None,
        return_attention_weights: bool = None,
    ) -> Tuple[Tensor, SparseTensor]:
        pass

    def forward(  # noqa: F811
        self,
        x: Union[Tensor, OptPairTensor],
        edge_index: Adj,
        edge_attr: OptTensor = None,
        size: Size = None,
        return_attention_weights: Optional[bool] = None,
    ) -> Union[
            Tensor,
            Tuple[Tensor, Tuple[Tensor, Tensor]],
            Tuple[Tensor, SparseTensor],
    ]:
        r"""Runs the forward pass of the module.

        Args:
            x (torch.Tensor or (torch.Tensor, torch.Tensor)): The input node
                features, or a pair of source and target node features (the
                target may be :obj:`None`).
            edge_index (torch.Tensor or EdgeIndex or SparseTensor): The edge
                indices, or a transposed sparse adjacency matrix
                (:class:`torch.sparse.Tensor` in COO, CSR or CSC layout, or
                :class:`torch_sparse.SparseTensor`).
            edge_attr (torch.Tensor, optional): The edge features, of shape
                :obj:`[num_edges]` or :obj:`[num_edges, edge_dim]`.
                (default: :obj:`None`)
            size ((int, int), optional): The shape of the adjacency matrix.
                (default: :obj:`None`)
            return_attention_weights (bool, optional): If set to :obj:`True`,
                additionally returns the tuple
                :obj:`(edge_index, attention_weights)` of the edges used,
                self-loops included. (default: :obj:`None`)
        """
        H, C = self.heads, self.out_channels

        if self.lin_edge is None:  # Edge features are unused then.
            edge_attr = torch.jit.annotate(Optional[Tensor], None)
        self._check_input_shapes(x, edge_index, edge_attr, size)

        if isinstance(edge_index, Tensor):
            if edge_index.layout == torch.sparse_csc:
                # PyG's message passing takes COO and CSR: go to CSR, with
                # explicit edge features as values so they follow the edges.
                if edge_attr is not None:
                    if edge_attr.dim() == 1:
                        edge_attr = edge_attr.view(-1, 1)
                    edge_index = _set_sparse_value(edge_index, edge_attr)
                    edge_attr = torch.jit.annotate(Optional[Tensor], None)
                edge_index = edge_index.to_sparse_csr()

        res: Optional[Tensor] = None

        # Transform the input node features, with separate weights for
        # source and target nodes if the layer is bipartite:
        if isinstance(x, Tensor):
            if self.res is not None:
                res = self.res(x)

            if self.lin is not None:
                x_src = x_dst = self.lin(x).view(-1, H, C)
            else:
                assert self.lin_src is not None and self.lin_dst is not None
                x_src = self.lin_src(x).view(-1, H, C)
                x_dst = self.lin_dst(x).view(-1, H, C)

        else:
            x_src, x_dst = x

            if x_dst is not None and self.res is not None:
                res = self.res(x_dst)

            if self.lin is not None:
                x_src = self.lin(x_src).view(-1, H, C)
                if x_dst is not None:
                    x_dst = self.lin(x_dst).view(-1, H, C)
            else:
                assert self.lin_src is not None and self.lin_dst is not None
                x_src = self.lin_src(x_src).view(-1, H, C)
                if x_dst is not None:
                    x_dst = self.lin_dst(x_dst).view(-1, H, C)

        x = (x_src, x_dst)

        # Node-level attention scores of source and target nodes:
        alpha_src = (x_src * self.att_src).sum(dim=-1)
        alpha_dst = None if x_dst is None else (x_dst * self.att_dst).sum(-1)
        alpha_pair = (alpha_src, alpha_dst)

        use_fused = False
        if not torch.jit.is_scripting():
            use_fused = self._use_fused(x_dst, edge_index)
        need_alpha = return_attention_weights is True
        if use_fused and isinstance(edge_index, Tensor):
            out, edge_index, alpha = self._fused_edge_index(
                x_src, x_dst, alpha_src, alpha_dst, edge_index, edge_attr,
                size, need_alpha)
        elif use_fused and isinstance(edge_index, SparseTensor):
            out, edge_index, alpha = self._fused_sparse_tensor(
                x_src, x_dst, alpha_src, alpha_dst, edge_index, edge_attr,
                size, need_alpha)
        else:
            if self.add_self_loops:
                if isinstance(edge_index, Tensor):
                    edge_index, edge_attr = self._tensor_with_self_loops(
                        edge_index, edge_attr, x_src, x_dst, size)
                elif isinstance(edge_index, SparseTensor):
                    edge_index, edge_attr = (
                        self._sparse_tensor_with_self_loops(
                            edge_index, edge_attr, x_src, x_dst, size))

            # edge_updater_type: (alpha: OptPairTensor, edge_attr: OptTensor)
            alpha = self.edge_updater(edge_index, alpha=alpha_pair,
                                      edge_attr=edge_attr, size=size)

            # propagate_type: (x: OptPairTensor, alpha: Tensor)
            out = self.propagate(edge_index, x=x, alpha=alpha, size=size)

        if self.concat:
            out = out.view(-1, self.heads * self.out_channels)
        else:
            out = out.mean(dim=1)

        if res is not None:
            out = out + res

        if self.bias is not None:
            out = out + self.bias

        if isinstance(return_attention_weights, bool):
            # Eager PyG 2.8 returns the attention weights only for `True`;
            # a scripted overload has one return type, so it always does.
            if not torch.jit.is_scripting():
                if not return_attention_weights:
                    return out
            if isinstance(edge_index, Tensor):
                if is_torch_sparse_tensor(edge_index):
                    adj = _set_sparse_value(edge_index, alpha)
                    return out, (adj, alpha)
                else:
                    return out, (edge_index, alpha)
            else:
                return out, edge_index.set_value(alpha, layout='coo')
        else:
            return out

    def edge_update(self, alpha_j: Tensor, alpha_i: OptTensor,
                    edge_attr: OptTensor, index: Tensor, ptr: OptTensor,
                    dim_size: Optional[int]) -> Tensor:
        # Node-level scores summed per edge "emulate" the concatenation of
        # the original paper's attention input:
        alpha = alpha_j if alpha_i is None else alpha_j + alpha_i
        if index.numel() == 0:
            return alpha
        if edge_attr is not None and self.lin_edge is not None:
            if edge_attr.dim() == 1:
                edge_attr = edge_attr.view(-1, 1)
            edge_attr = self.lin_edge(edge_attr)
            edge_attr = edge_attr.view(-1, self.heads, self.out_channels)
            alpha_edge = (edge_attr * self.att_edge).sum(dim=-1)
            alpha = alpha + alpha_edge

        alpha = F.leaky_relu(alpha, self.negative_slope)
        alpha = segment_softmax(alpha, index, ptr, dim_size)
        alpha = F.dropout(alpha, p=self.dropout, training=self.training)
        return alpha

    def message(self, x_j: Tensor, alpha: Tensor) -> Tensor:
        return alpha.unsqueeze(-1) * x_j

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}({self.in_channels}, '
                f'{self.out_channels}, heads={self.heads})')

    # Fused path ##############################################################

    @torch.jit.unused
    def _use_fused(self, x_dst: OptTensor, edge_index: Adj) -> bool:
        # Whether `forward` takes the fused kernel (see `fused`).
        if self.fused is False:
            return False
        reason = self._unfusable(x_dst, edge_index)
        if reason is None:
            return True
        if self.fused:
            raise RuntimeError(f'GATConv: fused=True but the fused kernel '
                               f'cannot serve this call: {reason}')
        return False

    @torch.jit.unused
    def _unfusable(self, x_dst: OptTensor, edge_index: Adj) -> Optional[str]:
        # Why this call needs the `MessagePassing` path, or None.
        if self.explain:
            return 'explain mode needs the per-edge messages'
        cls = type(self)
        for name in _MESSAGE_PASSING_METHODS:
            if getattr(cls, name) is not getattr(GATConv, name):
                return f'{cls.__name__} overrides {name}()'
        for name in _HOOKS:
            if len(getattr(self, name)) > 0:
                return f'hooks are registered ({name})'
        if self.aggr != 'add' or self.decomposed_layers != 1:
            return (f"aggr={self.aggr!r} and decomposed_layers="
                    f"{self.decomposed_layers} (the kernel sums in one pass)")
        if self.flow != 'source_to_target' and (
                not isinstance(edge_index, Tensor)
                or is_torch_sparse_tensor(edge_index)):
            # PyG's message passing rejects this: so does the fallback.
            return "flow='target_to_source' with a sparse adjacency"
        return None

    @torch.jit.unused
    def _edge_scores(self, edge_attr: Tensor) -> Tensor:
        # The attention score of every edge feature row, [E, H]: through the
        # [H, edge_dim] product of `lin_edge` and `att_edge` rather than
        # the [E, H, C] projected features.
        assert self.lin_edge is not None and self.att_edge is not None
        H, C = self.heads, self.out_channels
        if edge_attr.dim() == 1:
            edge_attr = edge_attr.view(-1, 1)
        weight = self.lin_edge.weight
        if torch.nn.parameter.is_lazy(weight):
            edge_attr = self.lin_edge(edge_attr).view(-1, H, C)
            return (edge_attr * self.att_edge).sum(dim=-1)
        weight = weight.view(H, C, -1)
        score = (weight * self.att_edge.view(H, C, 1)).sum(dim=1)
        return edge_attr @ score.t()

    # TorchScript types `edge_index` per forward overload: one entry point
    # per type (never compiled, the fused path is Python only).
    @torch.jit.unused
    def _fused_edge_index(self, x_src: Tensor, x_dst: OptTensor,
                          alpha_src: Tensor, alpha_dst: OptTensor,
                          edge_index: Tensor, edge_attr: OptTensor,
                          size: Size,
                          need_alpha: bool) -> Tuple[Tensor, Tensor, Tensor]:
        return self._fused_propagate(x_src, x_dst, alpha_src, alpha_dst,
                                     edge_index, edge_attr, size, need_alpha)

    @torch.jit.unused
    def _fused_sparse_tensor(
            self, x_src: Tensor, x_dst: OptTensor, alpha_src: Tensor,
            alpha_dst: OptTensor, edge_index: SparseTensor,
            edge_attr: OptTensor, size: Size,
            need_alpha: bool) -> Tuple[Tensor, SparseTensor, Tensor]:
        return self._fused_propagate(x_src, x_dst, alpha_src, alpha_dst,
                                     edge_index, edge_attr, size, need_alpha)

    @torch.jit.unused
    def _fused_propagate(self, x_src: Tensor, x_dst: OptTensor,
                         alpha_src: Tensor, alpha_dst: OptTensor,
                         edge_index: Adj, edge_attr: OptTensor, size: Size,
                         need_alpha: bool) -> Tuple[Tensor, Adj, Tensor]:
        # Attention and aggregation in one kernel: `out` [N_dst, H, C], the
        # edges used and their attention weights as PyG returns them (an
        # empty tensor unless `need_alpha`).
        num_src = x_src.size(0)
        num_dst = num_src if x_dst is None else x_dst.size(0)
        if x_dst is None and size is not None and size[1] is not None:
            num_dst = size[1]
        dropout = self.dropout if self.training else 0.0
        no_alpha = alpha_src.new_empty(0, self.heads)

        if (not isinstance(edge_index, Tensor)
                or is_torch_sparse_tensor(edge_index)):
            # A sparse adjacency: its self-loops are replaced as PyG does
            # (node-level copies), then its entries are the edges.
            if self.add_self_loops and isinstance(edge_index, SparseTensor):
                edge_index, edge_attr = self._sparse_tensor_with_self_loops(
                    edge_index, edge_attr, x_src, x_dst, size)
            elif self.add_self_loops:
                edge_index, edge_attr = self._tensor_with_self_loops(
                    edge_index, edge_attr, x_src, x_dst, size)
            if isinstance(edge_index, SparseTensor):
                dst, src, value = edge_index.coo()
            else:
                indices, value = to_edge_index(edge_index)
                dst, src = indices[0], indices[1]
                if value.dim() == 1:  # Edge weights, not features.
                    value = None
            if edge_attr is None:
                edge_attr = value
            edge_score = None
            if (edge_attr is not None and self.lin_edge is not None
                    and edge_attr.size(0) > 0):  # Unused without edges.
                edge_score = self._edge_scores(edge_attr)
            result = gat_attention(
                x_src, alpha_src, alpha_dst,
                gat_graph(src, dst, num_src, num_dst), edge_score,
                negative_slope=self.negative_slope, dropout=dropout,
                return_attention_weights=need_alpha)
            alpha = result.alpha if need_alpha else no_alpha
            return result.out, edge_index, alpha

        # An edge list: self-loops are implicit in the kernel, which skips
        # the existing ones, and the grouped graph is cached.
        # (`flow='target_to_source'` is the same with the rows swapped.)
        num_loops = 0
        if self.add_self_loops:
            num_loops = self._num_loops(x_src, x_dst, size)
        graph = cached_gat_graph(edge_index, num_src,
                                 num_dst, self.flow)

        edge_score = None
        if (edge_attr is not None and self.lin_edge is not None
                and edge_attr.size(0) + num_loops > 0):
            edge_score = self._edge_scores(edge_attr)
            if num_loops > 0:
                if edge_attr.dim() == 1:
                    edge_attr = edge_attr.view(-1, 1)
                keep = edge_index[0] != edge_index[1]
                loop_attr = self._loop_attr(edge_attr[keep],
                                            edge_index[1][keep], num_loops,
                                            max(num_src, num_dst))
                edge_score = torch.cat(
                    [edge_score, self._edge_scores(loop_attr)], dim=0)

        result = gat_attention(x_src, alpha_src, alpha_dst, graph, edge_score,
                               num_loops=num_loops,
                               remove_self_loops=self.add_self_loops,
                               negative_slope=self.negative_slope,
                               dropout=dropout,
                               return_attention_weights=need_alpha)
        if not need_alpha or result.alpha is None:
            return result.out, edge_index, no_alpha
        alpha = result.alpha
        if self.add_self_loops:
            # The edges and weights in PyG's order: the edges that are not
            # self-loops, then one loop per node.
            num_edges = edge_index.size(1)
            keep = edge_index[0] != edge_index[1]
            alpha = torch.cat([alpha[:num_edges][keep], alpha[num_edges:]])
            edge_index, _ = self._self_loops(edge_index, None, num_loops,
                                             max(num_src, num_dst))
        return result.out, edge_index, alpha

    # Self-loops ##############################################################

    def _num_loops(self, x_src: Tensor, x_dst: OptTensor, size: Size) -> int:
        # Self-loops are added for the nodes that are both source and target
        # nodes.
        num_src = x_src.size(0)
        num_dst = num_src if x_dst is None else x_dst.size(0)
        num_loops = min(num_src, num_dst)
        if size is not None:
            num_loops = min(size)
        return num_loops

    def _tensor_with_self_loops(
            self, edge_index: Tensor, edge_attr: OptTensor, x_src: Tensor,
            x_dst: OptTensor, size: Size) -> Tuple[Tensor, OptTensor]:
        # The graph with its self-loops replaced by one per node, as PyG's
        # layer builds it; edge features of a sparse adjacency become its
        # values (then `edge_attr` is None).
        num_loops = self._num_loops(x_src, x_dst, size)
        if is_torch_sparse_tensor(edge_index):
            edge_index = self._sparse_self_loops(edge_index, edge_attr,
                                                 num_loops)
            return edge_index, torch.jit.annotate(Optional[Tensor], None)
        num_src = x_src.size(0)
        num_dst = num_src if x_dst is None else x_dst.size(0)
        return self._self_loops(edge_index, edge_attr, num_loops,
                                max(num_src, num_dst))

    def _sparse_tensor_with_self_loops(
            self, edge_index: SparseTensor, edge_attr: OptTensor,
            x_src: Tensor, x_dst: OptTensor,
            size: Size) -> Tuple[SparseTensor, OptTensor]:
        # As `_tensor_with_self_loops`, for a `SparseTensor`.
        if self.edge_dim is None:
            return torch_sparse.set_diag(edge_index), edge_attr
        edge_index = self._sparse_tensor_self_loops(
            edge_index, edge_attr, self._num_loops(x_src, x_dst, size))
        return edge_index, torch.jit.annotate(Optional[Tensor], None)

    def _loop_attr(self, edge_attr: Tensor, dst: Tensor, num_loops: int,
                   dim_size: int) -> Tensor:
        # The features of the self-loops of nodes `0, ..., num_loops - 1`
        # according to `fill_value`; `dst` holds the node each edge of
        # `edge_attr` points to, every entry smaller than `dim_size`.
        size = [num_loops] + list(edge_attr.size()[1:])
        fill_value = self.fill_value
        if isinstance(fill_value, str):
            # Reduce over all nodes first, so that a bipartite graph with
            # more target than source nodes needs no out-of-range index:
            dim_size = max(dim_size, num_loops)
            return scatter(edge_attr, dst, 0, dim_size,
                           reduce=fill_value)[:num_loops]
        elif isinstance(fill_value, Tensor):
            loop_attr = fill_value.to(edge_attr.device, edge_attr.dtype)
            if edge_attr.dim() != loop_attr.dim():
                loop_attr = loop_attr.unsqueeze(0)
            return loop_attr.expand(size).contiguous()
        elif fill_value is None:
            return edge_attr.new_ones(size)
        else:
            return edge_attr.new_full(size, fill_value)

    def _self_loops(self, edge_index: Tensor, edge_attr: OptTensor,
                    num_loops: int,
                    dim_size: int) -> Tuple[Tensor, OptTensor]:
        # Existing self-loops are removed and one per node is appended, in
        # PyG's edge order (`EdgeIndex` inputs stay `EdgeIndex`).
        edge_index, edge_attr = remove_self_loops(edge_index, edge_attr)
        if edge_attr is not None:
            loop_attr = self._loop_attr(edge_attr, edge_index[1], num_loops,
                                        dim_size)
            edge_attr = torch.cat([edge_attr, loop_attr], dim=0)
        edge_index, _ = add_self_loops(edge_index, num_nodes=num_loops)
        return edge_index, edge_attr

    def _sparse_self_loops(self, adj_t: Tensor, edge_attr: OptTensor,
                           num_loops: int) -> Tensor:
        # A `torch.sparse` COO or CSR adjacency: explicit edge features
        # travel as its values, so that they are reordered with the edges.
        if edge_attr is not None:
            if edge_attr.dim() == 1:
                edge_attr = edge_attr.view(-1, 1)
            adj_t = _set_sparse_value(adj_t, edge_attr)
        sparse_size = (adj_t.size(0), adj_t.size(1))
        layout = adj_t.layout
        edge_index, value = to_edge_index(adj_t)
        row, col, value = self._replace_self_loops(
            edge_index[0], edge_index[1], value, num_loops, max(sparse_size))
        edge_index = torch.stack([row, col], dim=0)
        if layout == torch.sparse_coo:
            return to_torch_coo_tensor(edge_index, value, sparse_size)
        return to_torch_csr_tensor(edge_index, value, sparse_size)

    def _sparse_tensor_self_loops(self, adj_t: SparseTensor,
                                  edge_attr: OptTensor,
                                  num_loops: int) -> SparseTensor:
        # A `SparseTensor` with edge features, which PyG does not support:
        # the features become its values and self-loops get `fill_value`.
        row, col, value = adj_t.coo()
        if edge_attr is not None:
            value = edge_attr
        if value is None:
            raise ValueError("GATConv: 'edge_dim' is set but neither "
                             "'edge_attr' nor the 'SparseTensor' holds edge "
                             "features")
        sparse_sizes = (adj_t.size(0), adj_t.size(1))
        row, col, value = self._replace_self_loops(row, col, value,
                                                   num_loops,
                                                   max(sparse_sizes))
        return SparseTensor(row=row, col=col, value=value,
                            sparse_sizes=sparse_sizes)

    def _replace_self_loops(self, row: Tensor, col: Tensor, value: Tensor,
                            num_loops: int,
                            dim_size: int) -> Tuple[Tensor, Tensor, Tensor]:
        # The entries (row, col, value) of a transposed adjacency without its
        # self-loops, then one loop per node 0 ... num_loops - 1 appended
        # with `fill_value` features (rows are the target nodes).
        mask = row != col
        row, col, value = row[mask], col[mask], value[mask]
        loop_attr = self._loop_attr(value, row, num_loops, dim_size)
        loop_index = torch.arange(num_loops, device=row.device)
        return (torch.cat([row, loop_index]), torch.cat([col, loop_index]),
                torch.cat([value, loop_attr], dim=0))

    # Input validation ########################################################

    def _check_input_shapes(
        self,
        x: Union[Tensor, OptPairTensor],
        edge_index: Adj,
        edge_attr: OptTensor,
        size: Size,
    ) -> None:
        # Every check runs before any computation, and each error names the
        # argument and the shapes involved.
        if isinstance(x, Tensor):
            self._check_features('x', x, self._in_channels(0))
            self._check_features('x', x, self._in_channels(1))
            num_src = num_dst = x.size(0)
            device = x.device
        else:
            x_src, x_dst = x
            self._check_features('x[0]', x_src, self._in_channels(0))
            num_src = num_dst = x_src.size(0)
            device = x_src.device
            if x_dst is not None:
                self._check_features('x[1]', x_dst, self._in_channels(1))
                num_dst = x_dst.size(0)
                self._check_device('x[1]', x_dst.device, device)
            elif size is not None and size[1] is not None:
                num_dst = size[1]

        if size is not None:
            if len(size) != 2:
                raise ValueError(f"GATConv: expected 'size' to be a pair "
                                 f"(num_src_nodes, num_dst_nodes) (got "
                                 f"{size})")
            if size[0] is not None and size[0] != num_src:
                raise ValueError(f"GATConv: 'size' is {size} but there are "
                                 f"{num_src} source nodes in 'x'")
            if size[1] is not None and size[1] != num_dst:
                raise ValueError(f"GATConv: 'size' is {size} but there are "
                                 f"{num_dst} target nodes in 'x'")

        num_edges = 0
        if isinstance(edge_index, Tensor):
            self._check_device('edge_index', edge_index.device, device)
            if is_torch_sparse_tensor(edge_index):
                if edge_index.sparse_dim() != 2:
                    raise ValueError(f"GATConv: expected a sparse "
                                     f"'edge_index' with two sparse "
                                     f"dimensions (got shape "
                                     f"{list(edge_index.shape)})")
                if (edge_index.size(1) != num_src
                        or edge_index.size(0) != num_dst):
                    raise ValueError(
                        f"GATConv: the transposed sparse adjacency "
                        f"'edge_index' has shape {list(edge_index.shape)} "
                        f"but 'x' gives {num_dst} target and {num_src} "
                        f"source nodes (expected [{num_dst}, {num_src}])")
                num_edges = edge_index._nnz()
            else:
                # Row `j` of `edge_index` indexes the source nodes, row `i`
                # the target nodes, as in `MessagePassing`:
                bounds, names = [num_src, num_dst], ['source', 'target']
                if self.flow == 'target_to_source':
                    bounds, names = [num_dst, num_src], ['target', 'source']
                self._check_edge_index(edge_index, bounds, names)
                num_edges = edge_index.size(1)
        else:
            sparse_sizes = [edge_index.size(0), edge_index.size(1)]
            if sparse_sizes[1] != num_src or sparse_sizes[0] != num_dst:
                raise ValueError(
                    f"GATConv: the transposed 'SparseTensor' 'edge_index' "
                    f"has sparse sizes {sparse_sizes} but 'x' gives "
                    f"{num_dst} target and {num_src} source nodes (expected "
                    f"[{num_dst}, {num_src}])")
            num_edges = edge_index.nnz()

        edge_dim = self.edge_dim
        if edge_attr is not None and edge_dim is not None:
            if edge_attr.dim() not in (1, 2):
                raise ValueError(f"GATConv: expected 'edge_attr' to be 1-D "
                                 f"or 2-D (got shape {list(edge_attr.shape)})")
            if not edge_attr.is_floating_point():
                raise TypeError(f"GATConv: expected floating point "
                                f"'edge_attr' (got {edge_attr.dtype})")
            self._check_device('edge_attr', edge_attr.device, device)
            if edge_attr.size(0) != num_edges:
                raise ValueError(f"GATConv: 'edge_attr' has "
                                 f"{edge_attr.size(0)} rows (shape "
                                 f"{list(edge_attr.shape)}) but "
                                 f"'edge_index' has {num_edges} edges")
            width = 1 if edge_attr.dim() == 1 else edge_attr.size(1)
            if width != edge_dim:
                raise ValueError(f"GATConv: 'edge_attr' has {width} "
                                 f"features (shape {list(edge_attr.shape)}) "
                                 f"but the layer has edge_dim={edge_dim}")

    def _in_channels(self, i: int) -> int:
        # The expected width of source (0) or target (1) features, -1 if lazy.
        in_channels = self.in_channels
        if isinstance(in_channels, int):
            return in_channels
        return in_channels[i]

    def _check_features(self, name: str, x: Tensor, channels: int) -> None:
        if x.dim() != 2:
            raise ValueError(f"GATConv: expected '{name}' to be a 2-D tensor "
                             f"[num_nodes, num_features] (got shape "
                             f"{list(x.shape)})")
        if not x.is_floating_point():
            raise TypeError(f"GATConv: expected floating point '{name}' (got "
                            f"{x.dtype})")
        if channels != -1 and x.size(1) != channels:
            raise ValueError(f"GATConv: '{name}' has {x.size(1)} features "
                             f"(shape {list(x.shape)}) but the layer expects "
                             f"{channels} (in_channels={self.in_channels})")

    def _check_device(self, name: str, device: torch.device,
                      expected: torch.device) -> None:
        if device != expected:
            raise ValueError(f"GATConv: '{name}' is on {device} but the node "
                             f"features are on {expected}; move both to one "
                             f"device")

    def _check_edge_index(self, edge_index: Tensor, bounds: List[int],
                          names: List[str]) -> None:
        if (edge_index.is_floating_point() or edge_index.is_complex()
                or edge_index.dtype == torch.bool):
            raise ValueError(f"GATConv: expected 'edge_index' to be an "
                             f"integer tensor (got {edge_index.dtype})")
        if edge_index.dim() != 2 or edge_index.size(0) != 2:
            raise ValueError(f"GATConv: expected 'edge_index' to have shape "
                             f"[2, num_edges] (got {list(edge_index.shape)})")
        plain = edge_index
        if (not torch.jit.is_scripting()
                and isinstance(edge_index, EdgeIndex)):
            plain = edge_index.as_subclass(Tensor)
            for i, num in enumerate(edge_index.sparse_size()):
                if num is not None and num != bounds[i]:
                    raise ValueError(
                        f"GATConv: 'edge_index' has sparse size "
                        f"{edge_index.sparse_size()} but 'x' has "
                        f"{bounds[i]} {names[i]} nodes")
        if edge_index.numel() == 0 or is_compiling():
            return
        # One reduction and one host sync for the range check:
        low, high = torch.aminmax(plain, dim=1)
        lows: List[int] = low.tolist()
        highs: List[int] = high.tolist()
        for i in range(2):
            if lows[i] < 0 or highs[i] >= bounds[i]:
                bad = lows[i] if lows[i] < 0 else highs[i]
                raise IndexError(
                    f"GATConv: 'edge_index[{i}]' holds index {bad}, out of "
                    f"range for {bounds[i]} {names[i]} nodes (valid: 0 to "
                    f"{bounds[i] - 1})")


#: The hooks of `MessagePassing` that the fused path would skip.
_MESSAGE_PASSING_METHODS = ('message', 'edge_update', 'aggregate', 'update',
                            'message_and_aggregate', 'propagate',
                            'edge_updater')
_HOOKS = ('_propagate_forward_pre_hooks', '_propagate_forward_hooks',
          '_message_forward_pre_hooks', '_message_forward_hooks',
          '_aggregate_forward_pre_hooks', '_aggregate_forward_hooks',
          '_message_and_aggregate_forward_pre_hooks',
          '_message_and_aggregate_forward_hooks',
          '_edge_update_forward_pre_hooks', '_edge_update_forward_hooks')


def _set_sparse_value(adj: Tensor, value: Tensor) -> Tensor:
    r"""The sparse matrix :obj:`adj` with :obj:`value` as its values, in the
    same layout; unlike PyG's `set_sparse_value`, this also works when
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
