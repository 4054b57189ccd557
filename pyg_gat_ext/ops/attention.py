r"""Fused GAT attention: the graph structure it runs on, its cache, and the
public :func:`gat_attention` function over the
``pyg_gat_ext::gat_attention`` operator."""
import threading
import weakref
from collections import OrderedDict
from typing import List, NamedTuple, Optional, Tuple

import torch
from torch import Tensor
from torch.utils.weak import WeakIdKeyDictionary
from torch_geometric import EdgeIndex, is_compiling

from pyg_gat_ext.ops._library import kernel_backend


class GATGraph(NamedTuple):
    r"""The edges of a graph grouped twice, as :func:`gat_attention` needs
    them, with the names of PyG's ``SparseTensor`` of ``adj_t`` (rows are
    targets): by target node (CSR: target :obj:`i` owns positions
    :obj:`rowptr[i]` to :obj:`rowptr[i + 1] - 1`, position :obj:`p` holds
    the edge :obj:`csr_eid[p]` from source :obj:`col[p]`) and by source node
    (CSC: :obj:`colptr`, :obj:`row`, :obj:`csc_eid`). Edges keep their input
    order within each group. Pointers are int64; the other indices are int32
    when every index fits, which halves the memory they take."""
    rowptr: Tensor
    col: Tensor
    csr_eid: Tensor
    colptr: Tensor
    row: Tensor
    csc_eid: Tensor

    @property
    def num_src(self) -> int:
        return self.colptr.numel() - 1

    @property
    def num_dst(self) -> int:
        return self.rowptr.numel() - 1

    @property
    def num_edges(self) -> int:
        return self.col.numel()


def group_edges(
        src: Tensor, dst: Tensor, num_src: int, num_dst: int
) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    r"""The fields of :func:`gat_graph`'s :class:`GATGraph`, as a tuple
    (TorchScript-compatible; no well-formedness record is kept)."""
    segment_csr = torch.ops.pyg_gat_ext.segment_csr
    rowptr, csr_eid = segment_csr(dst, num_dst)
    colptr, csc_eid = segment_csr(src, num_src)
    small = max(src.numel(), num_src, num_dst) <= 2147483647  # int32
    dtype = torch.int32 if small else torch.long
    return (rowptr, src.index_select(0, csr_eid).to(dtype),
            csr_eid.to(dtype), colptr, dst.index_select(0, csc_eid).to(dtype),
            csc_eid.to(dtype))


def gat_graph(src: Tensor, dst: Tensor, num_src: int,
              num_dst: int) -> GATGraph:
    r"""Groups the edges :obj:`src[k] -> dst[k]` by target and by source
    node (two stable counting sorts) into a :class:`GATGraph`. Indices must
    lie in :obj:`[0, num_src)` and :obj:`[0, num_dst)`; edge :obj:`k` keeps
    the id :obj:`k`."""
    graph = GATGraph(*group_edges(src, dst, num_src, num_dst))
    _remember_checked(graph)
    return graph


# The graphs known to be well formed (built by gat_graph() or checked by
# _check_graph()), by their `src` tensor, with the fingerprint they had then.
_checked = WeakIdKeyDictionary()


def _fingerprint(graph: GATGraph) -> Tuple:
    # Storage, shape and in-place modification count of every tensor.
    return tuple((t.data_ptr(), tuple(t.shape), t._version) for t in graph)


def _remember_checked(graph: GATGraph) -> None:
    # Inference tensors count no in-place modification, so a graph of them
    # is checked at every use.
    if not is_compiling() and not any(t.is_inference() for t in graph):
        _checked[graph.col] = _fingerprint(graph)


