r"""Functional forms of :mod:`pyg_gat_ext.nn`: :func:`dropout`, a drop-in
for :func:`torch.nn.functional.dropout` on the ``pyg_gat_ext::dropout``
operator."""
import torch
from torch import Tensor

from pyg_gat_ext.ops import kernel_backend

#: torch's own dropout, whatever :func:`pyg_gat_ext.patch` binds later.
torch_dropout = torch.nn.functional.dropout


def dropout(input: Tensor, p: float = 0.5, training: bool = True,
            inplace: bool = False) -> Tensor:
    r"""Dropout as :func:`torch.nn.functional.dropout` (same arguments and
    semantics: kept entries scaled by :math:`1 / (1 - p)`, the input
    returned as it is when not training), with a counter-based mask: every
    element's keep decision is a hash of its index and a seed drawn from
    torch's default generator, so it is reproducible under
    :func:`torch.manual_seed`, costs a few integer operations per element
    (no random-number generator state, no :obj:`bernoulli_`) and is never
    stored: the backward regenerates it. Runs the C++ kernel on CPU and the
    Triton kernel on CUDA; any other input (no kernel for its device, or not
    a floating-point tensor) takes torch's dropout.
    """
    if p < 0.0 or p > 1.0:
        raise ValueError(f'dropout probability has to be between 0 and 1, '
                         f'but got {p}')
    if (not training or not input.is_floating_point()
            or input.device.type not in ('cpu', 'cuda')
            or kernel_backend(input.device) == 'reference'):
        return torch_dropout(input, p, training, inplace)
    seed = torch.randint(0, 4294967296, (2, ), dtype=torch.long)
    out = torch.ops.pyg_gat_ext.dropout(input, float(p), seed)
    if inplace:
        return input.copy_(out)
    return out
