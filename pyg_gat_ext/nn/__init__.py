from pyg_gat_ext.nn import functional
from pyg_gat_ext.nn.dropout import Dropout
from pyg_gat_ext.nn.gat_conv import GATConv

__all__ = ['GATConv', 'Dropout', 'functional']
