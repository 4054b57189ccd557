r"""Parity of :class:`pyg_gat_ext.GATConv` with
:class:`torch_geometric.nn.GATConv`: shared weights through
:meth:`load_state_dict`, then outputs, attention weights (and their edge
order) and every gradient compared, over constructor options, input forms
and graphs.

Each behaviour is tested once where it lives: the options and input forms
on both paths of the layer (the fused kernel and the `MessagePassing`
hooks) with the default kernels of the device; every implementation of the
ops (reference, C++, Triton) on a few representative configurations
(:func:`test_every_backend`). Each kernel is compared with the reference on
graphs that reach its branches in ``tests/ops``."""
import itertools
import random

import pytest
import torch
import torch_geometric.nn as pyg_nn
from torch_geometric.typing import WITH_TORCH_SPARSE, SparseTensor

from pyg_gat_ext import GATConv
from tests.conftest import TOL
from tests.helpers import (
    FORMS,
    GRAPHS,
    dense_attention,
    edge_index_of,
    make_graph,
    to_form,
)

DTYPES = [torch.float32, torch.float64]


def make_layers(in_channels, out_channels, dtype, device, seed=0,
                fused=None, **kwargs):
    torch.manual_seed(seed)
    ref = pyg_nn.GATConv(in_channels, out_channels, **kwargs)
    ours = GATConv(in_channels, out_channels, fused=fused, **kwargs)
    ours.load_state_dict(ref.state_dict())  # strict
    return ref.to(device, dtype), ours.to(device, dtype)


def run(conv, x, edge_index, edge_attr=None, size=None):
    r"""Runs :obj:`conv` and returns :obj:`(out, edge_index, alpha)`, the
    edge indices plain :obj:`[2, E]` in the order of :obj:`alpha`."""
    kwargs = {} if size is None else {'size': size}  # GATv2Conv has none.
    out, att = conv(x, edge_index, edge_attr, return_attention_weights=True,
                    **kwargs)
    if isinstance(att, SparseTensor):
        return out, edge_index_of(att), att.storage.value()
    return out, edge_index_of(att[0]), att[1]


def grads(conv, inputs, out, alpha, seed=1):
    r"""Gradients of a random linear function of the output and of the
    attention weights, with respect to :obj:`inputs` and every parameter."""
    g = torch.Generator(device=out.device).manual_seed(seed)
    loss = (out * torch.randn(out.shape, generator=g, device=out.device,
                              dtype=out.dtype)).sum()
    if alpha is not None:
        loss = loss + (alpha * torch.rand(
            alpha.shape, generator=g, device=out.device,
            dtype=alpha.dtype)).sum()
    names, params = zip(*conv.named_parameters(), strict=True)
    inputs = [t for t in inputs if t is not None and t.requires_grad]
    out = torch.autograd.grad(loss, inputs + list(params), allow_unused=True)
    return out[:len(inputs)], dict(zip(names, out[len(inputs):], strict=True))


def assert_grads_close(ref_grads, our_grads, tol):
    (ref_in, ref_par), (our_in, our_par) = ref_grads, our_grads
    assert len(ref_in) == len(our_in)
    for a, b in zip(ref_in, our_in, strict=True):
        torch.testing.assert_close(b, a, **tol)
    assert ref_par.keys() == our_par.keys()
    for name in ref_par:
        a, b = ref_par[name], our_par[name]
        if a is None or b is None:  # Unused, e.g. `att_src` with no edges.
            assert (a is None or not a.any()) and (b is None or not b.any())
        else:
            torch.testing.assert_close(b, a, **tol, msg=name)


def make_inputs(bipartite, num_src, num_dst, dtype, device, width=(5, 7)):
    g = torch.Generator().manual_seed(2)
    if bipartite:
        x = (torch.randn(num_src, width[0], generator=g, dtype=dtype),
             torch.randn(num_dst, width[1], generator=g, dtype=dtype))
        return tuple(t.to(device).requires_grad_() for t in x)
    return torch.randn(num_src, width[0], generator=g,
                       dtype=dtype).to(device).requires_grad_()


def leaves(x, edge_attr):
    return (list(x) if isinstance(x, tuple) else [x]) + [edge_attr]


