r"""GATConv inside the PyG and PyTorch machinery: TorchScript,
torch.compile, to_hetero, explain, NeighborLoader, half precision, autocast,
subclasses and hooks; each compared with PyG's GATConv where PyG works."""
import copy
from typing import Optional, Tuple

import pytest
import torch
import torch.nn.functional as F
import torch_geometric.nn as pyg_nn
from torch import Tensor
from torch_geometric.data import Data, HeteroData
from torch_geometric.typing import WITH_TORCH_SPARSE, Adj, Size, SparseTensor

from pyg_gat_ext import GATConv
from pyg_gat_ext.nn._fused import use_fused
from tests.conftest import TOL
from tests.helpers import make_graph
from tests.nn.test_gat_conv_parity import make_layers


class Wrap(torch.nn.Module):
    r"""Scripted callers of an overloaded :meth:`forward` need a typed
    signature, as in PyG's own tests."""
    def __init__(self, conv):
        super().__init__()
        self.conv = conv

    def forward(self, x: Tensor, edge_index: Adj, size: Size = None) -> Tensor:
        return self.conv(x, edge_index, size=size)


class WrapAttention(torch.nn.Module):
    def __init__(self, conv):
        super().__init__()
        self.conv = conv

    def forward(self, x: Tensor, edge_index: Tensor,
                edge_attr: Optional[Tensor] = None
                ) -> Tuple[Tensor, Tuple[Tensor, Tensor]]:
        return self.conv(x, edge_index, edge_attr,
                         return_attention_weights=True)


class WrapBipartite(torch.nn.Module):
    def __init__(self, conv):
        super().__init__()
        self.conv = conv

    def forward(self, x: Tuple[Tensor, Optional[Tensor]], edge_index: Adj,
                size: Size = None) -> Tensor:
        return self.conv(x, edge_index, size=size)


@pytest.mark.parametrize('edge_dim', [None, 2])
def test_jit_script(edge_dim, device):
    ours = GATConv(5, 4, heads=2, edge_dim=edge_dim).to(device)
    x = torch.randn(6, 5, device=device)
    edge_index = make_graph('self_loops', 6, 6).to(device)
    edge_attr = None
    if edge_dim is not None:
        edge_attr = torch.randn(edge_index.size(1), edge_dim, device=device)
    out, (ei, alpha) = ours(x, edge_index, edge_attr,
                            return_attention_weights=True)

    # Scripted, an edge list takes the same fused kernel: the same bits, as
    # PyG's own tests compare scripted and eager results at atol=1e-8.
    jit = torch.jit.script(WrapAttention(ours))
    jit_out, (jit_ei, jit_alpha) = jit(x, edge_index, edge_attr)
    assert torch.equal(jit_out, out)
    assert torch.equal(jit_ei, ei)
    assert torch.equal(jit_alpha, alpha)
    x_grad = x.clone().requires_grad_()
    jit(x_grad, edge_index, edge_attr)[0].square().sum().backward()
    x_ref = x.clone().requires_grad_()
    ours(x_ref, edge_index, edge_attr).square().sum().backward()
    assert torch.equal(x_grad.grad, x_ref.grad)

    if edge_dim is None:
        jit = torch.jit.script(Wrap(ours))
        torch.testing.assert_close(jit(x, edge_index), out)
        torch.testing.assert_close(jit(x, edge_index, size=(6, 6)), out)
        with pytest.raises(Exception, match="out of range for 6"):
            jit(x, torch.tensor([[0, 7], [1, 2]], device=device))


def test_jit_script_bipartite_and_sparse(device):
    conv = GATConv((5, 7), 4, heads=2).to(device)
    x = (torch.randn(6, 5, device=device), torch.randn(3, 7, device=device))
    edge_index = make_graph('random', 6, 3).to(device)
    jit = torch.jit.script(WrapBipartite(conv))
    torch.testing.assert_close(jit(x, edge_index), conv(x, edge_index))
    torch.testing.assert_close(jit((x[0], None), edge_index, (6, 3)),
                               conv((x[0], None), edge_index, size=(6, 3)))
    if WITH_TORCH_SPARSE:
        adj = SparseTensor.from_edge_index(edge_index,
                                           sparse_sizes=(6, 3)).t()
        torch.testing.assert_close(jit(x, adj), conv(x, edge_index),
                                   atol=1e-6, rtol=1e-5)


def test_scripting_the_bare_layer_says_how():
    # Scripted alone, the layer would have no callable `forward` (its
    # overloads get other names): ours says so at script time. As a
    # submodule it scripts.
    with pytest.raises(RuntimeError, match='Script the module that calls'):
        torch.jit.script(GATConv(5, 4))
    torch.jit.script(Wrap(GATConv(5, 4)))


