r"""The fused GATv2 attention op: every kernel against the reference (outputs
and the gradients of x_src, x_dst, att and edge_x), the reference against
PyG's GATv2Conv building blocks, fp64 gradcheck, opcheck, the graph checks
and bad input."""
import pytest
import torch
import torch.nn.functional as F
from torch_geometric.utils import softmax as pyg_softmax

from pyg_gat_ext.ops import GATGraph, gat_graph, gatv2_attention, use_backend
from tests.conftest import TOL
from tests.ops.test_gat_attention import CASES, corrupt_graphs, random_graph

DTYPES = [torch.float32, torch.float64]


def make_inputs(num_src, num_dst, num_edges, heads, channels, dtype, device,
                num_loops=0, edge_x=False, seed=0):
    g = torch.Generator().manual_seed(seed)

    def rand(*size):
        return torch.randn(*size, generator=g, dtype=dtype).to(
            device).requires_grad_()

    edge = rand(num_edges + num_loops, heads, channels) if edge_x else None
    return (rand(num_src, heads, channels), rand(num_dst, heads, channels),
            rand(heads, channels), edge)


def run(backend, inputs, graph, grad_seed=1, **kwargs):
    r"""Outputs and the gradients of a random function of :obj:`out` and
    of the attention weights, on one backend."""
    with use_backend(backend):
        res = gatv2_attention(*inputs[:3], graph, inputs[3],
                              return_attention_weights=True,
                              generator=torch.Generator().manual_seed(3),
                              **kwargs)
        g = torch.Generator().manual_seed(grad_seed)
        loss = (res.out * torch.randn(res.out.shape, generator=g,
                                      dtype=res.out.dtype).to(res.out)).sum()
        loss = loss + (res.alpha * torch.rand(
            res.alpha.shape, generator=g,
            dtype=res.alpha.dtype).to(res.alpha)).sum()
        leaves = [t for t in inputs if t is not None]
        grads = torch.autograd.grad(loss, leaves, allow_unused=True)
    return (res.out, res.lse, res.alpha) + grads


def device_graph(src, dst, num_src, num_dst, device, index_dtype=None):
    graph = gat_graph(src, dst, num_src, num_dst)
    return GATGraph(*[(t if k in (0, 3) or index_dtype is None else
                       t.to(index_dtype)).to(device)
                      for k, t in enumerate(graph)])


@pytest.mark.parametrize('case', CASES)
@pytest.mark.parametrize('dtype', DTYPES)
def test_kernels_match_reference(backend, device, case, dtype):
    num_src, num_dst, num_edges, H, C, loops, skip, edge, p, hub = case
    src, dst = random_graph(num_src, num_dst, num_edges, hub=hub)
    # Both index widths, across the cases rather than for each.
    index_dtype = torch.int32 if CASES.index(case) % 2 else torch.long
    graph = device_graph(src, dst, num_src, num_dst, device, index_dtype)
    inputs = make_inputs(num_src, num_dst, num_edges, H, C, dtype, device,
                         loops, edge)
    kwargs = dict(num_loops=loops, remove_self_loops=skip, dropout=p)
    expected = run('reference', inputs, graph, **kwargs)
    actual = run(backend, inputs, graph, **kwargs)
    for i, (a, b) in enumerate(zip(actual, expected, strict=True)):
        torch.testing.assert_close(a, b, **TOL[dtype], msg=f'output {i}')


def test_reference_matches_pyg_building_blocks():
    # Without dropout, the reference is PyG's GATv2Conv.edge_update and
    # message spelled out: x_i + x_j + edge, LeakyReLU, the dot with att,
    # PyG's softmax per target, the weighted sum of the source rows.
    num_src, num_dst, E, H, C = 10, 8, 50, 3, 4
    src, dst = random_graph(num_src, num_dst, E)
    x_src, x_dst, att, edge_x = make_inputs(num_src, num_dst, E, H, C,
                                            torch.float64, 'cpu',
                                            edge_x=True)
    res = gatv2_attention(x_src, x_dst, att.unsqueeze(0),
                          gat_graph(src, dst, num_src, num_dst), edge_x,
                          negative_slope=0.1, return_attention_weights=True)
    z = F.leaky_relu(x_dst[dst] + x_src[src] + edge_x, 0.1)
    e = (z * att).sum(-1)
    alpha = pyg_softmax(e, dst, num_nodes=num_dst)
    out = torch.zeros(num_dst, H, C, dtype=x_src.dtype).index_add_(
        0, dst, x_src[src] * alpha.unsqueeze(-1))
    torch.testing.assert_close(res.alpha, alpha)
    torch.testing.assert_close(res.out, out)
    lse = torch.full((num_dst, H), float('-inf'), dtype=x_src.dtype)
    for i in range(num_dst):
        if (dst == i).any():
            lse[i] = e[dst == i].logsumexp(0)
    torch.testing.assert_close(res.lse, lse)