def pyg_raises(form, add_self_loops, edge_dim, fill_value='mean',
               more_targets=False):
    r"""The documented cases where PyG's GATConv raises on valid input and
    ours computes the result (see ``docs/migration.rst``), when asked for
    the attention weights."""
    if form == 'csc':  # Its message passing rejects the CSC layout.
        return True
    if form == 'coo' and edge_dim is not None:
        return True  # `set_sparse_value` rejects multi-dimensional values.
    if not add_self_loops:
        return False
    if form == 'sparse_tensor' and edge_dim is not None:
        return True  # NotImplementedError for edge features.
    # Bipartite self-loop features reduced with `num_nodes = min(size)`:
    return (edge_dim is not None and isinstance(fill_value, str)
            and more_targets)


def check_parity(ref, ours, x, adj, edge_attr, num_src, num_dst, tol,
                 size=None, expect_pyg_error=False):
    r"""Runs both layers on the same input and compares everything. Where
    PyG raises (only in the documented cases), compares against PyG on the
    equivalent plain :obj:`edge_index` instead, attention weights as dense
    matrices since the edge orders of the forms differ."""
    out, ei, alpha = run(ours, x, adj, edge_attr, size)
    assert alpha.shape == (ei.size(1), ours.heads)
    try:
        ref_out, ref_ei, ref_alpha = run(ref, x, adj, edge_attr, size)
    except Exception:
        assert expect_pyg_error, 'PyG raised on an undocumented case'
        plain_attr = edge_attr
        if plain_attr is None and isinstance(adj, SparseTensor):
            plain_attr = adj.storage.value()
        if plain_attr is None and adj.layout != torch.strided:
            plain_attr = adj.values() if adj.values().dim() > 1 else None
        plain = edge_index_of(adj)
        ref_out, ref_ei, ref_alpha = run(ref, x, plain, plain_attr, size)
        torch.testing.assert_close(out, ref_out, **tol)
        torch.testing.assert_close(
            dense_attention(ei, alpha, num_src, num_dst),
            dense_attention(ref_ei, ref_alpha, num_src, num_dst), **tol)
        inputs = leaves(x, edge_attr)
        assert_grads_close(grads(ref, inputs, ref_out, None),
                           grads(ours, inputs, out, None), tol)
        return
    assert not expect_pyg_error, 'PyG no longer raises: update the docs'
    torch.testing.assert_close(out, ref_out, **tol)
    assert torch.equal(ei, ref_ei), 'edge order differs from PyG'
    torch.testing.assert_close(alpha, ref_alpha, **tol)
    inputs = leaves(x, edge_attr)
    assert_grads_close(grads(ref, inputs, ref_out, ref_alpha),
                       grads(ours, inputs, out, alpha), tol)


@pytest.mark.parametrize('edge_dim', [None, 3])
@pytest.mark.parametrize('add_self_loops', [True, False])
@pytest.mark.parametrize('bipartite', [False, True])
@pytest.mark.parametrize('graph', GRAPHS)
@pytest.mark.parametrize('form', FORMS)
def test_input_forms(form, graph, bipartite, add_self_loops, edge_dim, path,
                     device, dtype=torch.float64):
    # Float64 so that any mistake shows above rounding; float32 (and half
    # precision) in test_every_backend, the fuzz and the property tests.
    if form == 'sparse_tensor' and not WITH_TORCH_SPARSE:
        pytest.skip("'torch-sparse' is not installed")
    num_src, num_dst = (6, 4) if bipartite else (6, 6)
    in_channels = (5, 7) if bipartite else 5
    ref, ours = make_layers(in_channels, 4, dtype, device, heads=2,
                            edge_dim=edge_dim, add_self_loops=add_self_loops)
    x = make_inputs(bipartite, num_src, num_dst, dtype, device)
    edge_index = make_graph(graph, num_src, num_dst)
    edge_attr = None
    if edge_dim is not None:
        edge_attr = torch.randn(edge_index.size(1), edge_dim, dtype=dtype)
    adj, edge_attr = to_form(form, edge_index, edge_attr, num_src, num_dst)
    adj = adj.to(device)
    if form not in ('tensor', 'edge_index', 'edge_index_sorted'):
        edge_attr = None  # PyG's way for sparse forms: features as values.
    if edge_attr is not None:
        edge_attr = edge_attr.to(device).requires_grad_()
    check_parity(ref, ours, x, adj, edge_attr, num_src, num_dst, TOL[dtype],
                 expect_pyg_error=pyg_raises(form, add_self_loops, edge_dim))


