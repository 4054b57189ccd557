r"""``GATConv(..., normalize=True)``, the GAT normalisation of PyG's
development branch (after 2.8, so PyG 2.8 cannot be compared with): checked
against the formula computed densely, on every adjacency form."""
import pytest
import torch
import torch.nn.functional as F
from torch_geometric.typing import WITH_TORCH_SPARSE

from pyg_gat_ext import GATConv
from pyg_gat_ext.nn.gat_conv import gat_norm
from tests.conftest import TOL
from tests.helpers import make_graph, to_form


def dense_normalized(conv, x, edge_index):
    r""":math:`\hat{D}^{-1/2} (D A_{att} + I) \hat{D}^{-1/2} X \Theta`, with
    :math:`A_{att}` the softmax attention over the edges without
    self-loops, :math:`D` the in-degree and :math:`\hat{D} = D + I`."""
    num_nodes, H, C = x.size(0), conv.heads, conv.out_channels
    h = conv.lin(x).view(num_nodes, H, C)
    src, dst = edge_index[:, edge_index[0] != edge_index[1]]
    score = F.leaky_relu((h * conv.att_src).sum(-1)[src] +
                         (h * conv.att_dst).sum(-1)[dst], conv.negative_slope)
    att = x.new_zeros(num_nodes, num_nodes, H)  # [target, source, head]
    for i in range(num_nodes):  # Softmax per target, duplicates kept.
        mask = dst == i
        if mask.any():
            att[i].index_put_((src[mask], ), score[mask].softmax(0),
                              accumulate=True)
    deg = torch.zeros(num_nodes, dtype=x.dtype).index_add_(
        0, dst, torch.ones_like(dst, dtype=x.dtype))
    att = deg.view(-1, 1, 1) * att + torch.eye(num_nodes).unsqueeze(-1)
    scale = (deg + 1).pow(-0.5)
    att = scale.view(-1, 1, 1) * att * scale.view(1, -1, 1)
    out = torch.einsum('ijh,jhc->ihc', att, h)
    return out.reshape(num_nodes, H * C) + conv.bias


@pytest.mark.parametrize('form', ['tensor', 'csr', 'sparse_tensor'])
def test_normalize_matches_the_formula(form):
    if form == 'sparse_tensor' and not WITH_TORCH_SPARSE:
        pytest.skip("'torch-sparse' is not installed")
    torch.manual_seed(0)
    conv = GATConv(5, 3, heads=2, normalize=True).double()
    torch.nn.init.normal_(conv.bias)
    x = torch.randn(7, 5, dtype=torch.float64)
    # Existing self-loops are replaced; `sorted` keeps the sparse forms'
    # value order equal to the edge list's.
    edge_index = make_graph('self_loops', 7, 7)
    edge_index = edge_index[:, (edge_index[1] * 7 + edge_index[0]).argsort()]
    edge_index = torch.unique(edge_index, dim=1)  # Sparse forms merge.
    adj, _ = to_form(form, edge_index, None, 7, 7)
    expected = dense_normalized(conv, x, edge_index)
    torch.testing.assert_close(conv(x, adj), expected, **TOL[torch.float64])
    assert str(conv) == 'GATConv(5, 3, heads=2)'


def test_normalize_takes_the_message_passing_path():
    conv = GATConv(5, 3, normalize=True, fused=True)
    with pytest.raises(RuntimeError, match='normalize=True'):
        conv(torch.randn(4, 5), make_graph('random', 4, 4))


def test_normalize_is_not_for_bipartite_layers():
    conv = GATConv((5, 6), 3, normalize=True)
    with pytest.raises(NotImplementedError, match='not supported for '
                       'bipartite message passing'):
        conv((torch.randn(4, 5), torch.randn(2, 6)),
             make_graph('random', 4, 2))


def test_gat_norm_rejects_csc_as_pyg():
    adj, _ = to_form('csc', make_graph('random', 4, 4), None, 4, 4)
    with pytest.raises(NotImplementedError, match='CSC'):
        gat_norm(adj, torch.rand(adj._nnz(), 2))
