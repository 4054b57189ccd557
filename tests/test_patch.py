r"""pyg_gat_ext.patch(): PyG's model classes built after it use our GATConv
and GATv2Conv and match PyG's (same weights: outputs and every gradient);
unpatch() restores PyG's names; both are idempotent."""
import pytest
import torch
import torch_geometric.nn as pyg_nn
from torch_geometric.nn.conv.gat_conv import GATConv as PyGGATConv
from torch_geometric.nn.conv.gatv2_conv import GATv2Conv as PyGGATv2Conv

import pyg_gat_ext
from pyg_gat_ext import GATConv, GATv2Conv
from tests.conftest import TOL


@pytest.fixture(autouse=True)
def _unpatched():
    pyg_gat_ext.unpatch()
    yield
    pyg_gat_ext.unpatch()


def test_patch_binds_every_name_and_unpatch_restores_them():
    import torch_geometric.nn.conv as conv
    import torch_geometric.nn.conv.gat_conv as gat_conv
    import torch_geometric.nn.conv.gatv2_conv as gatv2_conv
    import torch_geometric.nn.models.basic_gnn as basic_gnn
    names = pyg_gat_ext.patch()
    assert {
        'torch_geometric.nn', 'torch_geometric.nn.conv',
        'torch_geometric.nn.conv.gat_conv',
        'torch_geometric.nn.conv.gatv2_conv',
        'torch_geometric.nn.models.basic_gnn',
        'torch_geometric.nn.models.attentive_fp',
        'torch_geometric.nn.models.polynormer'
    } <= set(names)
    assert pyg_gat_ext.is_patched()
    for module in (pyg_nn, conv, gat_conv, basic_gnn):
        assert module.GATConv is GATConv
    for module in (pyg_nn, conv, gatv2_conv, basic_gnn):
        assert module.GATv2Conv is GATv2Conv
    assert pyg_gat_ext.patch() == []  # Idempotent.
    assert set(pyg_gat_ext.unpatch()) == set(names)
    assert not pyg_gat_ext.is_patched()
    for module in (pyg_nn, conv, gat_conv, basic_gnn):
        assert module.GATConv is PyGGATConv
    for module in (pyg_nn, conv, gatv2_conv, basic_gnn):
        assert module.GATv2Conv is PyGGATv2Conv
    assert pyg_gat_ext.unpatch() == []


def _pair(build):
    # The model built by PyG and, after patch(), by ours, with PyG's
    # weights; both in eval mode (no dropout) and in float64.
    torch.manual_seed(0)
    ref = build().double().eval()
    pyg_gat_ext.patch()
    try:
        ours = build().double().eval()
    finally:
        pyg_gat_ext.unpatch()
    ours.load_state_dict(ref.state_dict())  # strict
    return ref, ours


def _assert_same(ref, ours, inputs, leaves):
    out_ref, out = ref(*inputs), ours(*inputs)
    if isinstance(out_ref, dict):
        out_ref, out = list(out_ref.values()), list(out.values())
    else:
        out_ref, out = [out_ref], [out]
    tol = TOL[torch.float64]
    for a, b in zip(out_ref, out, strict=True):
        torch.testing.assert_close(b, a, **tol)
    g = [torch.randn_like(a) for a in out_ref]
    loss_ref = sum((a * w).sum() for a, w in zip(out_ref, g, strict=True))
    loss = sum((b * w).sum() for b, w in zip(out, g, strict=True))
    params_ref, params = list(ref.parameters()), list(ours.parameters())
    grads_ref = torch.autograd.grad(loss_ref, leaves + params_ref,
                                    allow_unused=True)
    grads = torch.autograd.grad(loss, leaves + params, allow_unused=True)
    for a, b in zip(grads_ref, grads, strict=True):
        if a is None or b is None:
            assert a is None and b is None
        else:
            torch.testing.assert_close(b, a, **tol)