FILL_VALUES = ['mean', 'add', 'min', 'max', 'mul', 0.5, 'tensor']
# `fill_value` only matters with edge features (1-D for `edge_dim=1`):
EDGE_OPTIONS = [(None, 'mean')] + [(edge_dim, fill_value)
                                   for edge_dim in [1, 4]
                                   for fill_value in FILL_VALUES]


#: Every combination of heads, concat, bias and residual, and every edge
#: option with both bipartite choices, each at least once: case `k` takes
#: combination `k % 16`, edge option `k % 15` and bipartite `k % 2` (over 30
#: consecutive cases every (edge option, bipartite) pair occurs, as 15 and 2
#: are coprime), rather than the 960 cases of their product.
LAYER_OPTIONS = list(
    itertools.product([1, 3], [True, False], [True, False], [False, True]))
OPTION_CASES = [
    LAYER_OPTIONS[k % 16] + EDGE_OPTIONS[k % 15] + (k % 2 == 1, )
    for k in range(32)
]


@pytest.mark.parametrize(
    'heads,concat,bias,residual,edge_dim,fill_value,bipartite', OPTION_CASES)
def test_constructor_options(heads, concat, bias, residual, edge_dim,
                             fill_value, bipartite, path, device,
                             dtype=torch.float64):
    if fill_value == 'tensor':
        fill_value = torch.arange(edge_dim, dtype=dtype) / 3.0
    num_src, num_dst = (7, 5) if bipartite else (7, 7)
    in_channels = (5, 7) if bipartite else 5
    ref, ours = make_layers(in_channels, 3, dtype, device, heads=heads,
                            concat=concat, fill_value=fill_value, bias=bias,
                            residual=residual, edge_dim=edge_dim,
                            negative_slope=0.1)
    x = make_inputs(bipartite, num_src, num_dst, dtype, device)
    edge_index = make_graph('duplicates', num_src, num_dst).to(device)
    edge_attr = None
    if edge_dim is not None:
        shape = (edge_index.size(1), ) if edge_dim == 1 else (
            edge_index.size(1), edge_dim)
        edge_attr = torch.randn(shape, dtype=dtype, device=device)
        edge_attr.requires_grad_()
    check_parity(ref, ours, x, edge_index, edge_attr, num_src, num_dst,
                 TOL[dtype])


@pytest.mark.parametrize('dtype', DTYPES)
@pytest.mark.parametrize('fill_value', ['mean', 'add', 'max'])
@pytest.mark.parametrize('form', ['tensor', 'coo', 'csr', 'sparse_tensor'])
def test_bipartite_more_targets_than_sources(form, fill_value, dtype, path,
                                            device):
    r"""PyG raises an index error here; ours reduces the features of each
    self-loop node's incoming edges, as for any other graph. The expected
    result is built with PyG's own utilities: self-loops added by hand with
    correctly reduced features, then PyG's layer without self-loops."""
    from torch_geometric.utils import remove_self_loops, scatter
    if form == 'sparse_tensor' and not WITH_TORCH_SPARSE:
        pytest.skip("'torch-sparse' is not installed")
    num_src, num_dst = 4, 7
    kwargs = dict(heads=2, edge_dim=2, fill_value=fill_value)
    ref, ours = make_layers((5, 7), 3, dtype, device, add_self_loops=False,
                            **kwargs)
    ours = GATConv((5, 7), 3, **kwargs).to(device, dtype)
    ours.load_state_dict(ref.state_dict())
    x = make_inputs(True, num_src, num_dst, dtype, device)
    edge_index = make_graph('self_loops', num_src, num_dst)
    edge_attr = torch.randn(edge_index.size(1), 2, dtype=dtype)
    adj, attr = to_form(form, edge_index, edge_attr, num_src, num_dst)
    if isinstance(adj, SparseTensor) or adj.layout == torch.strided:
        out = ours(x, adj.to(device), attr.to(device))
    else:
        out = ours(x, adj.to(device))

    plain, attr = edge_index_of(adj), attr
    plain, attr = remove_self_loops(plain, attr)
    loops = torch.arange(num_src).repeat(2, 1)
    loop_attr = scatter(attr, plain[1], 0, num_dst, fill_value)[:num_src]
    plain = torch.cat([plain, loops], dim=1).to(device)
    attr = torch.cat([attr, loop_attr]).to(device)
    torch.testing.assert_close(out, ref(x, plain, attr), **TOL[dtype])
    with pytest.raises(RuntimeError):  # Documented: PyG raises.
        pyg_nn.GATConv((5, 7), 3, **kwargs).to(device, dtype)(
            x, edge_index.to(device), edge_attr.to(device))


