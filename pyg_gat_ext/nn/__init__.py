from pyg_gat_ext.nn import functional
from pyg_gat_ext.nn.dropout import Dropout
from pyg_gat_ext.nn.gat_conv import GATConv
from pyg_gat_ext.nn.gatv2_conv import GATv2Conv

__all__ = ['GATConv', 'GATv2Conv', 'Dropout', 'functional']
