import typing
from typing import Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn import Parameter
from torch_geometric.nn.conv import MessagePassing
from torch_geometric.nn.inits import glorot, zeros
from torch_geometric.typing import (
    Adj,
    NoneType,
    OptTensor,
    PairTensor,
    SparseTensor,
)

from pyg_gat_ext.nn import _fused
from pyg_gat_ext.nn._attention_weights import attention_weights
from pyg_gat_ext.nn._checks import check_inputs, is_edge_list, with_counts
from pyg_gat_ext.nn._linear import Linear
from pyg_gat_ext.nn._script import refuse_scripting_alone
from pyg_gat_ext.nn._self_loops import csc_as_csr, message_passing_self_loops
from pyg_gat_ext.nn.gat_conv import combine_heads
from pyg_gat_ext.ops import segment_softmax

if typing.TYPE_CHECKING:
    from typing import overload
else:
    from torch.jit import _overload_method as overload


class GATv2Conv(MessagePassing):
    r"""The GATv2 operator from the `"How Attentive are Graph Attention
    Networks?" <https://arxiv.org/abs/2105.14491>`_ paper, a drop-in
    replacement for :class:`torch_geometric.nn.GATv2Conv`. It fixes the
    static attention problem of :class:`GATConv`: the nonlinearity comes
    before the attention vector, so the ranking of the neighbours depends on
    the query node.

    .. math::
        \mathbf{x}^{\prime}_i = \sum_{j \in \mathcal{N}(i) \cup \{ i \}}
        \alpha_{i,j}\mathbf{\Theta}_{s}\mathbf{x}_{j},

    with attention coefficients

    .. math::
        \alpha_{i,j} = \operatorname{softmax}_{j \in \mathcal{N}(i) \cup
        \{ i \}} \left( \mathbf{a}^{\top} \mathrm{LeakyReLU}\left(
        \mathbf{\Theta}_{s} \mathbf{x}_j + \mathbf{\Theta}_{t} \mathbf{x}_{i}
        + \mathbf{\Theta}_{e} \mathbf{e}_{j,i} \right) \right),

    where the edge term is present only when :obj:`edge_dim` is set.

    By default the layer runs on the fused kernel
    :func:`pyg_gat_ext.ops.gatv2_attention`, which computes the
    :obj:`C`-wide sum of every edge, its score, the softmax and the
    aggregation in one pass per node, adds the self-loops implicitly, and
    forms neither the :obj:`[E, heads, out_channels]` sums before the
    nonlinearity nor the messages, forward or backward (PyG's layer keeps
    both for its backward). Only the projected edge features, when
    :obj:`edge_dim` is set, are an :obj:`[E, heads, out_channels]` tensor,
    as in PyG. It falls back to the :class:`MessagePassing` hooks
    (:meth:`edge_update`, with the softmax through
    :func:`pyg_gat_ext.ops.segment_softmax`, and :meth:`message`) when
    something needs the per-edge messages: explain mode, a subclass
    overriding them, or registered hooks. On the fused path, attention
    dropout draws its mask inside the kernel (same distribution as PyG's,
    other draws).

    The constructor, parameter names, initialisation, :obj:`state_dict`,
    :meth:`forward` inputs and outputs and :obj:`repr` are those of
    :class:`torch_geometric.nn.GATv2Conv`, so :meth:`load_state_dict` works
    in both directions.

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
            :obj:`edge_dim != None`), as in :class:`GATConv`.
            (default: :obj:`"mean"`)
        bias (bool, optional): If set to :obj:`False`, the layer will not
            learn an additive bias (nor :obj:`lin_l` and :obj:`lin_r`
            theirs). (default: :obj:`True`)
        share_weights (bool, optional): If set to :obj:`True`, the same
            matrix will be applied to the source and the target node of
            every edge, i.e. :math:`\mathbf{\Theta}_{s} =
            \mathbf{\Theta}_{t}`. (default: :obj:`False`)
        residual (bool, optional): If set to :obj:`True`, the layer will add
            a learnable skip-connection. (default: :obj:`False`)
        fused (bool, optional): As for :class:`GATConv`: :obj:`None` takes
            the fused kernel unless something needs the per-edge messages,
            :obj:`True` always (an error where it cannot serve), :obj:`False`
            never. (default: :obj:`None`)
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
          :math:`((|\mathcal{V}_t|, H * F_{out})` if bipartite.
          If :obj:`return_attention_weights=True`, then
          :math:`((|\mathcal{V}|, H * F_{out}),
          ((2, |\mathcal{E}|), (|\mathcal{E}|, H)))`
          or :math:`((|\mathcal{V_t}|, H * F_{out}), ((2,
          |\mathcal{E}|), (|\mathcal{E}|, H)))` if bipartite
    """
    #: As :attr:`GATConv.fused`.
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
        share_weights: bool = False,
        residual: bool = False,
        fused: Optional[bool] = None,
        **kwargs,
    ):
        kwargs.setdefault('aggr', 'add')
        super().__init__(node_dim=0, **kwargs)
        if fused is not None:
            self.fused = fused
        # Set when scripted (see `__prepare_scriptable__`).
        self._fused_in_script = False

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
        self.share_weights = share_weights

        in_src, in_dst = ((in_channels, in_channels) if isinstance(
            in_channels, int) else in_channels)
        self.lin_l = Linear(in_src, heads * out_channels, bias=bias,
                            weight_initializer='glorot')
        if share_weights:
            self.lin_r = self.lin_l
        else:
            self.lin_r = Linear(in_dst, heads * out_channels, bias=bias,
                                weight_initializer='glorot')

        self.att = Parameter(torch.empty(1, heads, out_channels))

        if edge_dim is not None:
            self.lin_edge = Linear(edge_dim, heads * out_channels, bias=False,
                                   weight_initializer='glorot')
        else:
            self.lin_edge = None

        total_out_channels = out_channels * (heads if concat else 1)

        if residual:
            self.res = Linear(in_dst, total_out_channels, bias=False,
                              weight_initializer='glorot')
        else:
            self.register_parameter('res', None)

        if bias:
            self.bias = Parameter(torch.empty(total_out_channels))
        else:
            self.register_parameter('bias', None)

        self.reset_parameters()

    def reset_parameters(self):
        super().reset_parameters()
        self.lin_l.reset_parameters()
        self.lin_r.reset_parameters()
        if self.lin_edge is not None:
            self.lin_edge.reset_parameters()
        if self.res is not None:
            self.res.reset_parameters()
        glorot(self.att)
        zeros(self.bias)

    @overload
    def forward(
        self,
        x: Union[Tensor, PairTensor],
        edge_index: Adj,
        edge_attr: OptTensor = None,
        return_attention_weights: NoneType = None,
    ) -> Tensor:
        pass

    @overload
    def forward(  # noqa: F811
        self,
        x: Union[Tensor, PairTensor],
        edge_index: Tensor,
        edge_attr: OptTensor = None,
        return_attention_weights: bool = None,
    ) -> Tuple[Tensor, Tuple[Tensor, Tensor]]:
        pass

    @overload
    def forward(  # noqa: F811
        self,
        x: Union[Tensor, PairTensor],
        edge_index: SparseTensor,
        edge_attr: OptTensor = None,
        return_attention_weights: bool = None,
    ) -> Tuple[Tensor, SparseTensor]:
        pass

    def forward(  # noqa: F811
        self,
        x: Union[Tensor, PairTensor],
        edge_index: Adj,
        edge_attr: OptTensor = None,
        return_attention_weights: Optional[bool] = None,
    ) -> Union[
            Tensor,
            Tuple[Tensor, Tuple[Tensor, Tensor]],
            Tuple[Tensor, SparseTensor],
    ]:
        r"""Runs the forward pass of the module.

        Args:
            x (torch.Tensor or (torch.Tensor, torch.Tensor)): The input node
                features, or a pair of source and target node features.
            edge_index (torch.Tensor or EdgeIndex or SparseTensor): The edge
                indices, or a transposed sparse adjacency matrix
                (:class:`torch.sparse.Tensor` in COO, CSR or CSC layout, or
                :class:`torch_sparse.SparseTensor`).
            edge_attr (torch.Tensor, optional): The edge features, of shape
                :obj:`[num_edges]` or :obj:`[num_edges, edge_dim]`.
                (default: :obj:`None`)
            return_attention_weights (bool, optional): If set to :obj:`True`,
                additionally returns the tuple
                :obj:`(edge_index, attention_weights)` of the edges used,
                self-loops included. (default: :obj:`None`)
        """
        H, C = self.heads, self.out_channels

        if self.lin_edge is None:  # Edge features are unused then.
            edge_attr = torch.jit.annotate(Optional[Tensor], None)
        if not isinstance(x, Tensor) and x[1] is None:
            raise ValueError("GATv2Conv: the target node features 'x[1]' "
                             "must be given (the attention of an edge reads "
                             "both of its nodes)")
        num_src, num_dst = check_inputs(x, edge_index, edge_attr, None,
                                        self.in_channels, self.edge_dim,
                                        self.flow)
        if isinstance(edge_index, Tensor):
            edge_index, edge_attr = csc_as_csr(edge_index, edge_attr)

        res: Optional[Tensor] = None
        if isinstance(x, Tensor):
            if self.res is not None:
                res = self.res(x)
            x_l = self.lin_l(x).view(-1, H, C)
            if self.share_weights:
                x_r = x_l
            else:
                x_r = self.lin_r(x).view(-1, H, C)
        else:
            x_src, x_dst = x[0], x[1]
            assert x_dst is not None
            if self.res is not None:
                res = self.res(x_dst)
            x_l = self.lin_l(x_src).view(-1, H, C)
            x_r = self.lin_r(x_dst).view(-1, H, C)

        use_fused = self._fused_in_script
        if not torch.jit.is_scripting():
            use_fused = _fused.use_fused(self, edge_index)
        if (use_fused and isinstance(edge_index, Tensor)
                and is_edge_list(edge_index)):
            if not torch.jit.is_scripting():  # Before its weight is read.
                _fused.materialize_lin_edge(self, edge_attr)
            out, edge_index, alpha = _fused.edge_list_attention_v2(
                x_l, x_r, self.att, edge_index, edge_attr,
                None if self.lin_edge is None else self.lin_edge.weight,
                num_src, num_dst, self.flow, self.add_self_loops,
                self.fill_value, self.negative_slope,
                self.dropout if self.training else 0.0,
                return_attention_weights is True)
        elif (use_fused and not torch.jit.is_scripting()
              and isinstance(edge_index, (Tensor, SparseTensor))):
            # Sparse adjacencies take the fused path in Python only.
            out, edge_index, alpha = _fused.propagate_sparse_v2(
                self, x_l, x_r, edge_index, edge_attr, num_src, num_dst,
                return_attention_weights is True)
        else:
            if isinstance(edge_index, Tensor):
                edge_index = with_counts(edge_index, num_src, num_dst)
            edge_index, edge_attr = message_passing_self_loops(
                edge_index, edge_attr, num_src, num_dst, self.add_self_loops,
                False, self.fill_value, self.edge_dim is not None)

            # One count for every step, as the fused path uses it:
            counts = (num_src, num_dst)
            # edge_updater_type: (x: PairTensor, edge_attr: OptTensor)
            alpha = self.edge_updater(edge_index, x=(x_l, x_r),
                                      edge_attr=edge_attr, size=counts)

            # propagate_type: (x: PairTensor, alpha: Tensor)
            out = self.propagate(edge_index, x=(x_l, x_r), alpha=alpha,
                                 size=counts)

        out = combine_heads(out, self.concat, res, self.bias)

        if isinstance(return_attention_weights, bool):
            # Eager PyG 2.8 returns the attention weights only for `True`;
            # a scripted overload has one return type, so it always does.
            if not torch.jit.is_scripting():
                if not return_attention_weights:
                    return out
            return out, attention_weights(edge_index, alpha)
        return out

    def edge_update(self, x_j: Tensor, x_i: Tensor, edge_attr: OptTensor,
                    index: Tensor, ptr: OptTensor,
                    dim_size: Optional[int]) -> Tensor:
        x = x_i + x_j
        if edge_attr is not None:
            if edge_attr.dim() == 1:
                edge_attr = edge_attr.view(-1, 1)
            assert self.lin_edge is not None
            edge_attr = self.lin_edge(edge_attr)
            edge_attr = edge_attr.view(-1, self.heads, self.out_channels)
            x = x + edge_attr

        x = F.leaky_relu(x, self.negative_slope)
        alpha = (x * self.att).sum(dim=-1)
        if index.numel() == 0:
            return alpha
        alpha = segment_softmax(alpha, index, ptr, dim_size)
        alpha = F.dropout(alpha, p=self.dropout, training=self.training)
        return alpha

    def message(self, x_j: Tensor, alpha: Tensor) -> Tensor:
        return x_j * alpha.unsqueeze(-1)

    @torch.jit.unused
    def __prepare_scriptable__(self) -> 'GATv2Conv':
        # Scripted, the layer works as a submodule only (its `forward` is
        # overloaded); its path for edge lists is decided now, once.
        refuse_scripting_alone('GATv2Conv')
        self._fused_in_script = _fused.fused_in_script(self)
        return self

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}({self.in_channels}, '
                f'{self.out_channels}, heads={self.heads})')