def test_scripted_path_is_chosen_at_script_time():
    # `fused=False` (like a subclass's hooks) gives the `MessagePassing`
    # path in the scripted model too: the same bits as the eager one.
    torch.manual_seed(0)
    conv = GATConv(5, 4, heads=2, fused=False)
    x, edge_index = torch.randn(6, 5), make_graph('random', 6, 6)
    jit = torch.jit.script(Wrap(conv))
    assert torch.equal(jit(x, edge_index), conv(x, edge_index))
    conv.fused = None  # Scripted again: the fused kernel, as eager.
    assert torch.equal(torch.jit.script(Wrap(conv))(x, edge_index),
                       conv(x, edge_index))


def test_pyg_gat_conv_fails_to_script():
    # Why scripting is worth a test: PyG 2.8's own layer does not script.
    with pytest.raises(RuntimeError, match='return_attention_weights'):
        torch.jit.script(WrapAttention(pyg_nn.GATConv(5, 4)))


def _compare_compiled(conv, compiled, x, edge_index):
    x1 = x.clone().requires_grad_()
    x2 = x.clone().requires_grad_()
    out, out_c = conv(x1, edge_index), compiled(x2, edge_index)
    torch.testing.assert_close(out_c, out, atol=1e-5, rtol=1e-5)
    out.square().sum().backward()
    out_c.square().sum().backward()
    torch.testing.assert_close(x2.grad, x1.grad, atol=1e-5, rtol=1e-5)


def test_compile_fullgraph_without_self_loops():
    torch._dynamo.reset()
    conv = GATConv(5, 4, heads=2, add_self_loops=False)
    x = torch.randn(8, 5)
    edge_index = make_graph('random', 8, 8)
    compiled = torch.compile(conv, fullgraph=True)
    _compare_compiled(conv, compiled, x, edge_index)


def test_compile_default_arguments():
    torch._dynamo.reset()
    conv = GATConv(5, 4, heads=2)
    x = torch.randn(8, 5)
    edge_index = make_graph('self_loops', 8, 8)
    compiled = torch.compile(conv)
    _compare_compiled(conv, compiled, x, edge_index)


def test_compile_fullgraph_default_arguments_on_the_fused_path():
    # The fused kernel adds self-loops implicitly (no data-dependent
    # shapes), so the default layer compiles as one graph, training mode
    # with attention dropout included.
    torch._dynamo.reset()
    conv = GATConv(5, 4, heads=2)
    x = torch.randn(8, 5)
    edge_index = make_graph('self_loops', 8, 8)
    compiled = torch.compile(conv, fullgraph=True)
    _compare_compiled(conv, compiled, x, edge_index)
    conv.dropout = 0.5
    out = compiled(x, edge_index)
    assert out.shape == (8, 8) and torch.isfinite(out).all()


def test_compile_dynamic_compiles_once_for_every_graph_size():
    # Mini-batches (NeighborLoader) change the node and edge counts at every
    # step: the ops take them as SymInt, so one graph serves every size.
    from torch._dynamo.utils import counters
    torch._dynamo.reset()
    counters.clear()
    torch.manual_seed(0)
    conv = GATConv(5, 4, heads=2)
    compiled = torch.compile(conv, dynamic=True, fullgraph=True)
    for num_nodes, num_edges in ((9, 20), (13, 31), (20, 47)):
        x = torch.randn(num_nodes, 5)
        edge_index = torch.randint(0, num_nodes, (2, num_edges))
        _compare_compiled(conv, compiled, x, edge_index)
    assert counters['stats']['unique_graphs'] == 1


def _hetero_data():
    g = torch.Generator().manual_seed(0)
    data = HeteroData()
    data['paper'].x = torch.randn(8, 6, generator=g)
    data['author'].x = torch.randn(5, 3, generator=g)
    data['author', 'writes', 'paper'].edge_index = torch.stack([
        torch.randint(0, 5, (15, ), generator=g),
        torch.randint(0, 8, (15, ), generator=g)
    ])
    data['paper', 'cites', 'paper'].edge_index = make_graph('random', 8, 8)
    data['paper', 'rev_writes', 'author'].edge_index = data[
        'author', 'writes', 'paper'].edge_index.flip(0)
    return data


class HomoGAT(torch.nn.Module):
    def __init__(self, conv_cls):
        super().__init__()
        self.conv1 = conv_cls((-1, -1), 8, heads=2, add_self_loops=False)
        self.conv2 = conv_cls((-1, -1), 4, add_self_loops=False)

    def forward(self, x, edge_index):
        return self.conv2(self.conv1(x, edge_index).relu(), edge_index)