def _check_graph(graph: GATGraph) -> None:
    # A hand-made graph must not send a kernel out of bounds: pointers run
    # from 0 to E without decreasing, indices lie in range (one host
    # synchronisation for all the facts). Who checks a graph's contents:
    # - the C++ kernels, in `check_graph` (csrc/attention.h), at
    #   every call and with the same errors, so this is skipped for them;
    # - the Triton kernels check nothing: they rely on this check, and on
    #   `gat_graph()` for the graphs the layer builds (remembered below);
    # - the reference relies on it for clear errors (its indexing is
    #   bounds-checked by torch either way).
    if (not graph.col.is_inference()
            and _checked.get(graph.col) == _fingerprint(graph)):
        return
    num_src, num_dst, num_edges = graph.num_src, graph.num_dst, graph.num_edges
    if graph.rowptr.dtype != torch.long or graph.colptr.dtype != torch.long:
        raise TypeError(f"gat_attention: 'graph.rowptr' and 'graph.colptr' "
                        f"must be int64 (got {graph.rowptr.dtype} and "
                        f"{graph.colptr.dtype})")
    if graph.rowptr.dim() != 1 or graph.colptr.dim() != 1 or num_dst < 0:
        raise ValueError("gat_attention: 'graph.rowptr' and 'graph.colptr' "
                         "must be non-empty 1-D pointers")
    bounds = {'col': num_src, 'csr_eid': num_edges, 'row': num_dst,
              'csc_eid': num_edges}
    facts = []
    for p in (graph.rowptr, graph.colptr):
        facts += [p[0], p[-1], (p.diff() < 0).sum()]
    for name in bounds:
        t = getattr(graph, name)
        if t.numel() > 0:
            facts += [t.min().long(), t.max().long()]
    values = torch.stack(facts).tolist()
    for k, name in enumerate(('rowptr', 'colptr')):
        first, last, drops = values[3 * k:3 * k + 3]
        if first != 0 or last != num_edges or drops != 0:
            raise ValueError(
                f"gat_attention: 'graph.{name}' must start at 0, end at the "
                f"number of edges ({num_edges}) and never decrease (got "
                f"{name}[0]={first}, {name}[-1]={last}, {drops} decreasing "
                f"steps)")
    values = values[6:]
    for name, bound in bounds.items() if num_edges > 0 else ():
        low, high = values[:2]
        values = values[2:]
        if low < 0 or high >= bound:
            raise IndexError(f"gat_attention: 'graph.{name}' holds indices "
                             f"in [{low}, {high}], out of range for "
                             f"[0, {bound})")
    _remember_checked(graph)


class _GraphCache:
    r"""The :class:`GATGraph` of the last few :obj:`edge_index` tensors.

    An entry is found by the tensor's identity and is valid only while the
    tensor is alive, unmodified (same version counter, storage, shape and
    strides) and used with the same node counts and flow. It holds the
    tensor weakly and goes when the tensor does, and at most
    :obj:`maxsize` entries are kept (least recently used first out), so a
    stream of mini-batch graphs never grows memory."""
    def __init__(self, maxsize: int = 8):
        self.maxsize = maxsize
        self._entries: 'OrderedDict[int, tuple]' = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def get(self, edge_index: Tensor, num_src: int, num_dst: int,
            flow: str) -> GATGraph:
        # A subclass (e.g. `EdgeIndex`) is keyed by its own object and
        # described by its plain data.
        key = id(edge_index)
        plain = edge_index
        if isinstance(plain, EdgeIndex):
            plain = plain.as_tensor()  # Its data, not its wrapper.
        elif type(plain) is not Tensor:
            plain = plain.as_subclass(Tensor)
        j, i = (0, 1) if flow == 'source_to_target' else (1, 0)
        if plain.is_inference():
            # No version counter to tell an in-place change: not cached.
            return gat_graph(plain[j], plain[i], num_src, num_dst)
        signature = (plain._version, plain.data_ptr(), tuple(plain.shape),
                     plain.stride(), plain.device, num_src, num_dst, flow)
        with self._lock:
            entry = self._entries.get(key)
            if (entry is not None and entry[0]() is edge_index
                    and entry[1] == signature):
                self._entries.move_to_end(key)
                return entry[2]
        graph = gat_graph(plain[j], plain[i], num_src, num_dst)

        def forget(ref, key=key):
            with self._lock:
                entry = self._entries.get(key)
                if entry is not None and entry[0] is ref:
                    del self._entries[key]

        with self._lock:
            self._entries[key] = (weakref.ref(edge_index, forget), signature,
                                  graph)
            self._entries.move_to_end(key)
            while len(self._entries) > self.maxsize:
                self._entries.popitem(last=False)
        return graph