@pytest.mark.parametrize('dropout', [0.0, 0.5])
def test_gradcheck(backend, device, dropout):
    if backend == 'triton' and device.type == 'cpu':
        pytest.skip('interpreted Triton: its gradients are compared with '
                    "the reference's in test_kernels_match_reference")
    src, dst = random_graph(6, 5, 20)
    graph = device_graph(src, dst, 6, 5, device)
    inputs = make_inputs(6, 5, 20, 2, 3, torch.float64, device, num_loops=5,
                         edge_x=True)

    def f(x_src, x_dst, att, edge_x):
        res = gatv2_attention(x_src, x_dst, att, graph, edge_x, num_loops=5,
                              remove_self_loops=True, dropout=dropout,
                              return_attention_weights=True,
                              generator=torch.Generator().manual_seed(0))
        return res.out, res.alpha

    with use_backend(backend):
        assert torch.autograd.gradcheck(f, inputs)


def test_opcheck():
    src, dst = random_graph(6, 5, 20)
    graph = gat_graph(src, dst, 6, 5)
    inputs = make_inputs(6, 5, 20, 2, 3, torch.float64, 'cpu', num_loops=5,
                         edge_x=True)
    args = (*inputs, *graph, 5, True, 0.2, 0.5, torch.tensor([1, 2]), True)
    torch.library.opcheck(torch.ops.pyg_gat_ext.gatv2_attention, args)


def test_bad_input():
    src, dst = random_graph(6, 5, 20)
    graph = gat_graph(src, dst, 6, 5)
    x_src, x_dst, att, _ = make_inputs(6, 5, 20, 2, 3, torch.float32, 'cpu')
    cases = [
        ((x_src[0], x_dst, att), {}, ValueError, "'x_src' of shape"),
        ((x_src.long(), x_dst, att), {}, TypeError, "floating point 'x_src'"),
        ((x_src, x_dst[:4], att), {}, ValueError, "'x_dst' of shape"),
        ((x_src, x_dst, att[:, :2]), {}, ValueError, "'att' of shape"),
        ((x_src, x_dst.double(), att), {}, None, None),  # Promoted.
        ((x_src, x_dst, att), {'edge_x': torch.zeros(19, 2, 3)}, ValueError,
         "'edge_x' of shape"),
        ((x_src, x_dst, att), {'num_loops': 6}, ValueError, "'num_loops'"),
        ((x_src, x_dst, att), {'dropout': 1.5}, ValueError, "'dropout'"),
    ]
    for args, kwargs, error, match in cases:
        if error is None:
            assert gatv2_attention(*args, graph, **kwargs).out.dtype == (
                torch.float64)
            continue
        with pytest.raises(error, match=match):
            gatv2_attention(*args, graph, **kwargs)


def test_malformed_graph_is_rejected_before_any_kernel(backend, device):
    src, dst = random_graph(6, 5, 20)
    graph = device_graph(src, dst, 6, 5, device)
    inputs = make_inputs(6, 5, 20, 2, 3, torch.float32, device)[:3]
    with use_backend(backend):
        for bad, error, match in corrupt_graphs(graph, 6, 5):
            with pytest.raises(error, match=match):
                gatv2_attention(*inputs, bad)


def test_raw_op_takes_non_contiguous_inputs(backend, device):
    src, dst = random_graph(6, 5, 20)
    graph = device_graph(src, dst, 6, 5, device)
    x_src, x_dst, att, _ = (t.detach() if t is not None else t
                            for t in make_inputs(6, 5, 20, 2, 3,
                                                 torch.float64, device))
    x_t = x_src.transpose(1, 2).contiguous().transpose(1, 2)
    att_t = att.t().contiguous().t()
    assert not x_t.is_contiguous() and not att_t.is_contiguous()
    op = torch.ops.pyg_gat_ext.gatv2_attention
    args = (None, *graph, 5, False, 0.2, 0.0, None, False)
    with use_backend('reference'):
        expected = op(x_src, x_dst, att, *args)
    with use_backend(backend):
        actual = op(x_t, x_dst, att_t, *args)
    torch.testing.assert_close(actual[0], expected[0], **TOL[torch.float64])