def test_to_hetero():
    data = _hetero_data()
    ref = pyg_nn.to_hetero(HomoGAT(pyg_nn.GATConv), data.metadata())
    ours = pyg_nn.to_hetero(HomoGAT(GATConv), data.metadata())
    with torch.no_grad():  # Materialise the lazy parameters.
        ref(data.x_dict, data.edge_index_dict)
        ours(data.x_dict, data.edge_index_dict)
    ours.load_state_dict(ref.state_dict())
    ref_out = ref(data.x_dict, data.edge_index_dict)
    out = ours(data.x_dict, data.edge_index_dict)
    assert out.keys() == ref_out.keys()
    for key in out:
        torch.testing.assert_close(out[key], ref_out[key])
    sum(o.sum() for o in out.values()).backward()
    sum(o.sum() for o in ref_out.values()).backward()
    for (name, p), (_, q) in zip(ours.named_parameters(),
                                 ref.named_parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, msg=name)


class NodeGAT(torch.nn.Module):
    def __init__(self, conv_cls, in_channels=5, num_classes=3):
        super().__init__()
        self.conv1 = conv_cls(in_channels, 4, heads=2)
        self.conv2 = conv_cls(8, num_classes)

    def forward(self, x, edge_index):
        return self.conv2(F.elu(self.conv1(x, edge_index)), edge_index)


def _explain(model, algorithm, x, edge_index):
    from torch_geometric.explain import Explainer
    explainer = Explainer(
        model=model, algorithm=algorithm, explanation_type='model',
        edge_mask_type='object', node_mask_type=None,
        model_config=dict(mode='multiclass_classification',
                          task_level='node', return_type='raw'))
    torch.manual_seed(5)
    return explainer(x, edge_index, index=2)


@pytest.mark.parametrize('algorithm', ['gnn', 'attention'])
def test_explain(algorithm):
    from torch_geometric.explain.algorithm import (
        AttentionExplainer,
        GNNExplainer,
    )
    make = dict(gnn=lambda: GNNExplainer(epochs=5),
                attention=lambda: AttentionExplainer())[algorithm]
    torch.manual_seed(0)
    ref = NodeGAT(pyg_nn.GATConv)
    ours = NodeGAT(GATConv)
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(10, 5)
    edge_index = make_graph('self_loops', 10, 10)
    ref_exp = _explain(ref, make(), x, edge_index)
    exp = _explain(ours, make(), x, edge_index)
    assert exp.edge_mask.shape == (edge_index.size(1), )
    assert exp.edge_mask.abs().sum() > 0
    torch.testing.assert_close(exp.edge_mask, ref_exp.edge_mask)
    # The explain flags are reset afterwards:
    assert not any(getattr(m, 'explain', False) for m in ours.modules())


@pytest.mark.skipif(not WITH_TORCH_SPARSE,
                    reason="NeighborLoader needs 'torch-sparse' or 'pyg-lib'")
