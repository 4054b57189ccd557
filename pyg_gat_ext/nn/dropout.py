r"""The :class:`Dropout` module."""
import torch
from torch import Tensor

from pyg_gat_ext.nn import functional


class Dropout(torch.nn.Dropout):
    r""":class:`torch.nn.Dropout` on :func:`pyg_gat_ext.nn.functional.dropout`:
    the same module (arguments, ``repr``, ``state_dict``), with a
    counter-based mask that is never stored."""
    def forward(self, input: Tensor) -> Tensor:
        return functional.dropout(input, self.p, self.training, self.inplace)
