r"""Parity of :class:`pyg_gat_ext.GATv2Conv` with
:class:`torch_geometric.nn.GATv2Conv`, through the comparison of
``test_gat_conv_parity.py`` (shared weights via strict
:meth:`load_state_dict`, then outputs, attention weights and their edge
order, and every gradient) on both paths of the layer: the input forms and
graphs, the constructor options (``share_weights`` among them), every
implementation of the ops on representative cases, a random sweep, and what
is GATv2's own (TorchScript, :func:`torch.compile`). ``GAT(v2=True)``
under :func:`pyg_gat_ext.patch` is in ``tests/test_patch.py``, the
missing ``[E, H, C]`` tensors in ``tests/ops/test_gat_attention.py``."""
import itertools
import random

import pytest
import torch
import torch_geometric.nn as pyg_nn
from torch_geometric.typing import WITH_TORCH_SPARSE

from pyg_gat_ext import GATv2Conv
from tests.conftest import TOL
from tests.helpers import FORMS, GRAPHS, make_graph, to_form
from tests.nn.test_gat_conv_parity import (
    DTYPES,
    FILL_VALUES,
    check_parity,
    make_inputs,
    pyg_raises,
)


def make_layers(in_channels, out_channels, dtype, device, seed=0,
                fused=None, **kwargs):
    torch.manual_seed(seed)
    ref = pyg_nn.GATv2Conv(in_channels, out_channels, **kwargs)
    ours = GATv2Conv(in_channels, out_channels, fused=fused, **kwargs)
    ours.load_state_dict(ref.state_dict())  # strict
    return ref.to(device, dtype), ours.to(device, dtype)


def parity_case(form, graph, bipartite, options, dtype, device,
                expect_pyg_error=False, num_nodes=(7, 5)):
    r"""Builds both layers with :obj:`options` and compares them on
    :obj:`graph` in :obj:`form` (edge features, where the layer has them,
    as the form carries them)."""
    if form == 'sparse_tensor' and not WITH_TORCH_SPARSE:
        pytest.skip("'torch-sparse' is not installed")
    num_src, num_dst = num_nodes if bipartite else (num_nodes[0], ) * 2
    in_channels = (5, 7) if bipartite else 5
    ref, ours = make_layers(in_channels, 3, dtype, device, **options)
    x = make_inputs(bipartite, num_src, num_dst, dtype, device)
    edge_index = make_graph(graph, num_src, num_dst)
    edge_attr = None
    edge_dim = options.get('edge_dim')
    if edge_dim is not None:
        shape = (edge_index.size(1), ) if edge_dim == 1 else (
            edge_index.size(1), edge_dim)
        edge_attr = torch.randn(shape, dtype=dtype)
    adj, edge_attr = to_form(form, edge_index, edge_attr, num_src, num_dst)
    if form not in ('tensor', 'edge_index', 'edge_index_sorted'):
        edge_attr = None  # PyG's way for sparse forms: features as values.
    if edge_attr is not None:
        edge_attr = edge_attr.to(device).requires_grad_()
    check_parity(ref, ours, x, adj.to(device), edge_attr, num_src, num_dst,
                 TOL[dtype], expect_pyg_error=expect_pyg_error)


#: (bipartite, add_self_loops, edge_dim) in turn over the forms and graphs:
#: each of the 8 combinations with every form and with every graph, in 42
#: cases rather than the 336 of the product.
FORM_CASES = [(form, graph) + list(
    itertools.product([False, True], [True, False], [None, 3]))[k % 8]
              for k, (form, graph) in enumerate(itertools.product(
                  FORMS, GRAPHS))]


@pytest.mark.parametrize('form,graph,bipartite,add_self_loops,edge_dim',
                         FORM_CASES)
def test_input_forms(form, graph, bipartite, add_self_loops, edge_dim, path,
                     device):
    # Float64, so that any mistake shows above rounding.
    parity_case(form, graph, bipartite,
                dict(heads=2, edge_dim=edge_dim,
                     add_self_loops=add_self_loops), torch.float64, device,
                expect_pyg_error=pyg_raises(form, add_self_loops, edge_dim))


EDGE_OPTIONS = [(None, 'mean')] + [(edge_dim, fill_value)
                                   for edge_dim in [1, 4]
                                   for fill_value in FILL_VALUES]
#: heads, concat, bias, residual and share_weights: each of their 32
#: combinations once, with edge option `k % 15` and bipartite `k % 2`.
LAYER_OPTIONS = list(
    itertools.product([1, 3], [True, False], [True, False], [False, True],
                      [False, True]))