def test_source_only_input(path, device):
    # `(x_src, None)` with an explicit size, the form of sampled blocks.
    ref, ours = make_layers((5, 7), 4, torch.float64, device, heads=2)
    x_src = torch.randn(6, 5, dtype=torch.float64, device=device)
    edge_index = make_graph('random', 6, 3).to(device)
    for size in [(6, 3), None]:
        check_parity(ref, ours, (x_src, None), edge_index, None, 6,
                     3 if size else 6, TOL[torch.float64], size=size)


@pytest.mark.parametrize('form', ['coo', 'csr', 'csc', 'sparse_tensor'])
def test_source_only_input_with_sparse_adjacency(form, path, device):
    # `(x_src, None)` with a transposed adjacency and no `size` (PyG's own
    # test): the adjacency's rows are the targets, 2 of them here, and only
    # two self-loops are added (four corrupted the heap before).
    if form == 'sparse_tensor' and not WITH_TORCH_SPARSE:
        pytest.skip("'torch-sparse' is not installed")
    ref, ours = make_layers((5, 7), 4, torch.float64, device, heads=2)
    x_src = torch.randn(4, 5, dtype=torch.float64, device=device)
    edge_index = torch.tensor([[0, 1, 2, 3], [0, 0, 1, 1]])
    adj, _ = to_form(form, edge_index, None, 4, 2)
    out = ours((x_src, None), adj.to(device))
    assert out.shape == (2, 8)
    torch.testing.assert_close(
        out, ref((x_src, None), edge_index.to(device), size=(4, 2)),
        **TOL[torch.float64])
    if form != 'csc':  # PyG rejects CSC: compared on the edge list above.
        check_parity(ref, ours, (x_src, None), adj.to(device), None, 4, 2,
                     TOL[torch.float64])


def test_coo_adjacency_is_not_modified(path, device):
    # The layer reads a COO adjacency without marking it coalesced in place:
    # the version of its indices is unchanged, so a backward through an
    # earlier call on it (here PyG's) still works.
    ref, ours = make_layers(5, 4, torch.float64, device, heads=2)
    x = make_inputs(False, 6, 6, torch.float64, device)
    adj, _ = to_form('coo', make_graph('duplicates', 6, 6), None, 6, 6)
    adj = adj.to(device)
    ref_out = ref(x, adj)
    version = adj._indices()._version
    ours(x, adj, return_attention_weights=True)
    assert adj._indices()._version == version
    ref_out.sum().backward()


def test_sparse_tensor_weights_are_not_edge_features(path, device):
    # 1-D `SparseTensor` values are edge weights, which GAT ignores, as
    # PyG's message passing treats them, also with `edge_dim=1`.
    if not WITH_TORCH_SPARSE:
        pytest.skip("'torch-sparse' is not installed")
    ref, ours = make_layers(5, 4, torch.float64, device, heads=2,
                            edge_dim=1, add_self_loops=False)
    x = make_inputs(False, 6, 6, torch.float64, device)
    edge_index = make_graph('random', 6, 6)
    adj, _ = to_form('sparse_tensor', edge_index,
                     torch.rand(edge_index.size(1), dtype=torch.float64), 6,
                     6)
    check_parity(ref, ours, x, adj.to(device), None, 6, 6,
                 TOL[torch.float64])


@pytest.mark.parametrize('form', ['tensor', 'edge_index'])
def test_target_to_source_flow(form, path, device):
    ref, ours = make_layers(5, 4, torch.float64, device, heads=2,
                            flow='target_to_source')
    x = make_inputs(False, 6, 6, torch.float64, device)
    edge_index, _ = to_form(form, make_graph('random', 6, 6), None, 6, 6)
    check_parity(ref, ours, x, edge_index.to(device), None, 6, 6,
                 TOL[torch.float64])


