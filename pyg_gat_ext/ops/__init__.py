r"""Operators of :mod:`pyg_gat_ext`: public functions over the
``torch.ops.pyg_gat_ext`` library."""
from pyg_gat_ext.ops._cpp import empty_cache
from pyg_gat_ext.ops._library import (
    kernel_backend,
    use_backend,
    use_reference,
)
from pyg_gat_ext.ops.attention import (
    GATAttention,
    GATGraph,
    cached_gat_graph,
    gat_attention,
    gat_graph,
    gatv2_attention,
)
from pyg_gat_ext.ops.softmax import segment_csr, segment_softmax

__all__ = [
    'segment_softmax', 'segment_csr', 'gat_attention', 'gatv2_attention',
    'gat_graph',
    'cached_gat_graph', 'GATGraph', 'GATAttention', 'kernel_backend',
    'use_backend', 'use_reference', 'empty_cache'
]
