r"""A wide random sweep of :class:`pyg_gat_ext.GATConv` against PyG's layer
on both paths: every input form of :obj:`edge_index`, bipartite or not,
:obj:`x_dst=None`, :obj:`size` given in full, in part or not at all, edge
features of every shape and :obj:`fill_value`, empty graphs, more targets
or more sources.

Where PyG returns a result, ours must equal it (output, the returned edges
in PyG's order, attention weights, every gradient). Where PyG raises, ours
must either match PyG on the same graph given as a plain edge list (the
documented cases where we compute what PyG cannot) or raise a clear
:obj:`GATConv:` error itself; a crash or a silently different count is a
failure either way."""
import random

import pytest
import torch
import torch_geometric.nn as pyg_nn
from torch_geometric import EdgeIndex
from torch_geometric.typing import WITH_TORCH_SPARSE, SparseTensor

from pyg_gat_ext import GATConv
from tests.conftest import TOL
from tests.helpers import dense_attention, edge_index_of, make_graph, to_form
from tests.nn.test_gat_conv_parity import assert_grads_close, grads, run

FORMS = ['tensor', 'edge_index', 'edge_index_no_size', 'edge_index_sorted',
         'coo', 'csr', 'csc', 'sparse_tensor']
GRAPHS = ['random', 'isolated', 'duplicates', 'self_loops', 'sorted',
          'empty']


def _case(rng):
    r"""One random configuration: layer options and the input's shape."""
    bipartite = rng.random() < 0.5
    edge_dim = rng.choice([None, None, 1, 3])
    fill_value = rng.choice(['mean', 'add', 'min', 'max', 'mul', 1.5,
                             'tensor'])
    cfg = dict(heads=rng.choice([1, 2, 3]), concat=rng.random() < 0.5,
               negative_slope=rng.choice([0.2, 0.05]),
               add_self_loops=rng.random() < 0.7, edge_dim=edge_dim,
               fill_value=fill_value, bias=rng.random() < 0.7,
               residual=rng.random() < 0.3)
    num_src = rng.randint(1, 9)
    num_dst = rng.randint(1, 9) if bipartite else num_src
    return dict(
        bipartite=bipartite, cfg=cfg, num_src=num_src, num_dst=num_dst,
        # The target features: given, or `None` (a sampled block's form).
        x_dst=rng.choice(['given', 'given', 'none']) if bipartite else
        rng.choice(['tensor', 'tensor', 'pair', 'pair_none']),
        size=rng.choice([None, None, 'full', 'dst', 'src']),
        form=rng.choice(FORMS), graph=rng.choice(GRAPHS),
        attr_1d=edge_dim == 1 and rng.random() < 0.5,
        out_channels=rng.randint(1, 4))


def _inputs(case, dtype, seed):
    r"""The layer input of a case: :obj:`(x, adj, edge_attr, size)`, where
    :obj:`edge_attr` is :obj:`None` for sparse forms (carried as values)."""
    g = torch.Generator().manual_seed(seed)
    num_src, num_dst = case['num_src'], case['num_dst']
    width = (3, 5) if case['bipartite'] else (3, 3)
    x_src = torch.randn(num_src, width[0], generator=g, dtype=dtype)
    x_dst = torch.randn(num_dst, width[1], generator=g, dtype=dtype)
    kind = case['x_dst']
    if kind == 'tensor':
        x = x_src.requires_grad_()
    elif kind in ('given', 'pair'):
        x = (x_src.requires_grad_(), x_dst.requires_grad_())
    else:
        x = (x_src.requires_grad_(), None)
    edge_index = make_graph(case['graph'], num_src, num_dst, seed=seed)
    edge_attr = None
    edge_dim = case['cfg']['edge_dim']
    if edge_dim is not None:
        shape = [edge_index.size(1)] + ([] if case['attr_1d'] else
                                        [edge_dim])
        edge_attr = torch.randn(shape, generator=g, dtype=dtype)
    form = case['form']
    if form == 'edge_index_no_size':
        adj = EdgeIndex(edge_index)
    else:
        adj, edge_attr = to_form(form, edge_index, edge_attr, num_src,
                                 num_dst)
    if form in ('coo', 'csr', 'csc', 'sparse_tensor'):
        edge_attr = None
    if edge_attr is not None:
        edge_attr.requires_grad_()
    size = {
        None: None,
        'full': (num_src, num_dst),
        'dst': (None, num_dst),
        'src': (num_src, None),
    }[case['size']]
    return x, adj, edge_attr, size


def _layers(case, dtype, seed, fused):
    cfg = dict(case['cfg'])
    if cfg['fill_value'] == 'tensor':
        edge_dim = cfg['edge_dim'] or 1
        cfg['fill_value'] = torch.arange(edge_dim, dtype=dtype) / 3.0 - 0.2
    in_channels = (3, 5) if case['bipartite'] else 3
    torch.manual_seed(seed)
    ref = pyg_nn.GATConv(in_channels, case['out_channels'], **cfg)
    ours = GATConv(in_channels, case['out_channels'], fused=fused, **cfg)
    ours.load_state_dict(ref.state_dict())
    return ref.to(dtype), ours.to(dtype)


