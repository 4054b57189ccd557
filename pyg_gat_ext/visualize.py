r"""Attention visualisation for :class:`pyg_gat_ext.GATConv` (and PyG's).

Every function takes the attention weights as a :class:`GATConv` returns
them with :obj:`return_attention_weights=True`::

    out, (edge_index, alpha) = conv(x, edge_index,
                                    return_attention_weights=True)

that is, :obj:`edge_index` of shape :obj:`[2, E]` (self-loops included)
and :obj:`alpha` of shape :obj:`[E, H]`, where :obj:`alpha[e, h]` is the
weight head :obj:`h` gives to the message along edge :obj:`e` from
:obj:`edge_index[0, e]` to :obj:`edge_index[1, e]`; the weights into each
node sum to one per head. Take them in evaluation mode: attention dropout
zeroes and rescales weights in training mode.

:func:`attention_entropy` and :func:`uniform_entropy` need only PyTorch.
The plotting functions need matplotlib and networkx
(``pip install matplotlib networkx``, or ``pip install '.[viz]'`` from a
checkout of pyg-gat-ext), imported on first use; they return a
:class:`matplotlib.figure.Figure` without touching :mod:`matplotlib.pyplot`
state (in a notebook, the figure shows as the cell's value; elsewhere,
:meth:`~matplotlib.figure.Figure.savefig` it).
"""
import math
from typing import Any, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

__all__ = [
    'attention_entropy',
    'uniform_entropy',
    'plot_neighbourhood',
    'plot_entropy_histograms',
]


def _check_edge_index(edge_index: Any) -> Tensor:
    if not isinstance(edge_index, Tensor):
        raise TypeError(f"'edge_index' must be a tensor of shape [2, E] "
                        f"(got {type(edge_index).__name__}); convert a "
                        f"sparse adjacency with "
                        f"torch_geometric.utils.to_edge_index first")
    if edge_index.is_sparse or edge_index.layout != torch.strided:
        raise TypeError("'edge_index' must be a dense tensor of shape "
                        "[2, E], not a sparse adjacency; convert it with "
                        "torch_geometric.utils.to_edge_index first")
    if edge_index.dim() != 2 or edge_index.size(0) != 2:
        raise ValueError(f"'edge_index' must have shape [2, E] (got "
                         f"{list(edge_index.shape)})")
    if edge_index.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"'edge_index' must hold integers (got "
                         f"{edge_index.dtype})")
    if edge_index.numel() > 0 and int(edge_index.min()) < 0:
        raise ValueError("'edge_index' holds negative node indices")
    # A plain tensor: EdgeIndex metadata does not survive indexing anyway.
    return edge_index.as_subclass(Tensor).long()


def _check_alpha(alpha: Any, num_edges: int) -> Tensor:
    if not isinstance(alpha, Tensor):
        raise TypeError(f"'alpha' must be a tensor of shape [E, H] or [E] "
                        f"(got {type(alpha).__name__})")
    if alpha.dim() == 1:
        alpha = alpha.unsqueeze(-1)
    if alpha.dim() != 2 or alpha.size(0) != num_edges:
        raise ValueError(f"'alpha' must have shape [E, H] or [E] with "
                         f"E = {num_edges} edges, as 'edge_index' has "
                         f"(got {list(alpha.shape)})")
    if not alpha.is_floating_point():
        raise ValueError(f"'alpha' must be floating point (got "
                         f"{alpha.dtype})")
    alpha = alpha.detach()
    if alpha.numel() > 0 and not bool(torch.isfinite(alpha).all()):
        raise ValueError("'alpha' holds NaN or infinite values")
    if alpha.numel() > 0 and float(alpha.min()) < 0:
        raise ValueError("'alpha' holds negative weights: pass attention "
                         "weights (after the softmax), not scores")
    return alpha


def _num_nodes(edge_index: Tensor, num_nodes: Optional[int]) -> int:
    needed = int(edge_index.max()) + 1 if edge_index.numel() > 0 else 0
    if num_nodes is None:
        return needed
    if num_nodes < needed:
        raise ValueError(f"'edge_index' refers to node {needed - 1}, but "
                         f"'num_nodes' is {num_nodes}")
    return num_nodes


def _heads(heads: Optional[Sequence[int]], num_heads: int) -> List[int]:
    if heads is None:
        return list(range(num_heads))
    heads = [int(h) for h in heads]
    if len(heads) == 0:
        raise ValueError("'heads' is empty: pass None for all heads")
    bad = [h for h in heads if not 0 <= h < num_heads]
    if bad:
        raise ValueError(f"'heads' {bad} out of range: 'alpha' has "
                         f"{num_heads} head(s)")
    return heads


