r"""Operators of :mod:`pyg_gat_ext`: public functions over the
``torch.ops.pyg_gat_ext`` library."""
from pyg_gat_ext.ops._library import (
    kernel_backend,
    use_backend,
    use_reference,
)
from pyg_gat_ext.ops.softmax import segment_csr, segment_softmax

__all__ = [
    'segment_softmax', 'segment_csr', 'kernel_backend', 'use_backend',
    'use_reference'
]