def test_return_attention_weights_false_returns_output_only(path, device):
    ref, ours = make_layers(5, 4, torch.float32, device)
    x = make_inputs(False, 6, 6, torch.float32, device)
    edge_index = make_graph('random', 6, 6).to(device)
    ref_out = ref(x, edge_index, return_attention_weights=False)
    out = ours(x, edge_index, return_attention_weights=False)
    assert isinstance(out, torch.Tensor) and isinstance(ref_out, torch.Tensor)
    torch.testing.assert_close(out, ref_out)


def test_torch_sparse_explicit_edge_attr(path, device):
    r"""A `torch.sparse` adjacency with explicit `edge_attr` (rows in the
    order of its values): PyG asserts, ours matches the plain form."""
    ref, ours = make_layers(5, 4, torch.float64, device, heads=2, edge_dim=3)
    x = make_inputs(False, 6, 6, torch.float64, device)
    edge_index = make_graph('random', 6, 6)
    edge_attr = torch.randn(edge_index.size(1), 3, dtype=torch.float64)
    for form in ['coo', 'csr', 'csc']:
        _, attr = to_form(form, edge_index, edge_attr, 6, 6)
        adj, _ = to_form(form, edge_index, None, 6, 6)  # The same order.
        check_parity(ref, ours, x, adj.to(device), attr.to(device), 6, 6,
                     TOL[torch.float64], expect_pyg_error=True)


@pytest.mark.parametrize('dtype', DTYPES)
def test_attention_dropout_matches_under_seed(dtype, device):
    # The same random stream is consumed in the same order as PyG's, so
    # training with attention dropout is reproducible across the swap, on
    # the `MessagePassing` path (the fused kernel draws its own mask from
    # the seed, tested in tests/ops/test_gat_attention.py).
    ref, ours = make_layers(5, 4, dtype, device, heads=2, dropout=0.5,
                            fused=False)
    x = make_inputs(False, 6, 6, dtype, device)
    edge_index = make_graph('duplicates', 6, 6).to(device)
    torch.manual_seed(7)
    ref_out, (_, ref_alpha) = ref(x, edge_index,
                                  return_attention_weights=True)
    torch.manual_seed(7)
    out, (_, alpha) = ours(x, edge_index, return_attention_weights=True)
    assert (alpha == 0).any()
    torch.testing.assert_close(alpha, ref_alpha, **TOL[dtype])
    torch.testing.assert_close(out, ref_out, **TOL[dtype])


@pytest.mark.parametrize('bipartite', [False, True])
def test_lazy_initialization(bipartite, path, device):
    in_channels = (-1, -1) if bipartite else -1
    x = make_inputs(bipartite, 6, 4 if bipartite else 6, torch.float32,
                    device)
    edge_index = make_graph('random', 6, 4 if bipartite else 6).to(device)
    torch.manual_seed(0)
    ref = pyg_nn.GATConv(in_channels, 4, heads=2, residual=True).to(device)
    ours = GATConv(in_channels, 4, heads=2, residual=True).to(device)
    assert str(ours) == str(ref)
    ref(x, edge_index), ours(x, edge_index)  # Materialise the parameters.
    ours.load_state_dict(ref.state_dict())
    torch.testing.assert_close(ours(x, edge_index), ref(x, edge_index))


@pytest.mark.parametrize('kwargs', [
    dict(in_channels=16, out_channels=8),
    dict(in_channels=(16, 32), out_channels=8, heads=4, edge_dim=3,
         residual=True, concat=False, bias=False),
])
def test_state_dict_and_repr(kwargs):
    ref = pyg_nn.GATConv(**kwargs)
    ours = GATConv(**kwargs)
    assert str(ours) == str(ref)
    assert list(ours.state_dict()) == list(ref.state_dict())
    for name, p in ours.state_dict().items():
        assert p.shape == ref.state_dict()[name].shape
    # Strict loading works in both directions.
    ours.load_state_dict(ref.state_dict())
    ref.load_state_dict(ours.state_dict())
    # Same initialisation: identical weights from the same seed.
    torch.manual_seed(3)
    ref = pyg_nn.GATConv(**kwargs)
    torch.manual_seed(3)
    ours = GATConv(**kwargs)
    for (n1, p1), (n2, p2) in zip(ref.state_dict().items(),
                                  ours.state_dict().items(), strict=True):
        assert n1 == n2 and torch.equal(p1, p2)


