r"""Graphs and input forms shared by the parity tests."""
import importlib.util
import os.path as osp

import torch
from torch_geometric import EdgeIndex
from torch_geometric.typing import WITH_TORCH_SPARSE, SparseTensor
from torch_geometric.utils import (
    to_edge_index,
    to_torch_coo_tensor,
    to_torch_csc_tensor,
    to_torch_csr_tensor,
)


def make_graph(kind, num_src, num_dst, seed=0):
    r"""An :obj:`edge_index` of the given kind between :obj:`num_src` source
    and :obj:`num_dst` target nodes. Each kind reaches one case of the layer:

    - ``random``: unsorted random edges (may contain loops and duplicates);
    - ``isolated``: the last nodes have no edge at all;
    - ``duplicates``: every edge appears two or three times;
    - ``self_loops``: existing self-loops that the layer must replace;
    - ``sorted``: sorted by target, the CSR order of a CSC adjacency;
    - ``empty``: no edges.
    """
    g = torch.Generator().manual_seed(seed)
    num_edges = 3 * max(num_src, num_dst)
    if kind == 'empty':
        return torch.empty(2, 0, dtype=torch.long)
    if kind == 'isolated':
        src = torch.randint(0, max(num_src - 2, 1), (num_edges, ), generator=g)
        dst = torch.randint(0, max(num_dst - 2, 1), (num_edges, ), generator=g)
        return torch.stack([src, dst])
    src = torch.randint(0, num_src, (num_edges, ), generator=g)
    dst = torch.randint(0, num_dst, (num_edges, ), generator=g)
    edge_index = torch.stack([src, dst])
    if kind == 'duplicates':
        edge_index = torch.cat([edge_index, edge_index, edge_index[:, ::2]],
                               dim=1)
        perm = torch.randperm(edge_index.size(1), generator=g)
        edge_index = edge_index[:, perm]
    elif kind == 'self_loops':
        num_loops = min(num_src, num_dst)
        loops = torch.arange(0, num_loops, 2).repeat(2, 1)
        edge_index = torch.cat([loops, edge_index], dim=1)
    elif kind == 'sorted':
        edge_index = edge_index[:, edge_index[1].argsort(stable=True)]
    return edge_index


GRAPHS = ['random', 'isolated', 'duplicates', 'self_loops', 'sorted', 'empty']

#: Every form `edge_index` can take. Sparse forms hold the *transposed*
#: adjacency, `[num_dst, num_src]`, as PyG expects.
FORMS = [
    'tensor', 'edge_index', 'edge_index_sorted', 'coo', 'csr', 'csc',
    'sparse_tensor'
]


def to_form(form, edge_index, edge_attr, num_src, num_dst):
    r"""Converts :obj:`edge_index` (and its :obj:`edge_attr`) to
    :obj:`form`. Returns the new :obj:`(edge_index, edge_attr)`; sparse forms
    may merge duplicate edges, and their :obj:`edge_attr` follows the order
    of the sparse values."""
    size = (num_dst, num_src)
    if form == 'tensor':
        return edge_index, edge_attr
    if form == 'edge_index':
        return EdgeIndex(edge_index, sparse_size=(num_src, num_dst)), edge_attr
    if form == 'edge_index_sorted':
        ei = EdgeIndex(edge_index, sparse_size=(num_src, num_dst))
        ei, perm = ei.sort_by('col', stable=True)
        return ei, None if edge_attr is None else edge_attr[perm]
    if form == 'sparse_tensor':
        if not WITH_TORCH_SPARSE:
            return None
        adj = SparseTensor(row=edge_index[1], col=edge_index[0],
                           value=edge_attr, sparse_sizes=size)
        return adj, adj.storage.value()
    convert = {
        'coo': to_torch_coo_tensor,
        'csr': to_torch_csr_tensor,
        'csc': to_torch_csc_tensor,
    }[form]
    # Sparse tensors reorder (and may merge) the edges; carry the edge
    # features as values to keep them with their edges.
    value = None
    if edge_attr is not None:
        value = edge_attr.view(-1, 1) if edge_attr.dim() == 1 else edge_attr
    adj = convert(edge_index.flip(0), value, size)
    if edge_attr is None:
        return adj, None
    _, value = to_edge_index(adj)
    return adj, value.view(-1) if edge_attr.dim() == 1 else value


def edge_index_of(adj):
    r"""The plain :obj:`[2, E]` edge indices of any form, in its own edge
    order."""
    if isinstance(adj, SparseTensor):
        row, col, _ = adj.coo()
        return torch.stack([col, row])
    if adj.layout == torch.sparse_coo:
        # Not `to_edge_index`: it marks `adj` coalesced in place, which
        # bumps the version of indices saved for an earlier backward.
        return adj.coalesce().indices().flip(0)
    if adj.layout != torch.strided:
        return to_edge_index(adj)[0].flip(0)
    return adj.as_subclass(torch.Tensor)


def dense_attention(edge_index, alpha, num_src, num_dst):
    r"""Attention weights as a dense :obj:`[num_dst, num_src, heads]` tensor,
    to compare forms whose edge orders differ."""
    out = alpha.new_zeros(num_dst, num_src, alpha.size(-1))
    return out.index_put_((edge_index[1], edge_index[0]), alpha,
                          accumulate=True)


def load_script(*parts):
    r"""A script of the repository (``examples/`` and ``benchmarks/`` are
    no packages), imported by its path relative to the root."""
    path = osp.join(osp.dirname(__file__), '..', *parts)
    name = '_script_' + osp.splitext(parts[-1])[0]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


#: Tolerances of a kernel against the reference, per dtype.
KERNEL_TOL = {
    torch.float64: dict(atol=1e-12, rtol=1e-12),
    torch.float32: dict(atol=1e-4, rtol=1e-5),
    torch.bfloat16: dict(atol=5e-2, rtol=2e-2),
}


def across_thread_counts(fn):
    r"""The results of :obj:`fn()` with 1 thread and with as many as the
    machine has (at least 2), the thread count restored after."""
    threads = torch.get_num_threads()
    results = []
    try:
        for n in (1, max(threads, 2)):
            torch.set_num_threads(n)
            results.append(fn())
    finally:
        torch.set_num_threads(threads)
    return results
