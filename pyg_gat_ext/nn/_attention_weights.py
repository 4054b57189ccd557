r"""The attention weights as :meth:`pyg_gat_ext.GATConv.forward` returns them
with :obj:`return_attention_weights`: paired with the edges they belong to,
in the form of the adjacency the layer attended over, as PyG's layer does.

TorchScript-compatible: one overload per type of :obj:`edge_index`, so that
each scripted :meth:`forward` overload gets its own return type.
"""
import typing
from typing import Tuple, Union

from torch import Tensor
from torch_geometric.typing import SparseTensor
from torch_geometric.utils import is_torch_sparse_tensor

from pyg_gat_ext.nn._self_loops import set_sparse_value

if typing.TYPE_CHECKING:
    from typing import overload
else:
    from torch.jit import _overload as overload


@overload
def attention_weights(edge_index: Tensor,
                      alpha: Tensor) -> Tuple[Tensor, Tensor]:
    pass


@overload
def attention_weights(  # noqa: F811
        edge_index: SparseTensor, alpha: Tensor) -> SparseTensor:
    pass


def attention_weights(  # noqa: F811
        edge_index: Union[Tensor, SparseTensor],
        alpha: Tensor) -> Union[Tuple[Tensor, Tensor], SparseTensor]:
    r"""The pair :obj:`(edge_index, alpha)` of an edge list, or of a
    :obj:`torch.sparse` adjacency with :obj:`alpha` as its values; a
    :class:`SparseTensor` holding :obj:`alpha` as its values."""
    if isinstance(edge_index, Tensor):
        if is_torch_sparse_tensor(edge_index):
            return set_sparse_value(edge_index, alpha), alpha
        return edge_index, alpha
    return edge_index.set_value(alpha, layout='coo')