def attention_entropy(edge_index: Tensor, alpha: Tensor,
                      num_nodes: Optional[int] = None) -> Tensor:
    r"""The entropy of each node's attention over its incoming edges, per
    head,

    .. math::
        H_{i,h} = -\sum_{e \,:\, \mathrm{dst}(e) = i}
        \alpha_{e,h} \log \alpha_{e,h},

    in nats, with :math:`0 \log 0 = 0`. It is :math:`0` when a node
    attends to one edge only and :math:`\log d_i` (see
    :func:`uniform_entropy`) when it attends to its :math:`d_i` incoming
    edges uniformly. Nodes without incoming edges get :obj:`NaN`.

    Args:
        edge_index (torch.Tensor): The edges, of shape :obj:`[2, E]`, as
            returned with the attention weights (self-loops included).
        alpha (torch.Tensor): The attention weights, of shape :obj:`[E, H]`
            (or :obj:`[E]` for one head).
        num_nodes (int, optional): The number of nodes.
            (default: :obj:`edge_index.max() + 1`)

    Returns:
        torch.Tensor: The entropies, of shape :obj:`[num_nodes, H]`.

    Example:
        >>> edge_index = torch.tensor([[0, 1, 2], [2, 2, 2]])
        >>> alpha = torch.tensor([[0.5], [0.5], [0.0]])
        >>> attention_entropy(edge_index, alpha)[2]  # log(2)
        tensor([0.6931])
    """
    edge_index = _check_edge_index(edge_index)
    alpha = _check_alpha(alpha, edge_index.size(1))
    num_nodes = _num_nodes(edge_index, num_nodes)
    dst = edge_index[1]
    out = alpha.new_zeros(num_nodes, alpha.size(1))
    out.index_add_(0, dst, -torch.xlogy(alpha, alpha))
    degree = torch.bincount(dst, minlength=num_nodes)
    out[degree == 0] = float('nan')
    return out


def uniform_entropy(edge_index: Tensor,
                    num_nodes: Optional[int] = None) -> Tensor:
    r"""The entropy of uniform attention over each node's incoming edges,
    :math:`\log d_i` for in-degree :math:`d_i` (duplicate edges counted
    each time, as the softmax counts them): the baseline that
    :func:`attention_entropy` is compared with. Nodes without incoming
    edges get :obj:`NaN`.

    Args:
        edge_index (torch.Tensor): The edges, of shape :obj:`[2, E]`.
        num_nodes (int, optional): The number of nodes.
            (default: :obj:`edge_index.max() + 1`)

    Returns:
        torch.Tensor: The entropies (float), of shape :obj:`[num_nodes]`.
    """
    edge_index = _check_edge_index(edge_index)
    num_nodes = _num_nodes(edge_index, num_nodes)
    degree = torch.bincount(edge_index[1], minlength=num_nodes)
    out = degree.to(torch.get_default_dtype()).log()
    out[degree == 0] = float('nan')
    return out


def _import_plotting() -> Tuple[Any, Any]:
    try:
        import matplotlib.cm
        import matplotlib.colors
        import matplotlib.figure
        import networkx
    except ImportError as e:
        raise ImportError(
            f"pyg_gat_ext.visualize's plotting functions need matplotlib "
            f"and networkx ({e}); install them with "
            f"pip install matplotlib networkx (or pip install '.[viz]' "
            f"from a checkout of pyg-gat-ext)") from e
    return matplotlib, networkx


def _grid(fig: Any, num_panels: int, ncols: int, panel_size: Tuple[float,
                                                                   float]):
    # One axes per panel on a grid of at most `ncols` columns.
    ncols = max(1, min(ncols, num_panels))
    nrows = math.ceil(num_panels / ncols)
    if fig is None:
        from matplotlib.figure import Figure
        fig = Figure(figsize=(panel_size[0] * ncols, panel_size[1] * nrows),
                     layout='constrained')
    axes = [fig.add_subplot(nrows, ncols, i + 1) for i in range(num_panels)]
    return fig, axes