def _plain(adj):
    r"""The plain :obj:`[2, E]` edge list of any form, with the features a
    sparse form carries as its values (or :obj:`None`)."""
    plain = edge_index_of(adj)
    if isinstance(plain, EdgeIndex):
        plain = plain.as_tensor()
    value = None
    if isinstance(adj, SparseTensor):
        value = adj.storage.value()
    elif adj.layout != torch.strided:
        value = adj.values() if adj.layout != torch.sparse_coo else (
            adj.coalesce().values())
    return plain, value


def _grad_tol(ref_grads, dtype):
    r"""The gradient tolerance: absolute in float64; in float32 relative to
    the largest gradient, since a gradient that cancels to about zero (e.g.
    :obj:`att_src` when every edge leaves one source node, a shift common
    to each softmax) is float32 rounding noise of that size on either
    side."""
    tol = dict(TOL[dtype])
    if dtype == torch.float32:
        scale = max([1.0] + [
            g.abs().max().item() for g in list(ref_grads[0]) +
            list(ref_grads[1].values()) if g is not None and g.numel() > 0
        ])
        tol['atol'] *= scale
    return tol


def check_case(case, dtype, seed, fused):
    tol = TOL[dtype]
    ref, ours = _layers(case, dtype, seed, fused)
    x, adj, edge_attr, size = _inputs(case, dtype, seed)
    pyg_error = None
    if (case['form'].startswith('edge_index') and isinstance(x, tuple)
            and x[1] is None and (size is not None
                                  or case['form'] != 'edge_index_no_size')):
        # An `EdgeIndex` with `x_dst=None`: PyG's message passing ignores
        # `size` (a row per source node unless the sparse size says
        # otherwise), and its self-loops follow `size` or the source count,
        # past the sparse size. Ours takes the target count from `size[1]`,
        # else the sparse size, as for the other forms (documented).
        pyg_error = "PyG's EdgeIndex sizes"
    else:
        try:
            expected = run(ref, x, adj, edge_attr, size)
        except Exception as e:  # PyG cannot: ours computes or raises.
            pyg_error = e
    try:
        out, ei, alpha = run(ours, x, adj, edge_attr, size)
    except (ValueError, IndexError, TypeError) as e:
        assert str(e).startswith('GATConv:'), f'unclear error: {e!r}'
        assert pyg_error is not None, f'PyG computes, ours raises: {e!r}'
        return 'both raise'
    leaves = (list(x) if isinstance(x, tuple) else [x]) + [edge_attr]
    if pyg_error is None:
        ref_out, ref_ei, ref_alpha = expected
        torch.testing.assert_close(out, ref_out, **tol)
        assert torch.equal(ei, ref_ei), 'edge order differs from PyG'
        torch.testing.assert_close(alpha, ref_alpha, **tol)
        ref_grads = grads(ref, leaves, ref_out, ref_alpha)
        assert_grads_close(ref_grads, grads(ours, leaves, out, alpha),
                           _grad_tol(ref_grads, dtype))
        return 'match'
    # PyG raised: the same graph as a plain edge list with explicit sizes,
    # attention compared as dense matrices (the edge orders of forms
    # differ).
    plain, value = _plain(adj)
    if edge_attr is None and value is not None and value.dim() > 1:
        edge_attr = value
    elif edge_attr is None and value is not None and (
            case['cfg']['edge_dim'] == 1):
        edge_attr = value
    x_plain = x
    num_src, num_dst = case['num_src'], case['num_dst']
    if isinstance(x, tuple) and x[1] is None:
        num_dst = out.size(0)
    try:
        ref_out, ref_ei, ref_alpha = run(ref, x_plain, plain, edge_attr,
                                         (num_src, num_dst))
    except Exception:
        # PyG cannot run this graph in any form (e.g. its bipartite
        # self-loop features with more targets than sources): checked
        # against hand-built inputs in the parity suite.
        return 'pyg cannot'
    torch.testing.assert_close(out, ref_out, **tol)
    torch.testing.assert_close(
        dense_attention(ei, alpha, num_src, num_dst),
        dense_attention(ref_ei, ref_alpha, num_src, num_dst), **tol)
    return 'match plain'


@pytest.mark.parametrize('fused', [True, False], ids=['fused', 'unfused'])
@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
def test_wide_fuzz_against_pyg(dtype, fused):
    rng = random.Random(20261201)
    outcomes = {}
    for seed in range(400):
        case = _case(rng)
        if case['form'] == 'sparse_tensor' and not WITH_TORCH_SPARSE:
            continue
        try:
            outcome = check_case(case, dtype, seed, fused)
        except AssertionError as e:
            raise AssertionError(f'seed {seed}: {case}\n{e}') from e
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    # Most cases are ones PyG itself computes.
    assert outcomes.get('match', 0) > 150, outcomes
