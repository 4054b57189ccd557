r"""Bad input gets a clear exception that names the argument and the
shapes, raised before any computation."""
import pytest
import torch
from torch_geometric.utils import to_torch_csr_tensor

from pyg_gat_ext import GATConv

X = torch.randn(6, 5)
EDGE_INDEX = torch.tensor([[0, 1, 2, 3], [1, 2, 3, 4]])


def _never_called(*args, **kwargs):
    raise AssertionError('computation started before validation')


@pytest.fixture
def conv():
    conv = GATConv(5, 4, heads=2, edge_dim=3)
    conv.lin.forward = _never_called  # Validation must come first.
    return conv


@pytest.mark.parametrize('kwargs,error,match', [
    (dict(x=torch.randn(6)), ValueError, r"'x' to be a 2-D tensor .*\[6\]"),
    (dict(x=torch.randn(2, 6, 5)), ValueError, r"'x' to be a 2-D"),
    (dict(x=torch.randn(6, 4)), ValueError,
     r"'x' has 4 features \(shape \[6, 4\]\).*expects 5"),
    (dict(x=torch.ones(6, 5, dtype=torch.long)), TypeError,
     r"floating point 'x'"),
    (dict(edge_index=EDGE_INDEX.float()), ValueError,
     r"'edge_index' to be an integer tensor \(got torch.float32\)"),
    (dict(edge_index=EDGE_INDEX[0]), ValueError,
     r"'edge_index' to have shape \[2, num_edges\] \(got \[4\]\)"),
    (dict(edge_index=torch.zeros(3, 4, dtype=torch.long)), ValueError,
     r"shape \[2, num_edges\] \(got \[3, 4\]\)"),
    (dict(edge_index=torch.tensor([[0, 6], [1, 2]])), IndexError,
     r"'edge_index\[0\]' holds index 6, out of range for 6 source nodes"),
    (dict(edge_index=torch.tensor([[0, 1], [-1, 2]])), IndexError,
     r"'edge_index\[1\]' holds index -1"),
    (dict(edge_attr=torch.randn(5, 3)), ValueError,
     r"'edge_attr' has 5 rows \(shape \[5, 3\]\) but 'edge_index' has 4"),
    (dict(edge_attr=torch.randn(4, 2)), ValueError,
     r"'edge_attr' has 2 features \(shape \[4, 2\]\).*edge_dim=3"),
    (dict(edge_attr=torch.randn(4, 3, 1)), ValueError,
     r"'edge_attr' to be 1-D or 2-D"),
    (dict(size=(6, 5)), ValueError, r"'size' is \(6, 5\) but there are 6"),
    # Tensors on different devices ('meta' stands in for a second device on
    # a machine without a GPU).
    (dict(edge_index=EDGE_INDEX.to('meta')), ValueError,
     r"'edge_index' is on meta but the node features are on cpu"),
    (dict(edge_attr=torch.randn(4, 3, device='meta')), ValueError,
     r"'edge_attr' is on meta but the node features are on cpu"),
    (dict(x=(X, torch.randn(6, 5, device='meta'))), ValueError,
     r"'x\[1\]' is on meta but the node features are on cpu"),
    (dict(edge_index=to_torch_csr_tensor(EDGE_INDEX.flip(0), size=(6, 6)).to(
        'meta')), ValueError, r"'edge_index' is on meta"),
    (dict(edge_index=to_torch_csr_tensor(EDGE_INDEX.flip(0), size=(6, 7))),
     ValueError, r"shape \[6, 7\] but 'x' gives 6 target and 6 source"),
])
def test_bad_input(conv, kwargs, error, match):
    inputs = dict(x=X, edge_index=EDGE_INDEX,
                  edge_attr=torch.randn(4, 3), size=None)
    inputs.update(kwargs)
    with pytest.raises(error, match=match):
        conv(**inputs)


def test_bad_bipartite_input():
    conv = GATConv((5, 7), 4)
    x_src, x_dst = torch.randn(6, 5), torch.randn(3, 7)
    with pytest.raises(ValueError, match=r"'x\[1\]' has 5 features"):
        conv((x_src, torch.randn(3, 5)), EDGE_INDEX[:, :2])
    with pytest.raises(ValueError, match=r"'x\[0\]' to be a 2-D"):
        conv((torch.randn(6), x_dst), EDGE_INDEX[:, :2])
    with pytest.raises(IndexError, match=r"index 3, out of range for 3 "
                       r"target nodes"):
        conv((x_src, x_dst), torch.tensor([[0, 1], [2, 3]]))
    with pytest.raises(IndexError, match=r"out of range for 2 target"):
        conv((x_src, None), torch.tensor([[0, 1], [1, 2]]), size=(6, 2))


def test_target_to_source_bounds():
    conv = GATConv((5, 7), 4, flow='target_to_source')
    x = (torch.randn(6, 5), torch.randn(3, 7))
    # Row 0 indexes the targets, row 1 the sources:
    conv(x, torch.tensor([[2, 0], [5, 1]]))
    with pytest.raises(IndexError, match=r"'edge_index\[0\]' holds index 5, "
                       r"out of range for 3 target nodes"):
        conv(x, torch.tensor([[5, 0], [2, 1]]))


def test_edge_index_sparse_size_mismatch():
    from torch_geometric import EdgeIndex
    conv = GATConv(5, 4)
    with pytest.raises(ValueError, match=r"sparse size \(7, 7\) but 'x' has "
                       r"6 source nodes"):
        conv(X, EdgeIndex(EDGE_INDEX, sparse_size=(7, 7)))