#: The cache :func:`cached_gat_graph` uses.
graph_cache = _GraphCache()


def cached_gat_graph(edge_index: Tensor, num_src: int, num_dst: int,
                     flow: str = 'source_to_target') -> GATGraph:
    r"""The :class:`GATGraph` of :obj:`edge_index` (source nodes in row 0
    unless :obj:`flow` is :obj:`'target_to_source'`), built once per graph
    and then taken from a small cache, so that repeated forward passes on
    one graph do not sort again. While compiling, it is built in the graph
    instead."""
    if is_compiling():
        j, i = (0, 1) if flow == 'source_to_target' else (1, 0)
        return gat_graph(edge_index[j], edge_index[i], num_src, num_dst)
    return graph_cache.get(edge_index, num_src, num_dst, flow)


class GATAttention(NamedTuple):
    r"""The outputs of :func:`gat_attention`."""
    out: Tensor
    lse: Tensor
    alpha: Optional[Tensor]


def _check(name: str, t: Tensor, shape: Tuple[int, ...], x: Tensor,
           op: str = 'gat_attention') -> None:
    if t.dim() != len(shape) or any(
            want >= 0 and have != want
            for have, want in zip(t.shape, shape, strict=True)):
        want = ['*' if s < 0 else s for s in shape]
        raise ValueError(f"{op}: expected '{name}' of shape {want} "
                         f"(got {list(t.shape)})")
    if not t.is_floating_point() or t.device != x.device:
        raise TypeError(f"{op}: expected '{name}' to be a floating "
                        f"point tensor on {x.device} like the features "
                        f"(got {t.dtype} on {t.device})")


def _check_features(op: str, name: str, x: Tensor) -> None:
    # The source rows every attention op aggregates: [N_src, H, C].
    if x.dim() != 3:
        raise ValueError(f"{op}: expected '{name}' of shape [N_src, heads, "
                         f"channels] (got {list(x.shape)})")
    if not x.is_floating_point():
        raise TypeError(f"{op}: expected floating point '{name}' (got "
                        f"{x.dtype})")


def _check_graph_call(op: str, x: Tensor, graph: GATGraph, num_loops: int,
                      dropout: float) -> None:
    # What both attention ops check of the graph and their scalars.
    num_src, num_dst = graph.num_src, graph.num_dst
    if not 0 <= num_loops <= min(num_src, num_dst):
        raise ValueError(f"{op}: 'num_loops' ({num_loops}) must lie "
                         f"in [0, min(N_src, N_dst) = "
                         f"{min(num_src, num_dst)}]")
    if not 0.0 <= dropout <= 1.0:
        raise ValueError(f"{op}: 'dropout' must lie in [0, 1] (got "
                         f"{dropout})")
    for name, t in zip(GATGraph._fields, graph, strict=True):
        if t.device != x.device or t.dtype not in (torch.int32, torch.long):
            raise TypeError(f"{op}: 'graph.{name}' must be an int32 "
                            f"or int64 tensor on {x.device} (got {t.dtype} "
                            f'on {t.device})')
    if any(t.numel() != graph.num_edges for t in graph[2:3] + graph[4:]):
        raise ValueError(f"{op}: the index tensors of 'graph' "
                         'differ in length; build it with gat_graph()')
    if not is_compiling() and kernel_backend(x.device) != 'cpp':
        _check_graph(graph)