def plot_neighbourhood(
    node: int,
    edge_index: Tensor,
    alpha: Tensor,
    heads: Optional[Sequence[int]] = None,
    num_nodes: Optional[int] = None,
    y: Optional[Tensor] = None,
    ncols: int = 4,
    cmap: str = 'viridis',
    fig: Any = None,
) -> Any:
    r"""Draws the attention that :obj:`node` pays to its incoming edges,
    one panel per head: the node in the centre, its in-neighbours around
    it, each edge's width proportional to its attention weight and its
    colour set by the weight on one scale across heads (spanning the
    weights drawn, shown by a colour bar). The self-loop's weight sets the
    width and colour of the node's outline. The weights of duplicate edges
    from one neighbour are added up. Each panel's title gives the head's
    attention entropy and the uniform baseline :math:`\log d` for
    :math:`d` incoming edges.

    Args:
        node (int): The node whose incoming attention is drawn.
        edge_index (torch.Tensor): The edges, of shape :obj:`[2, E]`, as
            returned with the attention weights (self-loops included).
        alpha (torch.Tensor): The attention weights, of shape :obj:`[E, H]`
            (or :obj:`[E]` for one head).
        heads (List[int], optional): The heads to draw.
            (default: :obj:`None`, all heads)
        num_nodes (int, optional): The number of nodes.
            (default: :obj:`edge_index.max() + 1`)
        y (torch.Tensor, optional): Node labels of shape :obj:`[num_nodes]`
            that colour the nodes (e.g. the classes of Cora).
            (default: :obj:`None`)
        ncols (int, optional): Panels per row. (default: :obj:`4`)
        cmap (str, optional): The matplotlib colour map of the edges.
            (default: :obj:`'viridis'`)
        fig (matplotlib.figure.Figure, optional): A figure to draw into
            (it should be empty). (default: :obj:`None`, a new figure)

    Returns:
        matplotlib.figure.Figure: The figure, with one axes per head (and
        one colour bar).
    """
    matplotlib, nx = _import_plotting()
    edge_index = _check_edge_index(edge_index)
    alpha = _check_alpha(alpha, edge_index.size(1))
    num_nodes = _num_nodes(edge_index, num_nodes)
    heads = _heads(heads, alpha.size(1))
    node = int(node)
    if not 0 <= node < num_nodes:
        raise ValueError(f"'node' {node} out of range for {num_nodes} nodes")
    if y is not None and (y.dim() != 1 or y.numel() != num_nodes):
        raise ValueError(f"'y' must have shape [{num_nodes}] (got "
                         f"{list(y.shape)})")
    mask = edge_index[1] == node
    if not bool(mask.any()):
        raise ValueError(f"node {node} has no incoming edges: there is no "
                         f"attention to draw")
    src = edge_index[0, mask]
    neighbours, inverse = torch.unique(src, return_inverse=True)
    # Weight per (neighbour, head), duplicate edges added up.
    weight = alpha.new_zeros(neighbours.numel(), alpha.size(1))
    weight.index_add_(0, inverse, alpha[mask])
    weight = weight[:, heads].double()

    entropy = attention_entropy(edge_index, alpha, num_nodes)[node]
    baseline = math.log(int(mask.sum()))

    graph = nx.DiGraph()
    graph.add_node(node)
    others = [int(j) for j in neighbours if int(j) != node]
    graph.add_nodes_from(others)
    edges = [(int(j), node) for j in neighbours if int(j) != node]
    graph.add_edges_from(edges)
    is_edge = (neighbours != node).tolist()
    # A drawn self-loop is too small to read: the weight of the self-loop
    # (GATConv adds one by default) sets the centre node's outline instead.
    self_row = [i for i, o in enumerate(is_edge) if not o]
    # The node in the centre, the neighbours on a circle around it.
    pos = nx.shell_layout(graph, [[node], others] if others else [[node]])

    if y is not None:
        cmap_nodes = matplotlib.colormaps['tab10']
        labels = y.tolist()
        node_color = [cmap_nodes(labels[n] % 10) for n in graph.nodes]
    else:
        node_color = ['tab:orange' if n == node else 'lightgray'
                      for n in graph.nodes]
    # Widths are proportional to the weights; the colours span the range
    # of the weights drawn, as learnt attention is often close to uniform.
    vmin, vmax = float(weight.min()), max(float(weight.max()), 1e-12)
    norm = matplotlib.colors.Normalize(vmin=min(vmin, vmax * (1 - 1e-6)),
                                       vmax=vmax)
    edge_cmap = matplotlib.colormaps[cmap]
    font_size = 6 if len(others) <= 20 else 4

    def width(v):
        return 0.5 + 5.5 * v / vmax

    fig, axes = _grid(fig, len(heads), ncols, (3.2, 3.2))
    for ax, k, h in zip(axes, range(len(heads)), heads, strict=True):
        w = weight[:, k].tolist()
        w_edges = [v for v, o in zip(w, is_edge, strict=True) if o]
        outline, outline_width = ['black'], [0.5]
        if self_row:
            outline = [edge_cmap(norm(w[self_row[0]]))]
            outline_width = [width(w[self_row[0]])]
        nx.draw_networkx_nodes(
            graph, pos, ax=ax, node_color=node_color,
            node_size=[500 if n == node else 300 for n in graph.nodes],
            edgecolors=outline + ['black'] * len(others),
            linewidths=outline_width + [0.5] * len(others))
        nx.draw_networkx_labels(graph, pos, ax=ax, font_size=font_size)
        if edges:
            nx.draw_networkx_edges(
                graph, pos, ax=ax, edgelist=edges,
                width=[width(v) for v in w_edges],
                edge_color=[edge_cmap(norm(v)) for v in w_edges],
                arrows=True, arrowsize=8, node_size=500)
        ax.set_title(f'head {h}: entropy {float(entropy[h]):.3f} '
                     f'(uniform {baseline:.3f})', fontsize=9)
        ax.set_axis_off()
        ax.margins(0.15)
    mappable = matplotlib.cm.ScalarMappable(norm=norm, cmap=edge_cmap)
    fig.colorbar(mappable, ax=axes, label='attention weight', shrink=0.8)
    fig.suptitle(f'attention into node {node} from {len(others)} '
                 f'neighbour(s)' + (' and itself (outline)'
                                    if self_row else ''))
    return fig


