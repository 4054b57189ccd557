r"""Triton (CUDA) kernels. Imported only when ``triton`` is installed, on the
first launch; under ``TRITON_INTERPRET=1`` they also run on CPU tensors."""
from pyg_gat_ext.ops.triton.gat_attention import (
    gat_attention,
    gat_attention_backward,
)
from pyg_gat_ext.ops.triton.segment_softmax import (
    segment_softmax,
    segment_softmax_backward,
)

__all__ = [
    'segment_softmax', 'segment_softmax_backward', 'gat_attention',
    'gat_attention_backward'
]