def gat_attention(
    x: Tensor,
    a_src: Tensor,
    a_dst: Optional[Tensor],
    graph: GATGraph,
    edge_score: Optional[Tensor] = None,
    num_loops: int = 0,
    remove_self_loops: bool = False,
    negative_slope: float = 0.2,
    dropout: float = 0.0,
    return_attention_weights: bool = False,
    generator: Optional[torch.Generator] = None,
) -> GATAttention:
    r"""Fused GAT attention and aggregation: for every target node :math:`i`
    and head,

    .. math::
        \mathbf{out}_i = \sum_{j} \alpha_{j,i} \mathbf{x}_j, \quad
        \alpha_{j,i} = \operatorname{softmax}_{j} \left(
        \mathrm{LeakyReLU}(a^s_j + a^d_i + a^e_{j,i}) \right),

    over the edges :math:`j \to i` of :obj:`graph` and, for :math:`i <`
    :obj:`num_loops`, one implicit self-loop (edge id :obj:`E + i`), without
    ever forming the :obj:`[E, heads, channels]` messages. The backward
    recomputes the attention from the saved log-sum-exp :obj:`lse`.

    Args:
        x (torch.Tensor): Source node features :obj:`[N_src, H, C]`.
        a_src (torch.Tensor): Source attention scores :obj:`[N_src, H]`.
        a_dst (torch.Tensor, optional): Target attention scores
            :obj:`[N_dst, H]` (zero if :obj:`None`).
        graph (GATGraph): The edges, from :func:`gat_graph` or
            :func:`cached_gat_graph`. Any other graph is checked (pointers
            from 0 to E, never decreasing; every index in range) and
            raises if malformed, so that no kernel reads out of bounds: by
            the C++ kernel at every call on CPU, else on first use (one
            host synchronisation, again after an in-place change). The
            check cannot tell whether its two groupings hold the same
            edges.
        edge_score (torch.Tensor, optional): Per-edge scores
            :obj:`[E + num_loops, H]` by edge id, the implicit self-loops
            last. (default: :obj:`None`)
        num_loops (int, optional): Nodes :obj:`0, ..., num_loops - 1` get an
            implicit self-loop. (default: :obj:`0`)
        remove_self_loops (bool, optional): If set, the edges :math:`j \to
            j` of :obj:`graph` are left out, as if removed first.
            (default: :obj:`False`)
        negative_slope (float, optional): LeakyReLU angle of the negative
            slope. (default: :obj:`0.2`)
        dropout (float, optional): Dropout probability of the attention
            weights, drawn inside the kernel from a counter-based hash of
            (seed, edge id, head) with the seed from :obj:`generator` (torch's
            default generator if :obj:`None`): reproducible under
            :func:`torch.manual_seed`, regenerated in the backward, never
            stored. (default: :obj:`0.0`)
        return_attention_weights (bool, optional): If set, also returns the
            attention weights :obj:`[E + num_loops, H]` by edge id, after
            dropout (zero for left-out edges). (default: :obj:`False`)
        generator (torch.Generator, optional): CPU generator of the dropout
            seed. (default: :obj:`None`)

    :rtype: :class:`GATAttention` :obj:`(out, lse, alpha)`, with :obj:`out`
        :obj:`[N_dst, H, C]`, :obj:`lse` the per-(node, head) log-sum-exp
        of the scores :obj:`[N_dst, H]` (:math:`-\infty` without edges;
        float32 for half-precision input) and :obj:`alpha` the attention
        weights or :obj:`None`.
    """
    _check_features('gat_attention', 'x', x)
    num_src, heads = graph.num_src, x.size(1)
    num_dst, num_edges = graph.num_dst, graph.num_edges
    _check('x', x, (num_src, heads, -1), x)
    _check('a_src', a_src, (num_src, heads), x)
    if a_dst is None:
        a_dst = x.new_zeros(num_dst, heads)
    _check('a_dst', a_dst, (num_dst, heads), x)
    if edge_score is not None:
        _check('edge_score', edge_score, (num_edges + num_loops, heads), x)
    _check_graph_call('gat_attention', x, graph, num_loops, dropout)

    seed = dropout_seed(dropout, generator)
    out, lse, alpha = launch(x, a_src, a_dst, edge_score, list(graph),
                             num_loops, remove_self_loops,
                             float(negative_slope), float(dropout), seed,
                             return_attention_weights)
    return GATAttention(out, lse, alpha if return_attention_weights else None)


