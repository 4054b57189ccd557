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
    OptPairTensor,
    OptTensor,
    Size,
    SparseTensor,
)

from pyg_gat_ext.nn import _fused, _normalize
from pyg_gat_ext.nn._attention_weights import attention_weights
from pyg_gat_ext.nn._checks import check_inputs, is_edge_list, with_counts
from pyg_gat_ext.nn._linear import Linear
from pyg_gat_ext.nn._normalize import gat_norm  # noqa: F401 (PyG's name)
from pyg_gat_ext.nn._script import refuse_scripting_alone
from pyg_gat_ext.nn._self_loops import csc_as_csr, message_passing_self_loops
from pyg_gat_ext.ops import segment_softmax

if typing.TYPE_CHECKING:
    from typing import overload
else:
    from torch.jit import _overload_method as overload


def head_scores(x: Tensor, att: Tensor) -> Tensor:
    r"""PyG's :obj:`(x * att[k]).sum(dim=-1)` for node features :obj:`x` of
    shape :obj:`[N, H, C]` and each of the :obj:`K` rows of :obj:`att`
    (:obj:`[K, H, C]`): the attention scores of every node and head,
    :obj:`[N, K, H]`, from one pass over :obj:`x` that forms no
    :obj:`[N, H, C]` product, forward or backward (the
    :obj:`pyg_gat_ext::head_scores` op). Under autocast, or for mixed
    dtypes, PyG's expression (whose precision autocast keeps)."""
    if (x.dtype != att.dtype or torch.is_autocast_enabled()
            or x.numel() == 0):
        return (x.unsqueeze(1) * att).sum(dim=-1)
    return torch.ops.pyg_gat_ext.head_scores(x, att)


def combine_heads(out: Tensor, concat: bool, res: Optional[Tensor],
                  bias: Optional[Tensor]) -> Tensor:
    r"""The layers' output from the aggregated :obj:`[N, H, C]` rows: heads
    concatenated (or averaged), then the residual and the bias added, as
    PyG's :class:`GATConv` and :class:`GATv2Conv` do.
    TorchScript-compatible."""
    if concat:
        out = out.view(-1, out.size(1) * out.size(2))
    else:
        out = out.mean(dim=1)
    if res is not None:
        out = out + res
    if bias is not None:
        out = out + bias
    return out


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
        normalize (bool, optional): If set to :obj:`True`, will add
            self-loops to the input graph and compute symmetric normalization
            coefficients on-the-fly, as in the `"Bag of Tricks for Node
            Classification with Graph Neural Networks"
            <https://arxiv.org/abs/2103.13355>`_ paper (PyG's development
            branch after 2.8; not for bipartite layers; runs on the
            :class:`MessagePassing` path). (default: :obj:`False`)
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
        normalize: bool = False,
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
        self.normalize = normalize

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
        if self.normalize and not isinstance(self.in_channels, int):
            raise NotImplementedError("GATConv: The usage of 'normalize' is "
                                      "not supported for bipartite message "
                                      "passing.")
        num_src, num_dst = check_inputs(x, edge_index, edge_attr, size,
                                        self.in_channels, self.edge_dim,
                                        self.flow)
        if isinstance(edge_index, Tensor):
            edge_index, edge_attr = csc_as_csr(edge_index, edge_attr)

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

        # Node-level attention scores of source and target nodes, in one
        # pass over the features where they are the same:
        if isinstance(x, Tensor) and self.lin is not None:
            alpha = head_scores(x_src, torch.cat([self.att_src,
                                                  self.att_dst]))
            alpha_src, alpha_dst = alpha[:, 0], alpha[:, 1]
        else:
            alpha_src = head_scores(x_src, self.att_src)[:, 0]
            alpha_dst = None if x_dst is None else head_scores(
                x_dst, self.att_dst)[:, 0]

        use_fused = self._fused_in_script
        if not torch.jit.is_scripting():
            use_fused = _fused.use_fused(self, edge_index)
        if (use_fused and isinstance(edge_index, Tensor)
                and is_edge_list(edge_index)):
            if not torch.jit.is_scripting():  # Before its weight is read.
                _fused.materialize_lin_edge(self, edge_attr)
            out, edge_index, alpha = _fused.edge_list_attention(
                x_src, alpha_src, alpha_dst, edge_index, edge_attr,
                None if self.lin_edge is None else self.lin_edge.weight,
                self.att_edge, num_src, num_dst, self.flow,
                self.add_self_loops, self.fill_value, self.negative_slope,
                self.dropout if self.training else 0.0,
                return_attention_weights is True)
        elif (use_fused and not torch.jit.is_scripting()
              and isinstance(edge_index, (Tensor, SparseTensor))):
            # Sparse adjacencies take the fused path in Python only.
            out, edge_index, alpha = _fused.propagate_sparse(
                self, x_src, alpha_src, alpha_dst, edge_index, edge_attr,
                num_src, num_dst, return_attention_weights is True)
        else:
            if isinstance(edge_index, Tensor):
                edge_index = with_counts(edge_index, num_src, num_dst)
            edge_index, edge_attr = message_passing_self_loops(
                edge_index, edge_attr, num_src, num_dst, self.add_self_loops,
                self.normalize, self.fill_value, self.edge_dim is not None)

            # One count for every step, as the fused path uses it:
            counts = (num_src, num_dst)
            # edge_updater_type: (alpha: OptPairTensor, edge_attr: OptTensor)
            alpha = self.edge_updater(edge_index, alpha=(alpha_src, alpha_dst),
                                      edge_attr=edge_attr, size=counts)
            if self.normalize:
                edge_index, alpha = _normalize.normalize_attention(
                    edge_index, alpha, num_src, self.flow, alpha.dtype)

            # propagate_type: (x: OptPairTensor, alpha: Tensor)
            out = self.propagate(edge_index, x=(x_src, x_dst), alpha=alpha,
                                 size=counts)

        if (use_fused and self.concat and res is None and self.bias is None
                and out.requires_grad):
            # The fused backward reads the op's output (its sums O_i): the
            # layer would return it as is, so a copy lets the caller change
            # the layer's output in place, as PyG's allows.
            out = out.clone()
        out = combine_heads(out, self.concat, res, self.bias)

        if isinstance(return_attention_weights, bool):
            # Eager PyG 2.8 returns the attention weights only for `True`;
            # a scripted overload has one return type, so it always does.
            if not torch.jit.is_scripting():
                if not return_attention_weights:
                    return out
            return out, attention_weights(edge_index, alpha)
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

    @torch.jit.unused
    def __prepare_scriptable__(self) -> 'GATConv':
        # Scripted, the layer works as a submodule only (its `forward` is
        # overloaded); its path for edge lists is decided now, once.
        refuse_scripting_alone()
        self._fused_in_script = _fused.fused_in_script(self)
        return self

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}({self.in_channels}, '
                f'{self.out_channels}, heads={self.heads})')