def plot_entropy_histograms(
    edge_index: Tensor,
    alpha: Tensor,
    heads: Optional[Sequence[int]] = None,
    num_nodes: Optional[int] = None,
    bins: int = 30,
    ncols: int = 4,
    fig: Any = None,
) -> Any:
    r"""Histograms of the nodes' attention entropies
    (:func:`attention_entropy`), one panel per head, each against the
    entropies that uniform attention would have (:func:`uniform_entropy`,
    drawn as an outline). Heads whose histogram sits left of the baseline
    attend selectively; a head that matches it averages its neighbours
    as a GCN would. Nodes without incoming edges are left out.

    Args:
        edge_index (torch.Tensor): The edges, of shape :obj:`[2, E]`, as
            returned with the attention weights (self-loops included).
        alpha (torch.Tensor): The attention weights, of shape :obj:`[E, H]`
            (or :obj:`[E]` for one head).
        heads (List[int], optional): The heads to draw.
            (default: :obj:`None`, all heads)
        num_nodes (int, optional): The number of nodes.
            (default: :obj:`edge_index.max() + 1`)
        bins (int, optional): The number of histogram bins, shared by all
            panels. (default: :obj:`30`)
        ncols (int, optional): Panels per row. (default: :obj:`4`)
        fig (matplotlib.figure.Figure, optional): A figure to draw into
            (it should be empty). (default: :obj:`None`, a new figure)

    Returns:
        matplotlib.figure.Figure: The figure, with one axes per head.
    """
    _import_plotting()
    edge_index = _check_edge_index(edge_index)
    alpha = _check_alpha(alpha, edge_index.size(1))
    num_nodes = _num_nodes(edge_index, num_nodes)
    heads = _heads(heads, alpha.size(1))
    if bins < 1:
        raise ValueError(f"'bins' must be positive (got {bins})")
    entropy = attention_entropy(edge_index, alpha, num_nodes)
    baseline = uniform_entropy(edge_index, num_nodes)
    has_edges = ~torch.isnan(baseline)
    if not bool(has_edges.any()):
        raise ValueError('no node has incoming edges: there is no attention '
                         'to draw')
    entropy = entropy[has_edges].double()
    baseline = baseline[has_edges].double()
    top = max(float(baseline.max()), float(entropy[:, heads].max()), 1e-6)
    edges = torch.linspace(0.0, top * 1.02, bins + 1).tolist()

    fig, axes = _grid(fig, len(heads), ncols, (3.2, 2.6))
    for i, (ax, h) in enumerate(zip(axes, heads, strict=True)):
        ax.hist(entropy[:, h].tolist(), bins=edges, color='tab:blue',
                alpha=0.7, label='attention')
        ax.hist(baseline.tolist(), bins=edges, histtype='step',
                color='black', linewidth=1.2, label='uniform')
        ax.set_title(f'head {h}: mean {float(entropy[:, h].mean()):.3f} '
                     f'(uniform {float(baseline.mean()):.3f})', fontsize=9)
        ax.set_xlabel('entropy (nats)', fontsize=8)
        ax.tick_params(labelsize=7)
        if i % max(1, min(ncols, len(heads))) == 0:
            ax.set_ylabel('nodes', fontsize=8)
    axes[0].legend(fontsize=7)
    return fig
