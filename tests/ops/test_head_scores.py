r"""The ``pyg_gat_ext::head_scores`` op (GAT's node scores): the reference
against PyG's expression, each kernel against the reference, gradients,
thread-count independence, bad input, the op's registration."""
import pytest
import torch

from pyg_gat_ext.ops import _reference, use_backend
from tests.conftest import backend_or_skip
from tests.helpers import KERNEL_TOL, across_thread_counts

op = torch.ops.pyg_gat_ext.head_scores
op_backward = torch.ops.pyg_gat_ext.head_scores_backward
CPU = torch.device('cpu')


def _inputs(n, k, h, c, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, h, c, generator=g).to(dtype)
    att = torch.randn(k, h, c, generator=g).to(dtype)
    grad = torch.randn(n, k, h, generator=g).to(dtype)
    return x, att, grad


def test_reference_is_pygs_expression():
    # PyG's GATConv: (x * att_src).sum(-1), one attention vector at a time;
    # gradients through autograd of that expression.
    x, att, grad = _inputs(40, 2, 3, 5)
    x.requires_grad_()
    att.requires_grad_()
    expected = torch.stack([(x * att[k]).sum(-1) for k in range(2)], dim=1)
    torch.testing.assert_close(_reference.head_scores(x, att), expected)
    grad_x, grad_att = torch.autograd.grad(expected, (x, att), grad)
    ref_x, ref_att = _reference.head_scores_backward(grad, x, att)
    torch.testing.assert_close(ref_x, grad_x)
    torch.testing.assert_close(ref_att, grad_att)


# (N, K, H, C): C a multiple of the kernel's 8 partial sums and not; one
# score or two; N past 1024 blocks of 256 rows, where a block takes more
# rows; no rows.
SHAPES = [(300, 2, 4, 64), (97, 1, 3, 5), (1000, 2, 8, 8),
          (262_145, 1, 1, 3), (0, 2, 2, 4)]
TOL = KERNEL_TOL


@pytest.mark.parametrize('shape', SHAPES)
@pytest.mark.parametrize('dtype', list(TOL))
def test_cpp_matches_reference(shape, dtype):
    backend_or_skip('cpp', CPU)
    x, att, grad = _inputs(*shape, dtype=dtype)
    with use_backend('reference'):
        expected = op(x, att)
        expected_grads = op_backward(grad, x, att)
    with use_backend('cpp'):
        out = op(x.transpose(1, 2).contiguous().transpose(1, 2), att)
        grads = op_backward(grad, x, att)
    assert out.dtype == dtype and out.shape == expected.shape
    torch.testing.assert_close(out, expected, **TOL[dtype])
    for got, want in zip(grads, expected_grads, strict=True):
        assert got.dtype == dtype and got.shape == want.shape
        torch.testing.assert_close(got, want, **TOL[dtype])


def test_gradcheck(backend, device):
    x, att, _ = _inputs(30, 2, 3, 5)
    x = x.to(device).requires_grad_()
    att = att.to(device).requires_grad_()
    assert torch.autograd.gradcheck(op, (x, att))


def test_result_does_not_depend_on_thread_count():
    # grad_att sums over all rows: per block of rows, then the blocks in
    # order, whatever the thread count.
    backend_or_skip('cpp', CPU)
    x, att, grad = _inputs(5000, 2, 4, 16, dtype=torch.float32)
    with use_backend('cpp'):
        results = across_thread_counts(lambda: op_backward(grad, x, att))
    for a, b in zip(*results, strict=True):
        assert torch.equal(a, b)


def test_bad_input_is_named():
    backend_or_skip('cpp', CPU)
    x, att, grad = _inputs(10, 2, 3, 4)
    with use_backend('cpp'):
        with pytest.raises(ValueError, match=r'x must be \[N, H, C\] and att'):
            op(x, att[:, :, :3])
        with pytest.raises(ValueError, match=r'x must be \[N, H, C\]'):
            op(x[0], att)
        with pytest.raises(TypeError, match='share one floating-point'):
            op(x, att.float())
        with pytest.raises(TypeError, match='share one floating-point'):
            op(x.long(), att.long())
        with pytest.raises(ValueError, match=r'grad must be \[N, K, H\]'):
            op_backward(grad[:, :1], x, att)


def test_opcheck(device):
    x, att, _ = _inputs(12, 2, 3, 4, dtype=torch.float32)
    torch.library.opcheck(op, (x.to(device).requires_grad_(),
                               att.to(device).requires_grad_()))
