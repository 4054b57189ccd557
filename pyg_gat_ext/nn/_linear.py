r"""The layers' projections: PyG's :class:`Linear` whose product on CPU
skips the zero entries of the input where it is mostly zeros (the
:obj:`pyg_gat_ext::linear` op)."""
import torch
import torch.nn.functional as F
import torch_geometric.nn.dense.linear
from torch import Tensor

#: The largest share of non-zero entries (in a sample of 64 rows) at which
#: the CPU kernel skips zeros rather than calling the dense product.
#: Measured on 2 cores (AVX-512) for 2708 x 1433 inputs by a 64 x 1433
#: weight and 20000 x 128 by 64 x 128: the zero-skipping forward and
#: weight gradient take 0.15-0.25 of the dense product's time at 0.5 %
#: non-zeros (Cora after its input dropout), and about as long at 10 %.
MAX_DENSITY = 0.05


def skips_zeros(x: Tensor, weight: Tensor) -> bool:
    r"""Whether :obj:`x @ weight.T` goes to the :obj:`pyg_gat_ext::linear`
    op: dense 2-D CPU floating-point input of the weight's dtype, outside
    autocast (whose casts :func:`torch.nn.functional.linear` keeps). The op
    itself decides whether :obj:`x` is sparse enough to skip its zeros."""
    return (x.device.type == 'cpu' and x.layout == torch.strided
            and x.dim() == 2 and x.dtype == weight.dtype
            and x.dtype.is_floating_point
            and not torch.is_autocast_enabled('cpu'))


class Linear(torch_geometric.nn.dense.linear.Linear):
    r"""PyG's :class:`~torch_geometric.nn.dense.linear.Linear` (same
    arguments, parameters, :obj:`state_dict`, hooks, lazy initialisation and
    :obj:`repr`) whose product, for a dense 2-D CPU input, is the
    :obj:`pyg_gat_ext::linear` op: where a sample of the input's rows is at
    most :data:`MAX_DENSITY` non-zero (bag-of-words features such as
    Cora's, 1.3 % non-zero, and features after dropout), its kernel
    multiplies the non-zero entries only, forward and for the weight's
    gradient; elsewhere it calls the dense product as PyG's does. Zero
    entries then contribute exactly zero, as in the dense product, which
    the kernel keeps wherever the other operand is not finite."""
    def forward(self, x: Tensor) -> Tensor:
        if not torch.jit.is_scripting():  # Not compiled when scripted.
            if skips_zeros(x, self.weight):
                out = torch.ops.pyg_gat_ext.linear(x, self.weight,
                                                   MAX_DENSITY)
                return out if self.bias is None else out + self.bias
        return F.linear(x, self.weight, self.bias)
