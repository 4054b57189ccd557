r"""Operators of :mod:`pyg_gat_ext`: public functions over the
``torch.ops.pyg_gat_ext`` library."""
from pyg_gat_ext.ops import _library  # noqa: F401  (registers the ops)
from pyg_gat_ext.ops.softmax import segment_softmax

__all__ = ['segment_softmax']