def _random_case(rng):
    bipartite = rng.random() < 0.4
    cfg = dict(
        heads=rng.choice([1, 2, 4]),
        concat=rng.random() < 0.5,
        negative_slope=rng.choice([0.2, 0.01, 0.5]),
        add_self_loops=rng.random() < 0.7,
        edge_dim=rng.choice([None, None, 1, 3]),
        fill_value=rng.choice(['mean', 'add', 'min', 'max', 'mul', 1.5]),
        bias=rng.random() < 0.7,
        residual=rng.random() < 0.3,
    )
    num_src = rng.randint(1, 12)
    num_dst = rng.randint(1, num_src) if bipartite else num_src
    form = rng.choice(FORMS)
    graph = rng.choice(GRAPHS)
    return bipartite, cfg, num_src, num_dst, form, graph


#: A few configurations that together reach every part of the layer, run on
#: every implementation of the ops: (form, graph, bipartite, options).
REPRESENTATIVE = [
    ('edge_index', 'duplicates', False, dict(heads=2)),
    ('tensor', 'self_loops', True,
     dict(heads=3, edge_dim=2, fill_value='add', residual=True)),
    ('csr', 'isolated', False,
     dict(heads=1, concat=False, add_self_loops=False, bias=False)),
    ('sparse_tensor', 'random', False, dict(heads=2, negative_slope=0.5)),
    ('edge_index_sorted', 'empty', True, dict(heads=2, edge_dim=1)),
]


@pytest.mark.parametrize('dtype', DTYPES)
@pytest.mark.parametrize('case', REPRESENTATIVE, ids=lambda c: c[0])
def test_every_backend(case, dtype, backend, path, device):
    # The `backend` fixture forces the reference, C++ or Triton kernels.
    form, graph, bipartite, options = case
    if form == 'sparse_tensor' and not WITH_TORCH_SPARSE:
        pytest.skip("'torch-sparse' is not installed")
    num_src, num_dst = (7, 5) if bipartite else (7, 7)
    in_channels = (5, 7) if bipartite else 5
    ref, ours = make_layers(in_channels, 3, dtype, device, **options)
    x = make_inputs(bipartite, num_src, num_dst, dtype, device)
    edge_index = make_graph(graph, num_src, num_dst)
    edge_attr = None
    if options.get('edge_dim') is not None:
        edge_attr = torch.randn(edge_index.size(1), options['edge_dim'],
                                dtype=dtype)
    adj, edge_attr = to_form(form, edge_index, edge_attr, num_src, num_dst)
    if edge_attr is not None:
        edge_attr = edge_attr.to(device).requires_grad_()
    check_parity(ref, ours, x, adj.to(device), edge_attr, num_src, num_dst,
                 TOL[dtype])


@pytest.mark.parametrize('dtype', DTYPES)
def test_fuzz_against_pyg(dtype, path, device):
    r"""A random sweep over configurations and input forms, as a reviewer
    would write it: within 1e-5 (float32) and 1e-10 (float64) of PyG."""
    rng = random.Random(1234)
    checked = 0
    for trial in itertools.count():
        if checked == 150:
            break
        bipartite, cfg, num_src, num_dst, form, graph = _random_case(rng)
        if form == 'sparse_tensor' and not WITH_TORCH_SPARSE:
            continue
        in_channels = (3, 6) if bipartite else 3
        ref, ours = make_layers(in_channels, rng.randint(1, 5), dtype,
                                device, seed=trial, **cfg)
        x = make_inputs(bipartite, num_src, num_dst, dtype, device,
                        width=(3, 6))
        edge_index = make_graph(graph, num_src, num_dst, seed=trial)
        edge_attr = None
        if cfg['edge_dim'] is not None:
            edge_attr = torch.randn(edge_index.size(1), cfg['edge_dim'],
                                    dtype=dtype)
        adj, edge_attr = to_form(form, edge_index, edge_attr, num_src,
                                 num_dst)
        if edge_attr is not None:
            edge_attr = edge_attr.to(device).requires_grad_()
        if form in ('coo', 'csr', 'csc'):
            edge_attr = None  # Carried as the sparse values.
        check_parity(
            ref, ours, x, adj.to(device), edge_attr, num_src, num_dst,
            TOL[dtype], expect_pyg_error=pyg_raises(
                form, cfg['add_self_loops'], cfg['edge_dim'],
                cfg['fill_value'], num_dst > num_src))
        checked += 1