def dropout_seed(
        dropout: float,
        generator: Optional[torch.Generator] = None) -> Optional[Tensor]:
    r"""The two 32-bit seed words of the attention dropout mask, from
    :obj:`generator` (torch's default one if :obj:`None`), or :obj:`None`
    without dropout. TorchScript-compatible."""
    if dropout > 0.0:
        return torch.randint(0, 4294967296, (2, ), dtype=torch.long,
                             generator=generator)
    return None


def launch(x: Tensor, a_src: Tensor, a_dst: Optional[Tensor],
           edge_score: Optional[Tensor], graph: List[Tensor], num_loops: int,
           remove_self_loops: bool, negative_slope: float, dropout: float,
           seed: Optional[Tensor],
           return_attention_weights: bool) -> Tuple[Tensor, Tensor, Tensor]:
    r"""Runs the ``pyg_gat_ext::gat_attention`` operator on a graph known to
    be well formed (the fields of a :class:`GATGraph` from
    :func:`group_edges`, or checked by :func:`gat_attention`), after the
    common dtype and layout are made. Where a gradient will be taken and
    the C++ kernels run, the op also saves the statistics that spare its
    backward a pass over the edges (see ``gat_attention_stats`` in
    :mod:`pyg_gat_ext.ops._reference`); in float32 and float64 the
    backward then reads :obj:`out` too, so changing :obj:`out` in place
    before it raises autograd's error. TorchScript-compatible: the layer's
    scripted fused path calls it."""
    if a_dst is None:
        a_dst = x.new_zeros(graph[0].numel() - 1, x.size(1))
    save_stats = x.device.type == 'cpu' and torch.is_grad_enabled() and (
        x.requires_grad or a_src.requires_grad or a_dst.requires_grad or
        (edge_score is not None and edge_score.requires_grad))
    if not torch.jit.is_scripting():
        if save_stats and not is_compiling():
            save_stats = kernel_backend(x.device) == 'cpp'
    # Scores may be wider than the features (e.g. under autocast): compute
    # in the common type, as PyG's messages `alpha * x_j` do.
    dtype = torch.promote_types(torch.promote_types(x.dtype, a_src.dtype),
                                a_dst.dtype)
    if edge_score is not None:
        dtype = torch.promote_types(dtype, edge_score.dtype)
        edge_score = edge_score.to(dtype).contiguous()
    out, lse, alpha, _, _ = torch.ops.pyg_gat_ext.gat_attention(
        x.to(dtype).contiguous(), a_src.to(dtype).contiguous(),
        a_dst.to(dtype).contiguous(), edge_score, graph[0].contiguous(),
        graph[1].contiguous(), graph[2].contiguous(), graph[3].contiguous(),
        graph[4].contiguous(), graph[5].contiguous(), num_loops,
        remove_self_loops, negative_slope, dropout, seed,
        return_attention_weights, save_stats)
    return out, lse, alpha