def _graph(num_nodes=12, num_edges=40, channels=6, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(num_nodes, channels, generator=g, dtype=torch.float64)
    edge_index = torch.randint(0, num_nodes, (2, num_edges), generator=g)
    return x.requires_grad_(), edge_index


def test_gat_model():
    from torch_geometric.nn.models import GAT
    ref, ours = _pair(lambda: GAT(6, 16, num_layers=3, out_channels=3,
                                  heads=4, v2=False))
    assert all(isinstance(c, GATConv) for c in ours.convs)
    assert all(isinstance(c, PyGGATConv) for c in ref.convs)
    x, edge_index = _graph()
    _assert_same(ref, ours, (x, edge_index), [x])


def test_gat_v2_model():
    from torch_geometric.nn.models import GAT
    ref, ours = _pair(lambda: GAT(6, 16, num_layers=3, out_channels=3,
                                  heads=4, v2=True, edge_dim=2))
    assert all(isinstance(c, GATv2Conv) for c in ours.convs)
    assert all(isinstance(c, PyGGATv2Conv) for c in ref.convs)
    x, edge_index = _graph()
    edge_attr = torch.randn(edge_index.size(1), 2, dtype=torch.float64)
    _assert_same(ref, ours, (x, edge_index, None, edge_attr), [x])


def test_attentive_fp():
    from torch_geometric.nn.models import AttentiveFP
    ref, ours = _pair(lambda: AttentiveFP(6, 8, 2, edge_dim=3, num_layers=2,
                                          num_timesteps=2))
    assert any(isinstance(m, GATConv) for m in ours.modules())
    x, edge_index = _graph()
    edge_attr = torch.randn(edge_index.size(1), 3, dtype=torch.float64)
    batch = torch.tensor([0] * 6 + [1] * 6)
    _assert_same(ref, ours, (x, edge_index, edge_attr, batch), [x])


def test_polynormer_local_attention():
    from torch_geometric.nn.models import Polynormer
    ref, ours = _pair(lambda: Polynormer(6, 8, 3, local_layers=2,
                                         global_layers=1, heads=2,
                                         local_attn=True))
    assert any(isinstance(m, GATConv) for m in ours.modules())
    x, edge_index = _graph()
    batch = torch.zeros(x.size(0), dtype=torch.long)
    _assert_same(ref, ours, (x, edge_index, batch), [x])


def _hetero_data():
    from torch_geometric.data import HeteroData
    g = torch.Generator().manual_seed(2)
    data = HeteroData()
    data['paper'].x = torch.randn(8, 5, generator=g, dtype=torch.float64)
    data['author'].x = torch.randn(6, 4, generator=g, dtype=torch.float64)
    data['author', 'writes', 'paper'].edge_index = torch.stack(
        [torch.randint(0, 6, (20, ), generator=g),
         torch.randint(0, 8, (20, ), generator=g)])
    data['paper', 'rev_writes', 'author'].edge_index = data[
        'author', 'writes', 'paper'].edge_index.flip(0)
    return data


def test_to_hetero():
    data = _hetero_data()

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = pyg_nn.GATConv((-1, -1), 8, heads=2,
                                       add_self_loops=False)

        def forward(self, x, edge_index):
            return self.conv(x, edge_index)

    def build():
        model = pyg_nn.to_hetero(Net(), data.metadata())
        with torch.no_grad():  # Materialise the lazy parameters.
            model.double()(data.x_dict, data.edge_index_dict)
        return model

    ref, ours = _pair(build)
    assert any(isinstance(m, GATConv) for m in ours.modules())
    _assert_same(ref, ours, (data.x_dict, data.edge_index_dict), [])


def test_hetero_conv():
    data = _hetero_data()

    def build():
        model = pyg_nn.HeteroConv({
            edge_type: pyg_nn.GATConv((-1, -1), 8, heads=2,
                                      add_self_loops=False)
            for edge_type in data.edge_types
        })
        with torch.no_grad():
            model.double()(data.x_dict, data.edge_index_dict)
        return model

    ref, ours = _pair(build)
    assert any(isinstance(m, GATConv) for m in ours.modules())
    _assert_same(ref, ours, (data.x_dict, data.edge_index_dict), [])
