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
from tests.ops.test_gat_attention import (
    CASES,
    HALF_BOUND,
    corrupt_graphs,
    far_rows_graph,
    random_graph,
)

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


def test_cpp_kernel_rejects_a_corrupt_graph():
    # The C++ op checks the graph itself, for callers of the raw operator,
    # with the errors of the Python check (which it replaces on CPU).
    from tests.conftest import backend_or_skip
    backend_or_skip('cpp', torch.device('cpu'))
    src, dst = random_graph(6, 5, 20)
    graph = gat_graph(src, dst, 6, 5)
    x_src, x_dst, att, _ = make_inputs(6, 5, 20, 2, 3, torch.float32, 'cpu')
    lse = torch.zeros(5, 2)
    with use_backend('cpp'):
        for bad, error, match in corrupt_graphs(graph, 6, 5):
            with pytest.raises(error, match=match):
                torch.ops.pyg_gat_ext.gatv2_attention(
                    x_src, x_dst, att, None, *bad, 0, False, 0.2, 0.0, None,
                    False)
            with pytest.raises(error, match=match):
                torch.ops.pyg_gat_ext.gatv2_attention_backward(
                    x_dst, None, x_src, x_dst, att, None, lse, *bad, 0, False,
                    0.2, 0.0, None)


def test_cpp_kernel_rejects_bad_tensors():
    # The raw operator's contract on shapes and dtypes: clear errors, never
    # an out-of-bounds read.
    from tests.conftest import backend_or_skip
    backend_or_skip('cpp', torch.device('cpu'))
    src, dst = random_graph(6, 5, 20)
    graph = gat_graph(src, dst, 6, 5)
    x_src, x_dst, att, _ = (t.detach() if t is not None else t
                            for t in make_inputs(6, 5, 20, 2, 3,
                                                 torch.float32, 'cpu'))
    op = torch.ops.pyg_gat_ext.gatv2_attention
    tail = (*graph, 0, False, 0.2, 0.0, None, False)
    cases = [
        ((x_src[0], x_dst, att, None), ValueError, 'x_src must be'),
        ((x_src.long(), x_dst, att, None), TypeError, 'x_src must be float'),
        ((x_src, x_dst[:4], att, None), ValueError, 'x_dst must be'),
        ((x_src, x_dst, att[:, :2], None), ValueError, 'att must be'),
        ((x_src, x_dst.double(), att, None), TypeError, 'dtype of x_src'),
        ((x_src, x_dst, att, torch.zeros(19, 2, 3)), ValueError,
         'edge_x must be'),
    ]
    with use_backend('cpp'):
        for args, error, match in cases:
            with pytest.raises(error, match=match):
                op(*args, *tail)
        out, lse, _ = op(x_src, x_dst, att, None, *tail)
        backward = torch.ops.pyg_gat_ext.gatv2_attention_backward
        rest = (x_src, x_dst, att, None)
        with pytest.raises(ValueError, match='grad_out must be'):
            backward(out[:4], None, *rest, lse, *tail[:-1])
        with pytest.raises(TypeError, match='lse must be'):
            backward(out, None, *rest, lse.double(), *tail[:-1])
        with pytest.raises(ValueError, match='grad_alpha must be'):
            backward(out, torch.ones(3, 2), *rest, lse, *tail[:-1])


def cpp_hub_case(num_nodes, num_edges, H, C, dtype, hub, dropout):
    r"""Inputs, graph and op arguments of a C++ test on a graph whose node
    :obj:`hub` is the target of half the edges, with self-loops (and the
    explicit ones skipped), edge features and dropout."""
    from tests.conftest import backend_or_skip
    backend_or_skip('cpp', torch.device('cpu'))
    src, dst = random_graph(num_nodes, num_nodes, num_edges, hub=hub)
    graph = gat_graph(src, dst, num_nodes, num_nodes)
    inputs = make_inputs(num_nodes, num_nodes, num_edges, H, C, dtype, 'cpu',
                         num_loops=num_nodes, edge_x=True)
    kwargs = dict(num_loops=num_nodes, remove_self_loops=True,
                  dropout=dropout)
    return inputs, graph, kwargs


