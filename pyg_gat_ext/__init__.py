r"""pyg-gat-ext: drop-in, exact, faster and lighter :class:`GATConv` and
:class:`GATv2Conv` for PyTorch Geometric."""
from pyg_gat_ext import ops
from pyg_gat_ext.monkey_patch import is_patched, patch, unpatch
from pyg_gat_ext.nn import GATConv, GATv2Conv

__version__ = '0.1.0'

__all__ = [
    'GATConv', 'GATv2Conv', 'ops', 'patch', 'unpatch', 'is_patched',
    '__version__'
]