OPTION_CASES = [
    LAYER_OPTIONS[k] + EDGE_OPTIONS[k % 15] + (k % 2 == 1, )
    for k in range(32)
]


@pytest.mark.parametrize(
    'heads,concat,bias,residual,share_weights,edge_dim,fill_value,bipartite',
    OPTION_CASES)
def test_constructor_options(heads, concat, bias, residual, share_weights,
                             edge_dim, fill_value, bipartite, path, device):
    dtype = torch.float64
    if fill_value == 'tensor':
        fill_value = torch.arange(edge_dim, dtype=dtype) / 3.0
    if share_weights and bipartite:
        bipartite = False  # One matrix for both needs equal widths.
    parity_case('tensor', 'duplicates', bipartite,
                dict(heads=heads, concat=concat, bias=bias,
                     residual=residual, share_weights=share_weights,
                     edge_dim=edge_dim, fill_value=fill_value,
                     negative_slope=0.1), dtype, device)


@pytest.mark.parametrize('form', ['tensor', 'csr', 'sparse_tensor'])
def test_bipartite_more_targets_than_sources(form, path, device):
    # PyG's self-loop replacement on a torch.sparse adjacency indexes past
    # the sources here (an IndexError); ours is compared with PyG on the
    # plain edge_index then.
    parity_case(form, 'random', True, dict(heads=2), torch.float64, device,
                expect_pyg_error=form == 'csr', num_nodes=(4, 7))


def test_target_features_are_required(path, device):
    # PyG asserts; ours says what is missing.
    conv = GATv2Conv((5, 7), 4).to(device)
    x = torch.randn(6, 5, device=device)
    edge_index = make_graph('random', 6, 4).to(device)
    with pytest.raises(ValueError, match=r"'x\[1\]' must be given"):
        conv((x, None), edge_index)


def test_target_to_source_flow(path, device):
    ref, ours = make_layers(5, 4, torch.float64, device, heads=2,
                            flow='target_to_source')
    x = make_inputs(False, 6, 6, torch.float64, device)
    edge_index = make_graph('random', 6, 6).to(device)
    check_parity(ref, ours, x, edge_index, None, 6, 6, TOL[torch.float64])


def test_return_attention_weights_false_returns_output_only(path, device):
    ref, ours = make_layers(5, 4, torch.float32, device, heads=2)
    x = make_inputs(False, 6, 6, torch.float32, device)
    edge_index = make_graph('random', 6, 6).to(device)
    out = ours(x, edge_index, return_attention_weights=False)
    assert isinstance(out, torch.Tensor)
    torch.testing.assert_close(out, ref(x, edge_index))


def test_attention_dropout_matches_under_seed(device):
    # On the MessagePassing path the random stream is consumed as PyG's.
    ref, ours = make_layers(5, 4, torch.float64, device, heads=2,
                            dropout=0.5, fused=False)
    x = make_inputs(False, 6, 6, torch.float64, device)
    edge_index = make_graph('duplicates', 6, 6).to(device)
    torch.manual_seed(7)
    ref_out, (_, ref_alpha) = ref(x, edge_index,
                                  return_attention_weights=True)
    torch.manual_seed(7)
    out, (_, alpha) = ours(x, edge_index, return_attention_weights=True)
    assert (alpha == 0).any()
    torch.testing.assert_close(alpha, ref_alpha)
    torch.testing.assert_close(out, ref_out)


def test_fused_attention_dropout(device):
    # The kernel draws its own mask: reproducible under the seed, a drop
    # rate near p, and in eval mode no dropout at all.
    conv = GATv2Conv(8, 4, heads=4, dropout=0.4).to(device)
    x = torch.randn(200, 8, device=device)
    edge_index = torch.randint(0, 200, (2, 8000), device=device)
    torch.manual_seed(1)
    _, (_, first) = conv(x, edge_index, return_attention_weights=True)
    torch.manual_seed(1)
    _, (_, again) = conv(x, edge_index, return_attention_weights=True)
    assert torch.equal(first, again)
    assert abs((first == 0).double().mean().item() - 0.4) < 0.02
    conv.eval()
    _, (_, alpha) = conv(x, edge_index, return_attention_weights=True)
    assert (alpha > 0).all()


