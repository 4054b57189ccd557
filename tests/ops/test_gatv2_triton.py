r"""What the GATv2 Triton kernels do beyond the op tests of
:mod:`tests.ops.test_gatv2_attention`: targets that share a program of the
backward target pass (the partial sums of grad_att), and half precision."""
import importlib

import pytest
import torch

from pyg_gat_ext.ops import gatv2_attention, use_backend
from tests.conftest import TOL, backend_or_skip
from tests.ops.test_gat_attention import HALF_BOUND, random_graph
from tests.ops.test_gatv2_attention import device_graph, make_inputs, run


@pytest.fixture
def triton_ops(device):
    backend_or_skip('triton', device)
    # The module (the package's attribute of that name is its launcher).
    return importlib.import_module('pyg_gat_ext.ops.triton.gatv2_attention')


def test_programs_walk_several_targets(triton_ops, device, monkeypatch):
    # 3 programs for 11 targets: each walks 3 or 4 of them and adds their
    # edges into one partial sum of grad_att.
    monkeypatch.setattr(triton_ops, 'GRAD_ATT_PROGRAMS', 3)
    src, dst = random_graph(9, 11, 60, hub=2)
    graph = device_graph(src, dst, 9, 11, device)
    inputs = make_inputs(9, 11, 60, 2, 3, torch.float64, device, 9, True)
    kwargs = dict(num_loops=9, remove_self_loops=True, dropout=0.3)
    expected = run('reference', inputs, graph, **kwargs)
    actual = run('triton', inputs, graph, **kwargs)
    for i, (a, b) in enumerate(zip(actual, expected, strict=True)):
        torch.testing.assert_close(a, b, **TOL[torch.float64],
                                   msg=f'output {i}')


@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16])
def test_half_precision_error_bound(triton_ops, device, dtype):
    # GAT's bound (8 units of rounding of the largest float32 magnitude on
    # the same rounded inputs), with float32 scores and accumulators.
    num_nodes, num_edges, heads, channels = 20, 120, 2, 8
    src, dst = random_graph(num_nodes, num_nodes, num_edges)
    graph = device_graph(src, dst, num_nodes, num_nodes, device)
    inputs = make_inputs(num_nodes, num_nodes, num_edges, heads, channels,
                         torch.float32, 'cpu', num_nodes, True)
    grad = torch.randn(num_nodes, heads, channels,
                       generator=torch.Generator().manual_seed(1))
    results = {}
    for name, dt in (('half', dtype), ('float', torch.float32)):
        leaves = [
            t.detach().to(dtype).to(dt).to(device).requires_grad_()
            for t in inputs
        ]
        with use_backend('triton' if name == 'half' else 'reference'):
            res = gatv2_attention(*leaves[:3], graph, leaves[3],
                                  num_loops=num_nodes,
                                  remove_self_loops=True,
                                  return_attention_weights=True)
            res.out.backward(grad.to(dtype).to(dt).to(device))
        results[name] = [res.out, res.alpha] + [t.grad for t in leaves]
    assert results['half'][0].dtype == dtype
    for k, (half, full) in enumerate(zip(*results.values(), strict=True)):
        assert half.dtype == dtype and torch.isfinite(half).all(), k
        err = (half.float() - full).abs().max() / full.abs().max()
        assert err <= HALF_BOUND[dtype], (k, err.item())
