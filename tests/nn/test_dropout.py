r"""pyg_gat_ext.nn.functional.dropout and pyg_gat_ext.nn.Dropout: torch's
dropout semantics (arguments, eval mode, scaling, errors), reproducible
under torch.manual_seed, and patch(dropout=True) switching torch's."""
import pytest
import torch
import torch.nn.functional as F

import pyg_gat_ext
from pyg_gat_ext.nn import Dropout, functional


def test_semantics_of_torch_dropout():
    x = torch.rand(300, 40) + 0.5
    torch.manual_seed(0)
    out = functional.dropout(x, 0.6)
    kept = out != 0
    assert 0.35 < kept.float().mean() < 0.45
    torch.testing.assert_close(out[kept], x[kept] / 0.4)
    # Reproducible under the seed, another mask at the next step.
    torch.manual_seed(0)
    assert torch.equal(functional.dropout(x, 0.6), out)
    assert not torch.equal(functional.dropout(x, 0.6), out)
    assert functional.dropout(x, 0.6, training=False) is x
    y = x.clone()
    assert functional.dropout(y, 0.5, inplace=True) is y
    assert (y == 0).any()
    with pytest.raises(ValueError, match='between 0 and 1'):
        functional.dropout(x, 1.5)
    # Not a floating-point tensor: torch's dropout, and its error.
    with pytest.raises(RuntimeError):
        F.dropout(torch.ones(3, dtype=torch.long), 0.5)
    with pytest.raises(RuntimeError):
        functional.dropout(torch.ones(3, dtype=torch.long), 0.5)


def test_gradient_through_the_function():
    x = torch.randn(20, 6, dtype=torch.float64, requires_grad=True)
    torch.manual_seed(1)
    out = functional.dropout(x, 0.5)
    out.sum().backward()
    torch.testing.assert_close(x.grad, (out != 0).double() * 2.0)


def test_module():
    torch.manual_seed(0)
    ours, ref = Dropout(0.3), torch.nn.Dropout(0.3)
    assert repr(ours) == repr(ref) and ours.state_dict().keys() == set()
    x = torch.rand(100, 10) + 0.5
    assert (ours(x) == 0).any()
    ours.eval()
    assert ours(x) is x


def test_patch_dropout_switches_torch_dropout():
    pyg_gat_ext.unpatch()
    try:
        assert 'torch.nn.functional' in pyg_gat_ext.patch(dropout=True)
        assert torch.nn.functional.dropout is functional.dropout
        # torch.nn.Dropout and PyG's models call it.
        torch.manual_seed(4)
        out = torch.nn.Dropout(0.5)(torch.ones(1000))
        torch.manual_seed(4)
        assert torch.equal(out, functional.dropout(torch.ones(1000), 0.5))
        assert pyg_gat_ext.patch(dropout=True) == []  # Idempotent.
    finally:
        pyg_gat_ext.unpatch()
    assert torch.nn.functional.dropout is functional.torch_dropout
    assert pyg_gat_ext.patch() and (torch.nn.functional.dropout
                                    is functional.torch_dropout)
    pyg_gat_ext.unpatch()
