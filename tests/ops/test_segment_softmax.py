r"""The segment-softmax op: its reference against PyG's softmax and dense
softmax, gradients, the op contract, and torch.compile."""
import pytest
import torch
from torch_geometric.utils import softmax as pyg_softmax

from pyg_gat_ext.ops import _reference, segment_softmax
from tests.conftest import TOL


def _segments(kind, num_entries, num_segments, seed=0):
    g = torch.Generator().manual_seed(seed)
    if kind == 'random':  # Unsorted, with empty segments.
        return torch.randint(0, num_segments, (num_entries, ), generator=g)
    if kind == 'singletons':  # Every segment of length 1.
        return torch.randperm(num_entries, generator=g)
    if kind == 'power_law':  # A few long segments, many short ones.
        w = torch.arange(1, num_segments + 1, dtype=torch.float).pow(-1.5)
        return torch.multinomial(w, num_entries, True, generator=g)
    raise ValueError(kind)


@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
@pytest.mark.parametrize('shape', [(), (3, ), (2, 4)])
@pytest.mark.parametrize('kind', ['random', 'singletons', 'power_law'])
def test_matches_pyg_softmax(kind, shape, dtype, device):
    num_entries = 200
    num_segments = num_entries if kind == 'singletons' else 37
    index = _segments(kind, num_entries, num_segments).to(device)
    src = 5 * torch.randn((num_entries, ) + shape, dtype=dtype, device=device)
    expected = pyg_softmax(src, index, num_nodes=num_segments)
    torch.testing.assert_close(
        segment_softmax(src, index, num_nodes=num_segments), expected,
        **TOL[dtype])
    torch.testing.assert_close(segment_softmax(src, index), expected,
                               **TOL[dtype])
    # The CSR form over the sorted entries:
    perm = index.argsort(stable=True)
    ptr = torch.zeros(num_segments + 1, dtype=torch.long, device=device)
    ptr[1:] = torch.bincount(index, minlength=num_segments).cumsum(0)
    torch.testing.assert_close(segment_softmax(src[perm], ptr=ptr),
                               expected[perm], **TOL[dtype])


@pytest.mark.parametrize('dim', [1, -1])
def test_other_dim(dim):
    src = torch.randn(3, 50, 2, dtype=torch.float64)
    if dim == -1:  # Non-contiguous, segments along the last dimension.
        src = src.transpose(1, 2)
    index = _segments('random', 50, 7)
    torch.testing.assert_close(
        segment_softmax(src, index, dim=dim),
        pyg_softmax(src, index, dim=dim), **TOL[torch.float64])


def test_complete_bipartite_equals_dense_softmax():
    # Every target attends to every source: each segment is a full row.
    num_dst, num_src, heads = 5, 9, 3
    logits = torch.randn(num_dst, num_src, heads, dtype=torch.float64)
    index = torch.arange(num_dst).repeat_interleave(num_src)
    out = segment_softmax(logits.view(-1, heads), index, num_nodes=num_dst)
    torch.testing.assert_close(out.view(num_dst, num_src, heads),
                               logits.softmax(dim=1), **TOL[torch.float64])


@pytest.mark.parametrize('values', [
    pytest.param(torch.full((6, ), 3.0), id='all_equal'),
    pytest.param(torch.tensor([1e4, -1e4, 1e4, 0.0, -1e4, -1e4]),
                 id='large'),
    pytest.param(torch.tensor([-float('inf'), 0.0, 1.0, 2.0, 3.0, 4.0]),
                 id='neg_inf'),
    pytest.param(torch.tensor([float('nan'), 0.0, 1.0, 2.0, 3.0, 4.0]),
                 id='nan'),
])
def test_extreme_logits_as_pyg(values):
    index = torch.tensor([0, 0, 1, 1, 2, 2])
    torch.testing.assert_close(segment_softmax(values, index),
                               pyg_softmax(values, index), equal_nan=True)


def test_empty():
    src = torch.empty(0, 4)
    index = torch.empty(0, dtype=torch.long)
    assert segment_softmax(src, index, num_nodes=3).shape == (0, 4)
    assert segment_softmax(src, index).shape == (0, 4)


def test_gradcheck():
    index = _segments('power_law', 30, 6)
    src = torch.randn(30, 2, dtype=torch.float64, requires_grad=True)
    fn = lambda s: segment_softmax(s, index, num_nodes=6)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (src, ))
    assert torch.autograd.gradgradcheck(fn, (src, ))
    # The gradient agrees with PyG's (autograd through its scatters):
    g = torch.randn(30, 2, dtype=torch.float64)
    ours, = torch.autograd.grad(fn(src), src, g)
    ref, = torch.autograd.grad(pyg_softmax(src, index, num_nodes=6), src, g)
    torch.testing.assert_close(ours, ref, **TOL[torch.float64])


def test_backward_op_matches_reference():
    index = _segments('random', 40, 5)
    out = segment_softmax(torch.randn(40, 3, dtype=torch.float64), index)
    grad = torch.randn(40, 3, dtype=torch.float64)
    torch.testing.assert_close(
        torch.ops.pyg_gat_ext.segment_softmax_backward(
            out, grad, index, None, 5, 0),
        _reference.segment_softmax_backward(out, grad, index, 5, 0))


def test_opcheck():
    index = _segments('random', 40, 5)
    src = torch.randn(40, 3, requires_grad=True)
    torch.library.opcheck(torch.ops.pyg_gat_ext.segment_softmax.default,
                          (src, index, None, 5, 0))
    out = segment_softmax(src.detach(), index).requires_grad_()
    grad = torch.randn(40, 3, requires_grad=True)
    torch.library.opcheck(
        torch.ops.pyg_gat_ext.segment_softmax_backward.default,
        (out, grad, index, None, 5, 0))


def test_compile_fullgraph():
    torch._dynamo.reset()
    index = _segments('random', 40, 5)
    src = torch.randn(40, 3, requires_grad=True)
    fn = torch.compile(lambda s, i: segment_softmax(s, i, num_nodes=5),
                       fullgraph=True)
    out = fn(src, index)
    torch.testing.assert_close(out, segment_softmax(src, index, None, 5))
    out.sum().backward()


@pytest.mark.parametrize('kwargs,match', [
    (dict(src=torch.ones(4, dtype=torch.long)), 'floating point'),
    (dict(index=None), "requires 'index' or 'ptr'"),
    (dict(index=torch.zeros(3, dtype=torch.long)), "'index' has 3 entries"),
    (dict(index=torch.zeros(4, 1, dtype=torch.long)), "1-D integer"),
    (dict(ptr=torch.tensor([[0, 4]])), "'ptr' to be a non-empty 1-D"),
    (dict(dim=2), "out of range"),
])
def test_bad_input(kwargs, match):
    args = dict(src=torch.randn(4), index=torch.tensor([0, 0, 1, 1]))
    args.update(kwargs)
    with pytest.raises((ValueError, TypeError), match=match):
        segment_softmax(**args)