@pytest.mark.parametrize('bipartite', [False, True])
def test_lazy_initialization(bipartite, path, device):
    in_channels = (-1, -1) if bipartite else -1
    num_dst = 4 if bipartite else 6
    x = make_inputs(bipartite, 6, num_dst, torch.float32, device)
    edge_index = make_graph('random', 6, num_dst).to(device)
    edge_attr = torch.randn(edge_index.size(1), 3, device=device)
    torch.manual_seed(0)
    kwargs = dict(heads=2, residual=True, edge_dim=3)
    ref = pyg_nn.GATv2Conv(in_channels, 4, **kwargs).to(device)
    ours = GATv2Conv(in_channels, 4, **kwargs).to(device)
    assert str(ours) == str(ref)
    ref(x, edge_index, edge_attr), ours(x, edge_index, edge_attr)
    ours.load_state_dict(ref.state_dict())
    torch.testing.assert_close(ours(x, edge_index, edge_attr),
                               ref(x, edge_index, edge_attr))


@pytest.mark.parametrize('kwargs', [
    dict(in_channels=16, out_channels=8),
    dict(in_channels=16, out_channels=8, share_weights=True, heads=2),
    dict(in_channels=(16, 32), out_channels=8, heads=4, edge_dim=3,
         residual=True, concat=False, bias=False),
])
def test_state_dict_and_repr(kwargs):
    ref = pyg_nn.GATv2Conv(**kwargs)
    ours = GATv2Conv(**kwargs)
    assert str(ours) == str(ref)
    assert list(ours.state_dict()) == list(ref.state_dict())
    for name, p in ours.state_dict().items():
        assert p.shape == ref.state_dict()[name].shape
    ours.load_state_dict(ref.state_dict())
    ref.load_state_dict(ours.state_dict())
    torch.manual_seed(3)
    ref = pyg_nn.GATv2Conv(**kwargs)
    torch.manual_seed(3)
    ours = GATv2Conv(**kwargs)
    for (n1, p1), (n2, p2) in zip(ref.state_dict().items(),
                                  ours.state_dict().items(), strict=True):
        assert n1 == n2 and torch.equal(p1, p2)


#: Configurations that together reach every part of the layer, run on every
#: implementation of the ops: (form, graph, bipartite, options).
REPRESENTATIVE = [
    ('edge_index', 'duplicates', False, dict(heads=2)),
    ('tensor', 'self_loops', True,
     dict(heads=3, edge_dim=2, fill_value='add', residual=True)),
    ('csr', 'isolated', False,
     dict(heads=1, concat=False, add_self_loops=False, bias=False)),
    ('sparse_tensor', 'random', False,
     dict(heads=2, negative_slope=0.5, share_weights=True)),
    ('edge_index_sorted', 'empty', True, dict(heads=2, edge_dim=1)),
]


@pytest.mark.parametrize('dtype', DTYPES)
@pytest.mark.parametrize('case', REPRESENTATIVE, ids=lambda c: c[0])
def test_every_backend(case, dtype, backend, path, device):
    form, graph, bipartite, options = case
    parity_case(form, graph, bipartite, options, dtype, device)


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
        share_weights=not bipartite and rng.random() < 0.3,
    )
    num_src = rng.randint(1, 12)
    num_dst = rng.randint(1, num_src) if bipartite else num_src
    return (bipartite, cfg, num_src, num_dst, rng.choice(FORMS),
            rng.choice(GRAPHS))


@pytest.mark.parametrize('dtype', DTYPES)
def test_fuzz_against_pyg(dtype, path, device):
    r"""A random sweep over configurations and input forms: within 1e-5
    (float32) and 1e-10 (float64) of PyG."""
    rng = random.Random(4321)
    checked = 0
    for trial in itertools.count():
        if checked == 60:
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


class _Model(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = GATv2Conv(5, 4, heads=2, edge_dim=3)

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor,
                edge_attr: torch.Tensor) -> torch.Tensor:
        return self.conv(x, edge_index, edge_attr)


def test_torchscript_and_compile(path):
    # Scripted as a submodule (its forward is overloaded, as PyG's), and
    # under torch.compile: both give the eager result.
    torch.manual_seed(0)
    model = _Model()
    x = torch.randn(6, 5)
    edge_index = make_graph('random', 6, 6)
    edge_attr = torch.randn(edge_index.size(1), 3)
    expected = model(x, edge_index, edge_attr)
    scripted = torch.jit.script(model)
    torch.testing.assert_close(scripted(x, edge_index, edge_attr), expected)
    with pytest.raises(RuntimeError, match='GATv2Conv: torch.jit.script'):
        torch.jit.script(GATv2Conv(5, 4))
    compiled = torch.compile(model, fullgraph=path == 'fused')
    torch.testing.assert_close(compiled(x, edge_index, edge_attr), expected)