@pytest.mark.parametrize('case', [
    # The C++ backward keeps a target's sums for at most 512 edges (a hub
    # with more computes them again) and leaves each edge the signs of its
    # H C sums in 64-bit words: a hub of 700 edges and H C = 90 (two words,
    # the second partial), in float64.
    (40, 1400, 3, 30, torch.float64, 7),
    # 8 heads x 8 float32 channels take the C++ kernels' transposed
    # reduction of the per-head dot products (the score and <g_i, x_j>),
    # in the forward and in both backward passes.
    (60, 1500, 8, 8, torch.float32, 3),
])
def test_cpp_on_a_hub_matches_reference(case):
    num_nodes, num_edges, H, C, dtype, hub = case
    inputs, graph, kwargs = cpp_hub_case(num_nodes, num_edges, H, C, dtype,
                                         hub=hub, dropout=0.2)
    expected = run('reference', inputs, graph, **kwargs)
    actual = run('cpp', inputs, graph, **kwargs)
    for i, (a, b) in enumerate(zip(actual, expected, strict=True)):
        torch.testing.assert_close(a, b, **TOL[dtype], msg=f'output {i}')


def test_cpp_result_does_not_depend_on_the_thread_count():
    # Enough edges for several blocks of nodes (a block holds about 2048
    # edges): the partial sums of grad_att over fixed blocks, and no
    # atomics, give the same bits with 1 and 2 threads.
    inputs, graph, kwargs = cpp_hub_case(600, 12000, 2, 8, torch.float32,
                                         hub=5, dropout=0.3)
    threads = torch.get_num_threads()
    results = []
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            results.append(run('cpp', inputs, graph, **kwargs))
    finally:
        torch.set_num_threads(threads)
    for k, (a, b) in enumerate(zip(*results, strict=True)):
        assert torch.equal(a, b), k


@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16])
def test_half_precision_error_bound(backend, device, dtype):
    # The kernels read half-precision rows and compute in float32: within
    # GAT's documented bound of the float32 reference on the same (rounded)
    # inputs.
    if backend == 'reference':
        pytest.skip('the bound is a property of the kernels')
    if backend == 'triton' and device.type == 'cpu':
        pytest.skip('interpreted Triton: too slow for this graph')
    num_nodes, num_edges, H, C = 60, 500, 4, 16
    src, dst = random_graph(num_nodes, num_nodes, num_edges)
    graph = device_graph(src, dst, num_nodes, num_nodes, device)
    inputs = make_inputs(num_nodes, num_nodes, num_edges, H, C,
                         torch.float32, 'cpu', num_loops=num_nodes,
                         edge_x=True)
    g = torch.Generator().manual_seed(1)
    grad = torch.randn(num_nodes, H, C, generator=g).to(dtype)
    results = {}
    for name, dt in (('half', dtype), ('float', torch.float32)):
        leaves = [t.detach().to(dtype).to(dt).to(device).requires_grad_()
                  for t in inputs]
        with use_backend(backend if name == 'half' else 'reference'):
            res = gatv2_attention(*leaves[:3], graph, leaves[3],
                                  num_loops=num_nodes, remove_self_loops=True,
                                  return_attention_weights=True)
        res.out.backward(grad.to(dt).to(device))
        results[name] = [res.out, res.alpha] + [t.grad for t in leaves]
    bound = HALF_BOUND[dtype]
    for k, (half, full) in enumerate(zip(*results.values(), strict=True)):
        assert half.dtype == dtype and torch.isfinite(half).all(), k
        err = (half.float() - full).abs().max() / full.abs().max()
        assert err <= bound, (k, err.item())


def test_cpp_offsets_beyond_32_bits():
    # Source rows past element 2**31 of x_src: the kernels' offsets are
    # 64-bit even with int32 graph indices. x_src is 8.6 GB of address
    # space, but only the rows read are ever touched (the forward only: the
    # backward writes a gradient row for every source).
    from tests.conftest import backend_or_skip
    backend_or_skip('cpp', torch.device('cpu'))
    C, num_dst = 64, 4
    num_src, used, graph, small = far_rows_graph(C, num_dst)
    x_src = torch.empty(num_src, 1, C)
    g = torch.Generator().manual_seed(0)
    x_src[used] = torch.randn(len(used), 1, C, generator=g)
    x_dst = torch.randn(num_dst, 1, C, generator=g)
    att = torch.randn(1, C, generator=g)
    with use_backend('cpp'):
        res = gatv2_attention(x_src, x_dst, att, graph,
                              return_attention_weights=True)
    # The same edges on the five rows alone.
    with use_backend('reference'):
        expected = gatv2_attention(x_src[used], x_dst, att, small,
                                   return_attention_weights=True)
    torch.testing.assert_close(res.out, expected.out)
    torch.testing.assert_close(res.alpha, expected.alpha)
