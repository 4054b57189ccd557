r"""Triton (CUDA) kernels. Imported only when ``triton`` is installed, on the
first launch; under ``TRITON_INTERPRET=1`` they also run on CPU tensors.
Each launcher takes the arguments of its op's schema
(:data:`pyg_gat_ext.ops._library.SCHEMAS`).

GAT's node scores (``head_scores``) and the projection (``linear``) have no
Triton kernel: on CUDA their reference runs, tensor contractions that cuBLAS
computes (they are slow on CPU, where the C++ kernels replace them; their
speed on a GPU is not measured yet)."""
from pyg_gat_ext.ops._reference import (
    head_scores,
    head_scores_backward,
    linear,
    linear_weight_grad,
)
from pyg_gat_ext.ops.triton.dropout import dropout
from pyg_gat_ext.ops.triton.gat_attention import (
    gat_attention,
    gat_attention_backward,
)
from pyg_gat_ext.ops.triton.gatv2_attention import (
    gatv2_attention,
    gatv2_attention_backward,
)
from pyg_gat_ext.ops.triton.segment_softmax import (
    segment_csr,
    segment_softmax,
    segment_softmax_backward,
)

__all__ = [
    'segment_csr', 'segment_softmax', 'segment_softmax_backward',
    'gat_attention', 'gat_attention_backward', 'gatv2_attention',
    'gatv2_attention_backward', 'head_scores', 'head_scores_backward',
    'linear', 'linear_weight_grad', 'dropout'
]
