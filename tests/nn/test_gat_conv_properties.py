r"""Property-based tests (hypothesis) of :class:`pyg_gat_ext.GATConv` on the
fused path against PyG's layer, and of its determinism, half precision and
memory use over repeated passes."""
import gc

import pytest
import torch
import torch_geometric.nn as pyg_nn
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyg_gat_ext import GATConv
from pyg_gat_ext.memory import peak_memory
from pyg_gat_ext.ops import use_backend
from pyg_gat_ext.ops.attention import graph_cache


@st.composite
def graphs(draw):
    r"""A random graph: empty, isolated nodes, multi-edges, self-loops, or
    power-law in-degrees (a few targets take most edges)."""
    num_nodes = draw(st.integers(1, 24))
    num_edges = draw(st.integers(0, 80))
    seed = draw(st.integers(0, 2**31 - 1))
    kind = draw(st.sampled_from(['uniform', 'power_law', 'loops', 'multi']))
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(0, num_nodes, (num_edges, ), generator=g)
    if kind == 'power_law' and num_edges > 0:
        w = torch.arange(1, num_nodes + 1, dtype=torch.float).pow(-1.5)
        dst = torch.multinomial(w, num_edges, True, generator=g)
    else:
        dst = torch.randint(0, num_nodes, (num_edges, ), generator=g)
    if kind == 'loops' and num_edges > 0:
        dst[::2] = src[::2]
    if kind == 'multi' and num_edges > 1:
        src[num_edges // 2:] = src[:num_edges - num_edges // 2].clone()
        dst[num_edges // 2:] = dst[:num_edges - num_edges // 2].clone()
    return num_nodes, torch.stack([src, dst]), seed


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(graph=graphs(), heads=st.integers(1, 3), channels=st.integers(1, 5),
       add_self_loops=st.booleans(), concat=st.booleans(),
       edge_dim=st.sampled_from([None, 2]),
       fill_value=st.sampled_from(['mean', 'add', 'max', 0.5]))
def test_fused_layer_matches_pyg(graph, heads, channels, add_self_loops,
                                 concat, edge_dim, fill_value):
    num_nodes, edge_index, seed = graph
    torch.manual_seed(seed)
    kwargs = dict(heads=heads, add_self_loops=add_self_loops, concat=concat,
                  edge_dim=edge_dim, fill_value=fill_value)
    ref = pyg_nn.GATConv(4, channels, **kwargs).double()
    ours = GATConv(4, channels, fused=True, **kwargs).double()
    ours.load_state_dict(ref.state_dict())
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(num_nodes, 4, generator=g, dtype=torch.double)
    edge_attr = None
    if edge_dim is not None:
        edge_attr = torch.randn(edge_index.size(1), edge_dim, generator=g,
                                dtype=torch.double)
    results = []
    for conv in (ref, ours):
        xi = x.clone().requires_grad_()
        out, (ei, alpha) = conv(xi, edge_index, edge_attr,
                                return_attention_weights=True)
        (out.square().sum() + alpha.sum()).backward()
        results.append((out, ei, alpha, xi.grad))
    for a, b in zip(results[0], results[1], strict=True):
        torch.testing.assert_close(b, a, atol=1e-10, rtol=1e-10)


def _run_twice(make_input, device):
    outs = []
    for _ in range(2):
        torch.manual_seed(0)
        conv = GATConv(6, 4, heads=3, dropout=0.3, edge_dim=2).to(device)
        x, edge_index, edge_attr = [t.to(device) for t in make_input()]
        x.requires_grad_()
        out = conv(x, edge_index, edge_attr)
        out.square().sum().backward()
        outs.append([out, x.grad] + [p.grad for p in conv.parameters()])
    return outs


def test_deterministic_algorithms_give_bitwise_identical_runs(
        backend, device):
    # No kernel uses atomics: with deterministic algorithms on, two runs
    # (attention dropout included) agree bit for bit, on every backend
    # (Triton under its interpreter on a machine without a GPU).
    # (Smaller for the Triton interpreter, which runs a program a node.)
    nodes, edges = (60, 600) if backend == 'triton' else (200, 3000)

    def make_input():
        g = torch.Generator().manual_seed(1)
        edge_index = torch.randint(0, nodes, (2, edges), generator=g)
        return (torch.randn(nodes, 6, generator=g), edge_index,
                torch.randn(edges, 2, generator=g))

    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        with use_backend(backend):
            first, second = _run_twice(make_input, device)
    finally:
        torch.use_deterministic_algorithms(previous)
    for a, b in zip(first, second, strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16])
def test_half_precision_forward_and_backward(dtype, device):
    # Half features and scores, float32 softmax and accumulation inside the
    # kernel: finite for logits up to 1e4, close to the float32 result.
    torch.manual_seed(0)
    conv = GATConv(8, 4, heads=2).to(device)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(50, 8, generator=g).to(device)
    edge_index = torch.randint(0, 50, (2, 400), generator=g).to(device)
    expected = conv(x, edge_index)
    out = conv.to(dtype)(x.to(dtype).requires_grad_(), edge_index)
    assert out.dtype == dtype and torch.isfinite(out).all()
    torch.testing.assert_close(out.float(), expected, atol=0.05, rtol=0.05)
    out.float().sum().backward()
    with torch.no_grad():
        conv.att_src.mul_(1e4)  # Logits of order 1e4.
    out = conv(x.to(dtype), edge_index)
    assert torch.isfinite(out).all()


def test_repeated_passes_do_not_grow_memory():
    # Repeated forward and backward passes on one graph, and on a stream of
    # new graphs (as from a loader): the graph cache stays bounded and the
    # process's memory returns to the same level.
    conv = GATConv(16, 8, heads=4)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2000, 16, generator=g)
    fixed = torch.randint(0, 2000, (2, 40000), generator=g)

    def step(edge_index):
        conv(x, edge_index).sum().backward()

    for edge_index in [fixed] * 3 + [
            torch.randint(0, 2000, (2, 40000), generator=g) for _ in range(3)
    ]:
        step(edge_index)  # Warm-up: kernels, allocator, cache entries.
    gc.collect()
    with peak_memory() as first:
        for _ in range(5):
            step(fixed)
        for _ in range(20):
            step(torch.randint(0, 2000, (2, 40000), generator=g))
            assert len(graph_cache) <= graph_cache.maxsize
    with peak_memory() as second:
        for _ in range(5):
            step(fixed)
        for _ in range(20):
            step(torch.randint(0, 2000, (2, 40000), generator=g))
    if first.bytes is None:
        pytest.skip('peak memory is not measurable on this platform')
    # The second round needs no more than the first (up to allocator noise).
    assert second.bytes <= first.bytes + 16 * 2**20


