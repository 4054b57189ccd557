r"""The ``pyg_gat_ext::linear`` op (the layers' projection, skipping the
zero entries of a mostly-zero input): the reference against
:func:`torch.nn.functional.linear`, the C++ kernel against the reference on
both of its paths, the choice between them, non-finite values, gradients,
thread-count independence, bad input, the op's registration."""
import pytest
import torch
import torch.nn.functional as F

from pyg_gat_ext.ops import _reference, use_backend
from tests.conftest import backend_or_skip
from tests.helpers import KERNEL_TOL, across_thread_counts

op = torch.ops.pyg_gat_ext.linear
op_weight_grad = torch.ops.pyg_gat_ext.linear_weight_grad
CPU = torch.device('cpu')
#: max_density forcing each path of the C++ kernel: skipping zeros whatever
#: the density, or the dense product whatever the density.
SKIP, DENSE = 1.0, -1.0


def _inputs(n, k, m, density=0.03, dtype=torch.float64, seed=0):
    r"""Features with about :obj:`density` non-zeros, some of the zeros
    negative (-0.0), a weight and an output gradient."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, k, generator=g)
    x = torch.where(torch.rand(n, k, generator=g) < density, x, 0.0)
    x[:, ::7] *= -1  # -0.0 where zero: a zero too.
    weight = torch.randn(m, k, generator=g)
    grad = torch.randn(n, m, generator=g)
    return x.to(dtype), weight.to(dtype), grad.to(dtype)


def test_reference_is_linear():
    x, weight, grad = _inputs(50, 20, 6, density=0.5)
    x.requires_grad_()
    weight.requires_grad_()
    expected = F.linear(x, weight)
    torch.testing.assert_close(_reference.linear(x, weight, SKIP), expected)
    _, grad_weight = torch.autograd.grad(expected, (x, weight), grad)
    torch.testing.assert_close(
        _reference.linear_weight_grad(grad, x, SKIP), grad_weight)


# (N, K, M): K a multiple of the kernel's 16-entry blocks, not, and below
# one block; M not a multiple of the vector width; N past 64 blocks of 512
# rows, where a block takes more rows; no rows; no columns.
SHAPES = [(300, 64, 16), (97, 37, 5), (20, 7, 3), (40_000, 20, 4),
          (0, 16, 8), (10, 0, 3)]
TOL = KERNEL_TOL


@pytest.mark.parametrize('shape', SHAPES)
@pytest.mark.parametrize('dtype', list(TOL))
@pytest.mark.parametrize('max_density', [SKIP, DENSE])
def test_cpp_matches_reference(shape, dtype, max_density):
    backend_or_skip('cpp', CPU)
    x, weight, grad = _inputs(*shape, dtype=dtype)
    with use_backend('reference'):
        expected = op(x, weight, max_density)
        expected_grad = op_weight_grad(grad, x, max_density)
    with use_backend('cpp'):
        out = op(x.t().contiguous().t(), weight, max_density)
        grad_weight = op_weight_grad(grad, x, max_density)
    assert out.dtype == dtype and out.shape == expected.shape
    torch.testing.assert_close(out, expected, **TOL[dtype])
    assert grad_weight.dtype == dtype
    assert grad_weight.shape == expected_grad.shape
    torch.testing.assert_close(grad_weight, expected_grad, **TOL[dtype])


def _dense_products(fn):
    # The aten::mm calls that `fn` makes (the kernel's dense path).
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    return sum(e.key == 'aten::mm' for e in prof.key_averages())


@pytest.mark.parametrize('density,dense', [(0.01, False), (0.03, False),
                                           (0.2, True), (1.0, True)])
def test_the_sample_decides_the_path(density, dense):
    # Skipping zeros at or below max_density non-zeros in the sampled rows,
    # the dense product above: both for the forward and the weight grad.
    backend_or_skip('cpp', CPU)
    x, weight, grad = _inputs(2000, 300, 16, density=density,
                              dtype=torch.float32)
    with use_backend('cpp'):
        assert _dense_products(lambda: op(x, weight, 0.05)) == dense
        assert _dense_products(
            lambda: op_weight_grad(grad, x, 0.05)) == dense


def test_nan_in_x_propagates():
    backend_or_skip('cpp', CPU)
    x, weight, grad = _inputs(40, 50, 6)
    x[3, 17] = float('nan')
    x[5, 49] = float('inf')  # In the tail after the last block.
    with use_backend('cpp'):
        out = op(x, weight, SKIP)
        grad_weight = op_weight_grad(grad, x, SKIP)
    expected = x @ weight.t()
    torch.testing.assert_close(out, expected, equal_nan=True)
    assert out[3].isnan().all() and not out[5].isfinite().any()
    torch.testing.assert_close(grad_weight, grad.t() @ x, equal_nan=True)


def test_non_finite_other_operand_keeps_the_dense_product():
    # 0 * inf is NaN in a dense product: a skipped zero must not hide it,
    # so a weight (forward) or gradient (backward) that is not finite sends
    # the kernel to the dense product.
    backend_or_skip('cpp', CPU)
    x, weight, grad = _inputs(40, 50, 6)
    x[:, 3] = 0.0
    x[0, 3] = 1.0
    weight[2, 3] = float('inf')
    grad[7, 1] = float('nan')
    with use_backend('cpp'):
        out = op(x, weight, SKIP)
        grad_weight = op_weight_grad(grad, x, SKIP)
    expected = x @ weight.t()
    assert expected[:, 2].isnan().sum() == 39  # The rows with x[:, 3] == 0.
    torch.testing.assert_close(out, expected, equal_nan=True)
    torch.testing.assert_close(grad_weight, grad.t() @ x, equal_nan=True)


def test_gradcheck(backend, device):
    x, weight, _ = _inputs(30, 40, 5, density=0.1)
    x = x.to(device).requires_grad_()
    weight = weight.to(device).requires_grad_()
    assert torch.autograd.gradcheck(op, (x, weight, SKIP))


def test_result_does_not_depend_on_thread_count():
    # grad_weight sums over all rows: per block of rows, then the blocks in
    # order, whatever the thread count.
    backend_or_skip('cpp', CPU)
    x, weight, grad = _inputs(5000, 100, 16, dtype=torch.float32)
    with use_backend('cpp'):
        results = across_thread_counts(lambda: (
            op(x, weight, SKIP), op_weight_grad(grad, x, SKIP)))
    for a, b in zip(*results, strict=True):
        assert torch.equal(a, b)


def test_bad_input_is_named():
    backend_or_skip('cpp', CPU)
    x, weight, grad = _inputs(10, 6, 3)
    with use_backend('cpp'):
        with pytest.raises(ValueError, match=r'x \[N, K\] and weight'):
            op(x, weight[:, :5], SKIP)
        with pytest.raises(ValueError, match=r'x \[N, K\] and weight'):
            op(x[0], weight, SKIP)
        with pytest.raises(TypeError, match='share one floating-point'):
            op(x, weight.float(), SKIP)
        with pytest.raises(TypeError, match='share one floating-point'):
            op(x.long(), weight.long(), SKIP)
        with pytest.raises(ValueError, match=r'x \[N, K\] and grad'):
            op_weight_grad(grad[:9], x, SKIP)


def test_opcheck(device):
    x, weight, _ = _inputs(12, 20, 4, density=0.2, dtype=torch.float32)
    torch.library.opcheck(op, (x.to(device).requires_grad_(),
                               weight.to(device).requires_grad_(), SKIP))