def test_neighbor_loader_training_step():
    from torch_geometric.loader import NeighborLoader
    g = torch.Generator().manual_seed(0)
    data = Data(x=torch.randn(60, 5, generator=g),
                edge_index=torch.randint(0, 60, (2, 300), generator=g),
                y=torch.randint(0, 3, (60, ), generator=g))
    loader = NeighborLoader(data, num_neighbors=[4, 3], batch_size=8,
                            shuffle=False)
    torch.manual_seed(0)
    ref = NodeGAT(pyg_nn.GATConv)
    ours = NodeGAT(GATConv)
    ours.load_state_dict(ref.state_dict())
    opts = [torch.optim.Adam(m.parameters(), lr=0.01) for m in (ref, ours)]
    for step, batch in enumerate(loader):
        losses = []
        for model, opt in zip((ref, ours), opts, strict=True):
            opt.zero_grad()
            out = model(batch.x, batch.edge_index)[:batch.batch_size]
            loss = F.cross_entropy(out, batch.y[:batch.batch_size])
            loss.backward()
            opt.step()
            losses.append(loss)
        torch.testing.assert_close(losses[1], losses[0])
        if step == 2:
            break
    for p, q in zip(ours.parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(p, q)


def test_half_precision(device):
    ref, ours = make_layers(5, 4, torch.float32, device, heads=2)
    x = torch.randn(8, 5, device=device)
    edge_index = make_graph('random', 8, 8).to(device)
    expected = ref(x, edge_index)  # float32
    ref, ours = ref.half(), ours.half()
    out = ours(x.half(), edge_index)
    assert out.dtype == torch.half and torch.isfinite(out).all()
    # Our kernels compute the softmax in float32, PyG in half: both are
    # within half precision of float32, and ours no further than PyG's.
    ours_err = (out.float() - expected).abs().max()
    pyg_err = (ref(x.half(), edge_index).float() - expected).abs().max()
    assert ours_err <= max(pyg_err, 1e-3) * 1.5
    torch.testing.assert_close(out.float(), expected, atol=5e-3, rtol=5e-3)


@pytest.mark.parametrize('dtype', [torch.bfloat16])
def test_autocast(dtype, device):
    ref, ours = make_layers(5, 4, torch.float32, device, heads=2)
    x = torch.randn(8, 5, device=device)
    edge_index = make_graph('random', 8, 8).to(device)
    with torch.autocast(device.type, dtype=dtype):
        out, ref_out = ours(x, edge_index), ref(x, edge_index)
    assert out.dtype == ref_out.dtype
    torch.testing.assert_close(out, ref_out)
    out.float().sum().backward()


def test_subclass_overriding_message_and_edge_update():
    def scaled(base):
        class Scaled(base):
            def edge_update(self, alpha_j, alpha_i, edge_attr, index, ptr,
                            dim_size):
                alpha = super().edge_update(alpha_j, alpha_i, edge_attr,
                                            index, ptr, dim_size)
                return alpha * 0.5

            def message(self, x_j, alpha):
                return super().message(x_j, alpha) + 1.0

        return Scaled

    torch.manual_seed(0)
    ref = scaled(pyg_nn.GATConv)(5, 4, heads=2)
    ours = scaled(GATConv)(5, 4, heads=2)
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(8, 5)
    edge_index = make_graph('random', 8, 8)
    torch.testing.assert_close(ours(x, edge_index), ref(x, edge_index))
    plain = GATConv(5, 4, heads=2)
    plain.load_state_dict(ref.state_dict())
    assert not torch.allclose(plain(x, edge_index), ours(x, edge_index))


def test_message_hooks_see_attention():
    conv = GATConv(5, 4, heads=2)
    x = torch.randn(8, 5)
    edge_index = make_graph('random', 8, 8)
    seen = {}

    def hook(module, inputs, output):
        seen['alpha'] = inputs[0]['alpha']
        seen['msg'] = output

    handle = conv.register_message_forward_hook(hook)
    out, (ei, alpha) = conv(x, edge_index, return_attention_weights=True)
    handle.remove()
    torch.testing.assert_close(seen['alpha'], alpha)
    assert seen['msg'].shape == (ei.size(1), 2, 4)


def test_deepcopy_and_dtype_float64():
    conv = GATConv(5, 4, heads=2)
    other = copy.deepcopy(conv).double()
    x = torch.randn(8, 5, dtype=torch.float64)
    edge_index = make_graph('random', 8, 8)
    torch.testing.assert_close(
        other(x, edge_index),
        conv.double()(x, edge_index), **TOL[torch.float64])


def test_inference_mode(path):
    # Inference tensors have no version counter: the fused path must not
    # serve a stale cached graph after an in-place change to edge_index.
    pyg, ours = make_layers(5, 4, torch.float32, 'cpu', heads=2)
    ours.eval(), pyg.eval()
    x = torch.randn(8, 5)
    with torch.inference_mode():
        edge_index = make_graph('random', 8, 8).clone()
        for _ in range(2):
            out, (ei, alpha) = ours(x, edge_index,
                                    return_attention_weights=True)
            expected, (pyg_ei, pyg_alpha) = pyg(
                x, edge_index, return_attention_weights=True)
            torch.testing.assert_close(out, expected, **TOL[torch.float32])
            assert torch.equal(ei, pyg_ei)
            torch.testing.assert_close(alpha, pyg_alpha, **TOL[torch.float32])
            edge_index[0] = edge_index[0].flip(0)  # In place.


class _Counting(GATConv):
    r"""Counts the calls of the `MessagePassing` hooks."""
    calls = 0

    def message(self, x_j, alpha):
        type(self).calls += 1
        return super().message(x_j, alpha)


def test_fused_path_is_the_default_and_message_hooks_fall_back():
    x = torch.randn(8, 5)
    edge_index = make_graph('random', 8, 8)
    torch.manual_seed(0)
    conv = GATConv(5, 4, heads=2)
    assert use_fused(conv, edge_index)
    # A subclass overriding `message` gets its hook called.
    sub = _Counting(5, 4, heads=2)
    sub.load_state_dict(conv.state_dict())
    torch.testing.assert_close(sub(x, edge_index), conv(x, edge_index))
    assert _Counting.calls == 1
    # Registered hooks and explain mode take the `MessagePassing` path.
    handle = conv.register_message_forward_pre_hook(lambda m, i: None)
    assert not use_fused(conv, edge_index)
    handle.remove()
    assert use_fused(conv, edge_index)
    conv.explain = True
    assert not use_fused(conv, edge_index)
    conv.explain = False
    conv.fused = False  # The documented switch.
    assert not use_fused(conv, edge_index)


def test_fused_true_raises_where_the_kernel_cannot_serve():
    conv = GATConv(5, 4, heads=2, fused=True)
    conv.register_message_forward_hook(lambda m, i, o: None)
    with pytest.raises(RuntimeError, match='fused=True.*hooks'):
        conv(torch.randn(8, 5), make_graph('random', 8, 8))
    assert 'fused' not in repr(conv)


@pytest.mark.parametrize('fused', [True, False])
def test_both_paths_train_to_the_same_parameters(fused):
    # Without dropout, a few Adam steps give the same parameters on either
    # path as with PyG's layer.
    torch.manual_seed(0)
    ref = NodeGAT(pyg_nn.GATConv)
    ours = NodeGAT(GATConv)
    ours.load_state_dict(ref.state_dict())
    for m in ours.modules():
        if isinstance(m, GATConv):
            m.fused = fused
    x = torch.randn(30, 5)
    edge_index = make_graph('self_loops', 30, 30)
    y = torch.randint(0, 3, (30, ))
    opts = [torch.optim.Adam(m.parameters(), lr=0.01) for m in (ref, ours)]
    for _ in range(3):
        for model, opt in zip((ref, ours), opts, strict=True):
            opt.zero_grad()
            F.cross_entropy(model(x, edge_index), y).backward()
            opt.step()
    for p, q in zip(ours.parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(p, q)


@pytest.mark.parametrize('layer', ['GATConv', 'GATv2Conv'])
def test_projection_skips_the_zeros_of_sparse_features(layer):
    # Bag-of-words features (1 % non-zero, as Cora's): the projections go
    # to pyg_gat_ext::linear, whose kernel multiplies the non-zeros only
    # (no dense product), and the layer still matches PyG's, with PyG
    # Linear's repr, hooks and class.
    from torch.profiler import ProfilerActivity, profile
    from torch_geometric.nn.dense.linear import Linear

    import pyg_gat_ext
    torch.manual_seed(0)
    ref = getattr(pyg_nn, layer)(300, 4, heads=2)
    ours = getattr(pyg_gat_ext, layer)(300, 4, heads=2)
    ours.load_state_dict(ref.state_dict())
    ref, ours = ref.double(), ours.double()
    lins = [m for m in ours.modules() if isinstance(m, Linear)]
    ref_lins = [m for m in ref.modules() if isinstance(m, Linear)]
    assert [repr(m) for m in lins] == [repr(m) for m in ref_lins]
    calls = []
    lins[0].register_forward_hook(lambda *args: calls.append(args))
    x = torch.rand(200, 300, dtype=torch.float64)
    x = torch.where(torch.rand(200, 300) < 0.01, x, 0.0).requires_grad_()
    edge_index = make_graph('random', 200, 200)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        out = ours(x, edge_index)
    events = {e.key for e in prof.key_averages()}
    assert 'pyg_gat_ext::linear' in events and 'aten::mm' not in events
    assert len(calls) == 1
    expected = ref(x, edge_index)
    torch.testing.assert_close(out, expected, **TOL[torch.float64])
    grad = torch.randn_like(out)
    params = [p for _, p in sorted(ours.named_parameters())]
    ref_params = [p for _, p in sorted(ref.named_parameters())]
    for a, b in zip(torch.autograd.grad(out, [x] + params, grad),
                    torch.autograd.grad(expected, [x] + ref_params, grad),
                    strict=True):
        torch.testing.assert_close(a, b, **TOL[torch.float64])


@pytest.mark.parametrize('bias', [False, True])
def test_output_can_be_modified_in_place(bias):
    # The fused backward reads its forward's output (O_i): the layer must
    # still hand out a tensor the caller may change in place, as PyG's.
    ref, ours = make_layers(8, 4, torch.float32, torch.device('cpu'),
                            heads=2, bias=bias)
    x = torch.randn(30, 8, requires_grad=True)
    edge_index = make_graph('random', 30, 30)
    grads = []
    for conv in (ref, ours):
        out = conv(x, edge_index)
        out.relu_()
        grads.append(torch.autograd.grad(out.sum(), [x, conv.att_src]))
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(b, a, **TOL[torch.float32])