def _pair(**kwargs):
    torch.manual_seed(0)
    ref = pyg_nn.GATConv(5, 3, heads=2, **kwargs)
    ours = GATConv(5, 3, heads=2, fused=True, **kwargs)
    ours.load_state_dict(ref.state_dict())
    return ref, ours


@pytest.mark.parametrize('case', [
    'int32_index', 'noncontiguous', 'expanded', 'nan_feature', 'inf_feature',
    'huge_logits'
])
def test_hostile_but_valid_input_as_pyg(case):
    # Inputs that are legal but unusual get exactly PyG's result (NaN and
    # Inf propagate as in PyG's softmax).
    ref, ours = _pair()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(8, 5, generator=g)
    edge_index = torch.randint(0, 8, (2, 30), generator=g)
    ref_index = edge_index
    if case == 'int32_index':
        edge_index = edge_index.int()
    elif case == 'noncontiguous':
        x = torch.randn(5, 8, generator=g).t()
        edge_index = torch.randint(0, 8, (30, 2), generator=g).t()
        ref_index = edge_index.contiguous()
    elif case == 'expanded':
        x = torch.randn(1, 5, generator=g).expand(8, 5)
    elif case == 'nan_feature':
        x[3, 1] = float('nan')
    elif case == 'inf_feature':
        x[2, 0] = float('inf')
    elif case == 'huge_logits':
        with torch.no_grad():
            for conv in (ref, ours):
                conv.att_src.mul_(1e4)
    expected = ref(x, ref_index)
    torch.testing.assert_close(ours(x, edge_index), expected, equal_nan=True)
