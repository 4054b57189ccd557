r"""The fused GAT attention op: every kernel against the reference, the
reference against PyG's building blocks, gradients, dropout, the graph cache
and bad input."""
import gc

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch_geometric.utils import softmax as pyg_softmax

from pyg_gat_ext.ops import (
    GATGraph,
    _reference,
    cached_gat_graph,
    gat_attention,
    gat_graph,
    use_backend,
)
from pyg_gat_ext.ops.attention import _GraphCache
from tests.conftest import TOL

DTYPES = [torch.float32, torch.float64]


def random_graph(num_src, num_dst, num_edges, seed=0, hub=None):
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(0, num_src, (num_edges, ), generator=g)
    dst = torch.randint(0, num_dst, (num_edges, ), generator=g)
    if hub is not None:  # One target whose degree exceeds a block.
        dst[:num_edges // 2] = hub
    return src, dst


def make_inputs(num_src, num_dst, num_edges, heads, channels, dtype, device,
                num_loops=0, edge_score=False, seed=0):
    g = torch.Generator().manual_seed(seed)

    def rand(*size):
        return torch.randn(*size, generator=g, dtype=dtype).to(device)

    x = rand(num_src, heads, channels).requires_grad_()
    a_src = rand(num_src, heads).requires_grad_()
    a_dst = rand(num_dst, heads).requires_grad_()
    score = None
    if edge_score:
        score = rand(num_edges + num_loops, heads).requires_grad_()
    return x, a_src, a_dst, score


def run(backend, inputs, graph, grad_seed=1, weights=True, **kwargs):
    r"""Outputs and the gradients of a random function of :obj:`out` and
    (if :obj:`weights`) of the attention weights, on one backend."""
    with use_backend(backend):
        res = gat_attention(*inputs[:3], graph, inputs[3],
                            return_attention_weights=weights,
                            generator=torch.Generator().manual_seed(3),
                            **kwargs)
        g = torch.Generator().manual_seed(grad_seed)
        loss = (res.out * torch.randn(res.out.shape, generator=g,
                                      dtype=res.out.dtype).to(res.out)).sum()
        if weights:
            loss = loss + (res.alpha * torch.rand(
                res.alpha.shape, generator=g,
                dtype=res.alpha.dtype).to(res.alpha)).sum()
        leaves = [t for t in inputs if t is not None]
        grads = torch.autograd.grad(loss, leaves, allow_unused=True)
    return (res.out, res.lse, res.alpha) + grads


CASES = [
    # (N_src, N_dst, E, H, C, num_loops, skip, edge_score, dropout, hub)
    (7, 6, 40, 2, 3, 6, True, True, 0.0, None),  # Loops, skipped loops.
    (9, 9, 60, 1, 5, 0, False, False, 0.0, None),  # Plain softmax.
    (9, 9, 60, 3, 4, 9, True, False, 0.4, None),  # Dropout in the kernel.
    (5, 8, 30, 10, 2, 5, True, True, 0.3, None),  # More targets, 8+2 heads.
    (4, 4, 0, 2, 2, 4, True, True, 0.0, None),  # No edges, loops only.
    (6, 7, 0, 2, 2, 0, False, True, 0.0, None),  # Nothing at all.
    (30, 20, 400, 2, 8, 20, True, False, 0.2, 3),  # Degree > BLOCK_E.
    (12, 30, 25, 4, 16, 0, False, True, 0.0, None),  # Isolated targets.
    (20, 16, 200, 8, 8, 16, True, True, 0.2, None),  # The 8-head kernels.
]


@pytest.mark.parametrize('case', CASES)
@pytest.mark.parametrize('dtype', DTYPES)
@pytest.mark.parametrize('index_dtype', [torch.int32, torch.long])
def test_kernels_match_reference(backend, device, case, dtype, index_dtype):
    num_src, num_dst, num_edges, H, C, loops, skip, score, p, hub = case
    src, dst = random_graph(num_src, num_dst, num_edges, hub=hub)
    graph = gat_graph(src, dst, num_src, num_dst)
    graph = GATGraph(*[
        t if k in (0, 3) else t.to(index_dtype) for k, t in enumerate(graph)
    ])
    graph = GATGraph(*[t.to(device) for t in graph])
    inputs = make_inputs(num_src, num_dst, num_edges, H, C, dtype, device,
                         loops, score)
    kwargs = dict(num_loops=loops, remove_self_loops=skip, dropout=p)
    expected = run('reference', inputs, graph, **kwargs)
    actual = run(backend, inputs, graph, **kwargs)
    for i, (a, b) in enumerate(zip(actual, expected, strict=True)):
        torch.testing.assert_close(a, b, **TOL[dtype], msg=f'output {i}')


def test_large_outputs_streamed():
    # Large buffers are written with streaming stores (csrc/common.h): the
    # forward's statistics from 16 MiB, out and grad_x from 128 MiB. Just
    # above the larger size, out, the statistics (through the backward that
    # reads them) and grad_x match the reference.
    from tests.conftest import backend_or_skip
    backend_or_skip('cpp', torch.device('cpu'))
    num_nodes, H, C = 2**19 + 8, 8, 8  # out: 128 MiB and 2 KiB.
    src, dst = random_graph(num_nodes, num_nodes, num_nodes)
    graph = gat_graph(src, dst, num_nodes, num_nodes)
    inputs = make_inputs(num_nodes, num_nodes, num_nodes, H, C,
                         torch.float32, 'cpu', num_nodes)
    assert inputs[0].nbytes >= 128 << 20
    kwargs = dict(num_loops=num_nodes, remove_self_loops=True)
    expected = run('reference', inputs, graph, weights=False, **kwargs)
    actual = run('cpp', inputs, graph, weights=False, **kwargs)
    for i, (a, b) in enumerate(zip(actual, expected, strict=True)):
        torch.testing.assert_close(a, b, **TOL[torch.float32],
                                   msg=f'output {i}')


@pytest.mark.parametrize('dtype', DTYPES)
def test_non_finite_scores(backend, device, dtype):
    # Targets 0-3 and 6-7 have only their self-loop (the softmax's
    # single-edge path), 4 and 5 three edges; scores of +inf, -inf, NaN and
    # a large finite value on each kind give what the reference gives.
    src = torch.tensor([0, 1, 6, 2, 3, 7])
    dst = torch.tensor([4, 4, 4, 5, 5, 5])
    graph = GATGraph(*[t.to(device) for t in gat_graph(src, dst, 8, 8)])
    x, a_src, a_dst, _ = make_inputs(8, 8, 6, 2, 3, dtype, device, 8)
    with torch.no_grad():
        a_dst[:4, 0] = torch.tensor([float('inf'), float('-inf'),
                                     float('nan'), 1e30])
        a_dst[4, 1] = float('inf')
        a_dst[5, 0] = float('nan')
    kwargs = dict(num_loops=8, remove_self_loops=True)
    inputs = (x, a_src, a_dst, None)
    expected = run('reference', inputs, graph, **kwargs)
    actual = run(backend, inputs, graph, **kwargs)
    assert expected[0].isnan().any() and expected[0].isfinite().any()
    for i, (a, b) in enumerate(zip(actual, expected, strict=True)):
        torch.testing.assert_close(a, b, equal_nan=True, **TOL[dtype],
                                   msg=f'output {i}')


@pytest.mark.parametrize('case', CASES)
def test_backward_from_forward_stats(case):
    # Without a gradient of the attention weights, the C++ backward takes
    # D_i and grad_a_dst from the forward's statistics (out and its sum
    # over the edges with a non-positive score, the sum of alpha
    # LeakyReLU'): they match the reference's, and so do the gradients,
    # within rounding of the backward without them (the raw op called
    # without the statistics).
    from tests.conftest import backend_or_skip
    backend_or_skip('cpp', torch.device('cpu'))
    num_src, num_dst, num_edges, H, C, loops, skip, score, p, hub = case
    src, dst = random_graph(num_src, num_dst, num_edges, hub=hub)
    graph = gat_graph(src, dst, num_src, num_dst)
    inputs = make_inputs(num_src, num_dst, num_edges, H, C, torch.float64,
                         'cpu', loops, score)
    kwargs = dict(num_loops=loops, remove_self_loops=skip, dropout=p)
    expected = run('reference', inputs, graph, weights=False, **kwargs)
    actual = run('cpp', inputs, graph, weights=False, **kwargs)
    for i, (a, b) in enumerate(zip(actual, expected, strict=True)):
        torch.testing.assert_close(a, b, **TOL[torch.float64],
                                   msg=f'output {i}')
    seed = torch.tensor([5, 7])
    args = (*[t.detach() if t is not None else t for t in inputs], *graph,
            loops, skip, 0.2, p, seed, False, True)
    op = torch.ops.pyg_gat_ext.gat_attention
    with use_backend('reference'):
        reference = op(*args)
    with use_backend('cpp'):
        out, lse, _, sums, slope_sum = op(*args)
        torch.testing.assert_close(sums, reference[3])
        torch.testing.assert_close(slope_sum, reference[4])
        # float64 is its own accumulator type: N_i alone, O_i is `out`.
        assert sums.shape == (num_dst, 1, H, C) and lse.dtype == sums.dtype
        grad_out = torch.randn_like(out)
        backward = torch.ops.pyg_gat_ext.gat_attention_backward
        rest = (*args[:4], lse, *graph, loops, skip, 0.2, p, seed)
        with_stats = backward(grad_out, None, *rest, sums, slope_sum, out)
        without = backward(grad_out, None, *rest)
        with pytest.raises(ValueError, match="'out' must be the forward's"):
            backward(grad_out, None, *rest, sums, slope_sum)
    for a, b in zip(with_stats, without, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_half_precision_stats_keep_the_unrounded_output():
    # Where `out` is rounded (bfloat16), the statistics hold O_i in float32
    # too ([N, 2, H, C]), and the backward needs no `out`.
    from tests.conftest import backend_or_skip
    backend_or_skip('cpp', torch.device('cpu'))
    src, dst = random_graph(20, 16, 200)
    graph = gat_graph(src, dst, 20, 16)
    inputs = make_inputs(20, 16, 200, 8, 8, torch.bfloat16, 'cpu', 16, False)
    args = (*inputs, *graph, 16, True, 0.2, 0.0, None, False, True)
    with use_backend('cpp'):
        out, lse, _, sums, slope_sum = torch.ops.pyg_gat_ext.gat_attention(
            *args)
        assert sums.shape == (16, 2, 8, 8) and sums.dtype == torch.float32
        assert torch.equal(sums[:, 0].to(out.dtype), out)
        backward = torch.ops.pyg_gat_ext.gat_attention_backward
        rest = (*args[:4], lse, *graph, 16, True, 0.2, 0.0, None)
        grad_out = torch.randn_like(out)
        with_stats = backward(grad_out, None, *rest, sums, slope_sum)
        without = backward(grad_out, None, *rest)
    for a, b in zip(with_stats, without, strict=True):
        torch.testing.assert_close(a, b, atol=2e-2, rtol=2e-2)


def test_reference_matches_pyg_building_blocks():
    # Without dropout, the reference is PyG's GAT message passing spelled
    # out: scores, softmax per target, weighted sum of the source rows.
    num_src, num_dst, E, H, C = 10, 8, 50, 3, 4
    src, dst = random_graph(num_src, num_dst, E)
    x, a_src, a_dst, score = make_inputs(num_src, num_dst, E, H, C,
                                         torch.float64, 'cpu',
                                         edge_score=True)
    res = gat_attention(x, a_src, a_dst, gat_graph(src, dst, num_src,
                                                   num_dst), score,
                        negative_slope=0.1, return_attention_weights=True)
    e = F.leaky_relu(a_src[src] + a_dst[dst] + score, 0.1)
    alpha = pyg_softmax(e, dst, num_nodes=num_dst)
    out = torch.zeros(num_dst, H, C, dtype=x.dtype).index_add_(
        0, dst, alpha.unsqueeze(-1) * x[src])
    torch.testing.assert_close(res.alpha, alpha)
    torch.testing.assert_close(res.out, out)
    lse = torch.full((num_dst, H), float('-inf'), dtype=x.dtype)
    for i in range(num_dst):
        if (dst == i).any():
            lse[i] = e[dst == i].logsumexp(0)
    torch.testing.assert_close(res.lse, lse)


def test_complete_bipartite_equals_dense_attention():
    num_src, num_dst, H, C = 5, 4, 2, 3
    src = torch.arange(num_src).repeat(num_dst)
    dst = torch.arange(num_dst).repeat_interleave(num_src)
    x, a_src, a_dst, _ = make_inputs(num_src, num_dst, 0, H, C,
                                     torch.float64, 'cpu')
    res = gat_attention(x, a_src, a_dst,
                        gat_graph(src, dst, num_src, num_dst))
    scores = F.leaky_relu(a_dst[:, None, :] + a_src[None, :, :], 0.2)
    attention = scores.softmax(dim=1)  # [N_dst, N_src, H]
    torch.testing.assert_close(res.out,
                               torch.einsum('ijh,jhc->ihc', attention, x))


@pytest.mark.parametrize('dropout', [0.0, 0.5])
@pytest.mark.parametrize('weights', [True, False])
def test_gradcheck(backend, device, dropout, weights):
    # With the weights an output, their gradient takes the backward's pass
    # over targets; without, the C++ kernels use the forward's statistics.
    if backend == 'triton' and device.type == 'cpu':
        pytest.skip('interpreted Triton: its gradients are compared with '
                    "the reference's in test_kernels_match_reference")
    num_src, num_dst, E = 6, 5, 20
    src, dst = random_graph(num_src, num_dst, E)
    graph = GATGraph(*[t.to(device) for t in gat_graph(src, dst, 6, 5)])
    inputs = make_inputs(num_src, num_dst, E, 2, 3, torch.float64, device,
                         num_loops=5, edge_score=True)

    def f(x, a_src, a_dst, score):
        res = gat_attention(x, a_src, a_dst, graph, score, num_loops=5,
                            remove_self_loops=True, dropout=dropout,
                            return_attention_weights=weights,
                            generator=torch.Generator().manual_seed(0))
        return (res.out, res.alpha) if weights else res.out

    with use_backend(backend):
        assert torch.autograd.gradcheck(f, inputs)


def test_opcheck():
    src, dst = random_graph(6, 5, 20)
    graph = gat_graph(src, dst, 6, 5)
    x, a_src, a_dst, score = make_inputs(6, 5, 20, 2, 3, torch.float64,
                                         'cpu', num_loops=5, edge_score=True)
    args = (x, a_src, a_dst, score, *graph, 5, True, 0.2, 0.5,
            torch.tensor([1, 2]), True)
    for save_stats in (False, True):  # The backward without and with them.
        torch.library.opcheck(torch.ops.pyg_gat_ext.gat_attention,
                              args + (save_stats, ))


def test_dropout_is_reproducible_and_has_the_right_rate():
    src, dst = random_graph(300, 300, 20000)
    graph = gat_graph(src, dst, 300, 300)
    x, a_src, a_dst, _ = make_inputs(300, 300, 0, 4, 2, torch.float32, 'cpu')

    def weights():
        return gat_attention(x, a_src, a_dst, graph, dropout=0.3,
                             return_attention_weights=True).alpha

    torch.manual_seed(12)
    first = weights()
    torch.manual_seed(12)
    assert torch.equal(weights(), first)  # Same seed, same mask.
    assert not torch.equal(weights(), first)  # The stream moved on.
    kept = (first > 0).double().mean().item()
    # 80k Bernoulli(0.7) draws: five standard deviations is 0.008.
    assert abs(kept - 0.7) < 0.008
    # Kept weights are scaled by 1 / (1 - p): sums per target average 1.
    sums = torch.zeros(300, 4).index_add_(0, dst, first)
    assert abs(sums[sums > 0].mean().item() - 1.0) < 0.02


def test_dropout_hash_is_uniform_and_keyed():
    edges = torch.arange(2**16)
    h = _reference.dropout_hash(edges, 4, (1, 2)).double() / 2**24
    assert abs(h.mean().item() - 0.5) < 0.005
    assert abs(h.var().item() - 1 / 12) < 0.002
    counts = torch.histc(h, bins=16, min=0, max=1)
    assert counts.min() > 0.9 * counts.mean()
    other = _reference.dropout_hash(edges, 4, (1, 3))
    assert (other != h * 2**24).double().mean() > 0.99
    # Edge ids beyond 32 bits are hashed too.
    big = _reference.dropout_hash(edges + 2**32, 4, (1, 2))
    assert (big != h * 2**24).double().mean() > 0.99
    assert _reference.dropout_threshold(0.0) == 0
    assert _reference.dropout_threshold(1.0) == 2**24


@pytest.mark.parametrize('name', ['GATConv', 'GATv2Conv'])
def test_no_edge_level_message_tensor(name):
    # The fused layers never create a tensor as large as the [E, H, C]
    # messages (or GATv2's sums before the LeakyReLU), in the forward or
    # the backward pass; PyG's layers do.
    import torch_geometric.nn as pyg_nn

    import pyg_gat_ext
    num_nodes, E, H, C = 40, 4000, 4, 16

    class LargestTensor(TorchDispatchMode):
        largest = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for t in out if isinstance(out, (tuple, list)) else [out]:
                if isinstance(t, torch.Tensor):
                    self.largest = max(self.largest, t.numel())
            return out

    edge_index = torch.stack(random_graph(num_nodes, num_nodes, E))
    x = torch.randn(num_nodes, 8, requires_grad=True)
    for conv_cls, bounded in [(getattr(pyg_gat_ext, name), True),
                              (getattr(pyg_nn, name), False)]:
        conv = conv_cls(8, C, heads=H, dropout=0.1)
        with LargestTensor() as mode:
            conv(x, edge_index).sum().backward()
        assert (mode.largest < E * H * C // 4) == bounded, conv_cls


def test_graph_cache_reuses_rebuilds_and_forgets():
    cache = _GraphCache(maxsize=3)
    edge_index = torch.stack(random_graph(10, 10, 30))
    graph = cache.get(edge_index, 10, 10, 'source_to_target')
    assert cache.get(edge_index, 10, 10, 'source_to_target') is graph
    assert cache.get(edge_index, 10, 12, 'source_to_target') is not graph
    flipped = cache.get(edge_index, 10, 10, 'target_to_source')
    assert torch.equal(flipped.col.sort().values,
                       edge_index[1].sort().values.int())
    edge_index[0, 0] = (edge_index[0, 0] + 1) % 10  # In place: rebuilt.
    rebuilt = cache.get(edge_index, 10, 10, 'source_to_target')
    assert rebuilt is not graph
    assert torch.equal(rebuilt.colptr, gat_graph(edge_index[0], edge_index[1],
                                                10, 10).colptr)
    # A stream of graphs, as from a loader: bounded, and a dead graph's
    # entry goes with it.
    for seed in range(10):
        cache.get(torch.stack(random_graph(10, 10, 30, seed)), 10, 10,
                  'source_to_target')
        assert len(cache) <= 3
    gc.collect()
    assert len(cache) == 1  # Only `edge_index` is still alive.
    del edge_index
    gc.collect()
    assert len(cache) == 0


def test_cached_graph_is_built_once_per_graph(monkeypatch):
    from pyg_gat_ext.ops import attention
    calls = []
    build = attention.gat_graph

    def counting(*args):
        calls.append(1)
        return build(*args)

    monkeypatch.setattr(attention, 'gat_graph', counting)
    edge_index = torch.stack(random_graph(8, 8, 20, seed=5))
    for _ in range(3):
        cached_gat_graph(edge_index, 8, 8)
    assert len(calls) == 1


def test_bad_input():
    src, dst = random_graph(6, 5, 20)
    graph = gat_graph(src, dst, 6, 5)
    x, a_src, a_dst, score = make_inputs(6, 5, 20, 2, 3, torch.float32,
                                         'cpu', num_loops=5, edge_score=True)
    with pytest.raises(ValueError, match="'x' of shape"):
        gat_attention(x[:, 0], a_src, a_dst, graph)
    with pytest.raises(TypeError, match="floating point 'x'"):
        gat_attention(x.long(), a_src, a_dst, graph)
    with pytest.raises(ValueError, match="'x' of shape"):
        gat_attention(x[:5], a_src, a_dst, graph)
    with pytest.raises(ValueError, match="'a_src' of shape"):
        gat_attention(x, a_src[:, :1], a_dst, graph)
    with pytest.raises(ValueError, match="'a_dst' of shape"):
        gat_attention(x, a_src, a_dst[:4], graph)
    with pytest.raises(TypeError, match="'a_dst' to be a floating point"):
        gat_attention(x, a_src, a_dst.long(), graph)
    with pytest.raises(ValueError, match="'edge_score' of shape"):
        gat_attention(x, a_src, a_dst, graph, score)  # num_loops missing.
    with pytest.raises(ValueError, match="'num_loops'"):
        gat_attention(x, a_src, a_dst, graph, num_loops=6)
    with pytest.raises(ValueError, match="'dropout'"):
        gat_attention(x, a_src, a_dst, graph, dropout=1.5)
    with pytest.raises(TypeError, match="'graph.col'"):
        gat_attention(x, a_src, a_dst, graph._replace(col=graph.col.float()))
    with pytest.raises(ValueError, match='differ in length'):
        gat_attention(x, a_src, a_dst,
                      graph._replace(csr_eid=graph.csr_eid[:-1]))


def corrupt_graphs(graph, num_src, num_dst):
    r"""Malformed variants of :obj:`graph`, each with the error it must
    raise."""
    def edit(name, pos, value):
        t = getattr(graph, name).clone()
        t[pos] = value
        return graph._replace(**{name: t})

    E = graph.num_edges
    return [
        (edit('col', 3, num_src), IndexError, "'graph.col' holds"),
        (edit('col', 0, -1), IndexError, "'graph.col' holds"),
        (edit('csr_eid', 5, E), IndexError, "'graph.csr_eid' holds"),
        (edit('row', 1, num_dst), IndexError, "'graph.row' holds"),
        (edit('csc_eid', 2, -7), IndexError, "'graph.csc_eid' holds"),
        (edit('rowptr', 2, graph.rowptr[3] + 1), ValueError, 'never decrease'),
        (edit('rowptr', 0, 1), ValueError, "'graph.rowptr' must start at 0"),
        (edit('colptr', -1, E - 1), ValueError, "'graph.colptr' must start"),
        (graph._replace(rowptr=graph.rowptr.int()), TypeError,
         'must be int64'),
        (edit('rowptr', -1, E + 1), ValueError,
         'end at the number of edges'),
    ]


def test_malformed_graph_is_rejected_before_any_kernel(backend, device):
    # A hand-made GATGraph whose pointers or indices would send a kernel out
    # of bounds (the Triton kernels do not check) raises a clear error.
    src, dst = random_graph(6, 5, 20)
    graph = GATGraph(*[t.to(device) for t in gat_graph(src, dst, 6, 5)])
    x, a_src, a_dst, _ = make_inputs(6, 5, 20, 2, 3, torch.float32, device)
    with use_backend(backend):
        for bad, error, match in corrupt_graphs(graph, 6, 5):
            with pytest.raises(error, match=match):
                gat_attention(x, a_src, a_dst, bad)
        # A checked graph modified in place afterwards is checked again.
        ok = GATGraph(*[t.clone() for t in graph])
        gat_attention(x, a_src, a_dst, ok)
        ok.col[4] = 6
        with pytest.raises(IndexError, match="'graph.col' holds"):
            gat_attention(x, a_src, a_dst, ok)


def test_cpp_kernel_rejects_a_corrupt_graph():
    # The C++ op checks the graph itself, for callers of the raw operator,
    # with the errors of the Python check (which it replaces on CPU).
    from tests.conftest import backend_or_skip
    backend_or_skip('cpp', torch.device('cpu'))
    src, dst = random_graph(6, 5, 20)
    graph = gat_graph(src, dst, 6, 5)
    x, a_src, a_dst, _ = make_inputs(6, 5, 20, 2, 3, torch.float32, 'cpu')
    op = torch.ops.pyg_gat_ext.gat_attention
    with use_backend('cpp'):
        for bad, error, match in corrupt_graphs(graph, 6, 5):
            with pytest.raises(error, match=match):
                op(x, a_src, a_dst, None, *bad, 0, False, 0.2, 0.0, None,
                   False)

def far_rows_graph(channels=64, num_dst=4):
    r"""A graph whose sources lie past element 2**31 of a :obj:`[N_src, 1,
    channels]` tensor with int32 indices: :obj:`N_src`, the five source
    rows used, the graph and the same edges on the used rows alone."""
    num_src = 2**31 // channels + 8
    used = torch.tensor([0, 5, num_src - 9, num_src - 2, num_src - 1])
    src = used[torch.tensor([4, 3, 2, 0, 4, 1, 3, 4])]
    dst = torch.tensor([0, 0, 1, 1, 2, 3, 3, 3])
    graph = gat_graph(src, dst, num_src, num_dst)
    assert graph.col.dtype == torch.int32
    assert int(src.max()) * channels >= 2**31
    small = gat_graph(torch.searchsorted(used, src), dst, len(used), num_dst)
    return num_src, used, graph, small


def test_cpp_offsets_beyond_32_bits():
    # Source rows past element 2**31 of x: the kernels' offsets are 64-bit
    # even with int32 graph indices. x is 8.6 GB of address space, but only
    # the rows read are ever touched, so the test needs little memory.
    from tests.conftest import backend_or_skip
    backend_or_skip('cpp', torch.device('cpu'))
    C, num_dst = 64, 4
    num_src, used, graph, small = far_rows_graph(C, num_dst)
    x = torch.empty(num_src, 1, C)
    a_src = torch.zeros(num_src, 1)
    g = torch.Generator().manual_seed(0)
    x[used] = torch.randn(len(used), 1, C, generator=g)
    a_src[used] = torch.randn(len(used), 1, generator=g)
    a_dst = torch.randn(num_dst, 1, generator=g)
    with use_backend('cpp'):
        res = gat_attention(x, a_src, a_dst, graph,
                            return_attention_weights=True)
    # The same edges on the five rows alone.
    with use_backend('reference'):
        expected = gat_attention(x[used], a_src[used], a_dst, small,
                                 return_attention_weights=True)
    torch.testing.assert_close(res.out, expected.out)
    torch.testing.assert_close(res.alpha, expected.alpha)


# The documented error bound of half precision (docs/design.rst): relative
# to the largest magnitude of the float32 result on the same (rounded)
# inputs, 8 units of rounding of the format.
HALF_BOUND = {torch.bfloat16: 8 * 2.0**-8, torch.float16: 8 * 2.0**-11}


@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16])
@pytest.mark.parametrize('scale', [1.0, 1e4])
def test_half_precision_error_bound(backend, device, dtype, scale):
    if backend == 'reference':
        pytest.skip('the bound is a property of the kernels')
    num_nodes, num_edges, heads, channels = 60, 500, 4, 16
    if backend == 'triton' and device.type == 'cpu':
        num_nodes, num_edges = 24, 200  # The interpreter: a program a node.
    src, dst = random_graph(num_nodes, num_nodes, num_edges)
    graph = GATGraph(*[
        t.to(device) for t in gat_graph(src, dst, num_nodes, num_nodes)
    ])
    g = torch.Generator().manual_seed(0)
    x = torch.randn(num_nodes, heads, channels, generator=g)
    # Logits of order `scale`, up to +-1e4.
    scores = [
        torch.randn(n, heads, generator=g) * scale
        for n in (num_nodes, num_nodes, num_edges + num_nodes)
    ]
    grad = torch.randn(num_nodes, heads, channels, generator=g).to(dtype)
    results = {}
    for name, dt in (('half', dtype), ('float', torch.float32)):
        inputs = [
            t.to(dtype).to(dt).to(device).requires_grad_()
            for t in [x] + scores
        ]
        with use_backend(backend if name == 'half' else 'reference'):
            res = gat_attention(inputs[0], inputs[1], inputs[2], graph,
                                inputs[3], num_loops=num_nodes,
                                remove_self_loops=True,
                                return_attention_weights=True)
        res.out.backward(grad.to(dt).to(device))
        results[name] = [res.out, res.alpha] + [t.grad for t in inputs]
    bound = HALF_BOUND[dtype]
    # At logits of order 1e4 the softmax saturates and the score gradients
    # are float32 rounding noise (about 1e-6 of the gradients' scale, where
    # float64 gives 1e-12): their error is measured against that scale,
    # the largest feature gradient, not against their own noise.
    grad_scale = results['float'][2].abs().max()
    for k, (half, full) in enumerate(zip(*results.values(), strict=True)):
        assert half.dtype == dtype and torch.isfinite(half).all(), k
        scale_k = full.abs().max()
        if k >= 3 and scale > 1.0:
            scale_k = torch.maximum(scale_k, grad_scale)
        err = (half.float() - full).abs().max() / scale_k
        if k < 3 or dtype == torch.bfloat16 or scale == 1.0:
            assert err <= bound, (k, err.item())
        # Otherwise a score gradient of float16 at logits of order 1e4: its
        # values lie below float16's smallest normal number (6e-5), where
        # float16 itself rounds coarsely; only finiteness is required.


def test_raw_op_takes_non_contiguous_inputs(backend, device):
    # The op's kernels read dense rows: every backend makes its inputs
    # contiguous itself, so a caller of the raw operator may pass views.
    src, dst = random_graph(6, 5, 20)
    graph = GATGraph(*[t.to(device) for t in gat_graph(src, dst, 6, 5)])
    x, a_src, a_dst, _ = make_inputs(6, 5, 20, 2, 3, torch.float64, device)
    x_t = x.detach().transpose(1, 2).contiguous().transpose(1, 2)
    a_src_t = a_src.detach().t().contiguous().t()
    assert not x_t.is_contiguous() and not a_src_t.is_contiguous()
    op = torch.ops.pyg_gat_ext.gat_attention
    args = (a_dst.detach(), None, *graph, 5, False, 0.2, 0.0, None, False)
    with use_backend('reference'):
        expected = op(x.detach(), a_src.detach(), *args)
    with use_backend(backend):
        actual = op(x_t, a_src_t, *args)
    torch.testing.assert_close(actual[0], expected[0], **TOL[torch.float64])