def gatv2_attention(
    x_src: Tensor,
    x_dst: Tensor,
    att: Tensor,
    graph: GATGraph,
    edge_x: Optional[Tensor] = None,
    num_loops: int = 0,
    remove_self_loops: bool = False,
    negative_slope: float = 0.2,
    dropout: float = 0.0,
    return_attention_weights: bool = False,
    generator: Optional[torch.Generator] = None,
) -> GATAttention:
    r"""Fused GATv2 attention and aggregation (`"How Attentive are Graph
    Attention Networks?" <https://arxiv.org/abs/2105.14491>`_): for every
    target node :math:`i` and head,

    .. math::
        \mathbf{out}_i = \sum_{j} \alpha_{j,i} \mathbf{x}^s_j, \quad
        \alpha_{j,i} = \operatorname{softmax}_{j} \left( \mathbf{a}^{\top}
        \mathrm{LeakyReLU}(\mathbf{x}^d_i + \mathbf{x}^s_j +
        \mathbf{x}^e_{j,i}) \right),

    over the edges :math:`j \to i` of :obj:`graph` and the implicit
    self-loops of nodes :math:`i <` :obj:`num_loops`, computing the
    :obj:`C`-wide sums of every edge on the fly: neither they nor the
    messages are ever formed as :obj:`[E, heads, channels]` tensors. The
    backward recomputes them from the saved log-sum-exp.

    Args:
        x_src (torch.Tensor): Source node features :obj:`[N_src, H, C]`
            (PyG's :obj:`lin_l(x)`), the rows that are aggregated.
        x_dst (torch.Tensor): Target node features :obj:`[N_dst, H, C]`
            (PyG's :obj:`lin_r(x)`).
        att (torch.Tensor): The attention vector, :obj:`[H, C]` (or
            :obj:`[1, H, C]`, as PyG's parameter).
        graph (GATGraph): The edges, as for :func:`gat_attention`.
        edge_x (torch.Tensor, optional): Projected edge features
            :obj:`[E + num_loops, H, C]` by edge id, the implicit self-loops
            last. (default: :obj:`None`)

    The other arguments and the result are those of :func:`gat_attention`.
    """
    op = 'gatv2_attention'
    _check_features(op, 'x_src', x_src)
    num_src, heads, channels = graph.num_src, x_src.size(1), x_src.size(2)
    _check('x_src', x_src, (num_src, heads, channels), x_src, op)
    _check('x_dst', x_dst, (graph.num_dst, heads, channels), x_src, op)
    if att.dim() == 3 and att.size(0) == 1:
        att = att[0]
    _check('att', att, (heads, channels), x_src, op)
    if edge_x is not None:
        _check('edge_x', edge_x,
               (graph.num_edges + num_loops, heads, channels), x_src, op)
    _check_graph_call(op, x_src, graph, num_loops, dropout)
    seed = dropout_seed(dropout, generator)
    out, lse, alpha = launch_v2(x_src, x_dst, att, edge_x, list(graph),
                                num_loops, remove_self_loops,
                                float(negative_slope), float(dropout), seed,
                                return_attention_weights)
    return GATAttention(out, lse, alpha if return_attention_weights else None)


def launch_v2(x_src: Tensor, x_dst: Tensor, att: Tensor,
              edge_x: Optional[Tensor], graph: List[Tensor], num_loops: int,
              remove_self_loops: bool, negative_slope: float, dropout: float,
              seed: Optional[Tensor], return_attention_weights: bool
              ) -> Tuple[Tensor, Tensor, Tensor]:
    r"""Runs the ``pyg_gat_ext::gatv2_attention`` operator as :func:`launch`
    runs GAT's: on a well-formed graph, in the common dtype of the inputs,
    contiguous, :obj:`att` as :obj:`[H, C]`. TorchScript-compatible."""
    dtype = torch.promote_types(torch.promote_types(x_src.dtype, x_dst.dtype),
                                att.dtype)
    if edge_x is not None:
        dtype = torch.promote_types(dtype, edge_x.dtype)
        edge_x = edge_x.to(dtype).contiguous()
    att = att.reshape(x_src.size(1), x_src.size(2))
    return torch.ops.pyg_gat_ext.gatv2_attention(
        x_src.to(dtype).contiguous(), x_dst.to(dtype).contiguous(),
        att.to(dtype).contiguous(), edge_x, graph[0].contiguous(),
        graph[1].contiguous(), graph[2].contiguous(), graph[3].contiguous(),
        graph[4].contiguous(), graph[5].contiguous(), num_loops,
        remove_self_loops, negative_slope, dropout, seed,
        return_attention_weights)
