r"""The ``pyg_gat_ext::dropout`` op: each kernel against the reference
(bitwise masks), the statistics of the mask (keep rate within binomial
bounds, independence across elements and seeds), scaling, p = 0 and 1,
gradients, the op's registration."""
import math

import pytest
import torch

from pyg_gat_ext.ops import _reference, use_backend

op = torch.ops.pyg_gat_ext.dropout


def _seed(a=3, b=5):
    return torch.tensor([a, b])


@pytest.mark.parametrize('dtype', [torch.float32, torch.float64,
                                   torch.bfloat16])
def test_kernels_match_reference(backend, device, dtype):
    # Bitwise: the same hash, the same product in the same type. A size not
    # a multiple of the Triton block, a non-contiguous input.
    x = torch.randn(37, 61, dtype=dtype, device=device).t()
    with use_backend('reference'):
        expected = op(x, 0.3, _seed())
    out = op(x, 0.3, _seed())
    assert out.is_contiguous()
    assert torch.equal(out == 0, expected == 0)  # The same mask.
    # The same products; bfloat16 within one unit of rounding (the Triton
    # interpreter truncates to bfloat16, CUDA rounds to nearest).
    exact = dtype != torch.bfloat16
    torch.testing.assert_close(out, expected, rtol=0 if exact else 2**-7,
                               atol=0)


def test_keep_rate_is_binomial_and_kept_values_are_scaled():
    n = 400_000
    x = torch.rand(n) + 0.5  # No zeros of its own.
    for p in (0.1, 0.5, 0.9):
        out = op(x, p, _seed(7, int(p * 100)))
        kept = out != 0
        k = int(kept.sum())
        sigma = math.sqrt(n * p * (1 - p))
        assert abs(k - n * (1 - p)) < 5 * sigma, (p, k)
        torch.testing.assert_close(out[kept], x[kept] / (1 - p))


def _correlation(a, b):
    a, b = a.double() - a.double().mean(), b.double() - b.double().mean()
    return float((a * b).sum() / (a.norm() * b.norm()))


def test_masks_are_independent_across_elements_and_seeds():
    n = 400_000
    x = torch.ones(n)
    m1 = op(x, 0.5, _seed(1, 2)) != 0
    m2 = op(x, 0.5, _seed(1, 3)) != 0  # Another step's seed.
    bound = 5 / math.sqrt(n)
    assert abs(_correlation(m1[1:], m1[:-1])) < bound  # Neighbours.
    assert abs(_correlation(m1[64:], m1[:-64])) < bound  # A row apart.
    assert abs(_correlation(m1, m2)) < bound
    assert torch.equal(op(x, 0.5, _seed(1, 2)) != 0, m1)  # Reproducible.


def test_zero_and_one():
    x = torch.tensor([1.0, -2.0, float('nan'), 3.0])
    torch.testing.assert_close(op(x, 0.0, _seed()), x, equal_nan=True)
    torch.testing.assert_close(op(x, 0.3, None), x, equal_nan=True)
    out = op(x, 1.0, _seed())  # Multiplied by zero, as torch's dropout.
    assert torch.equal(out.isnan(), x.isnan())
    assert (out[~x.isnan()] == 0).all()


def test_gradient_is_the_same_mask(backend, device):
    x = torch.randn(50, 3, dtype=torch.float64, device=device,
                    requires_grad=True)
    g = torch.randn(50, 3, dtype=torch.float64, device=device)
    out = op(x, 0.4, _seed())
    grad, = torch.autograd.grad(out, x, g)
    factor = _reference.dropout(torch.ones_like(x), 0.4, _seed())
    torch.testing.assert_close(grad, g * factor, rtol=0, atol=0)
    if not (backend == 'triton' and device.type == 'cpu'):
        assert torch.autograd.gradcheck(lambda t: op(t, 0.4, _seed()),
                                        (x, ))


def test_opcheck(device):
    x = torch.randn(8, 5, device=device, requires_grad=True)
    torch.library.opcheck(op, (x, 0.5, _seed()))
