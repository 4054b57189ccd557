from pyg_gat_ext.nn.gat_conv import GATConv

__all__ = ['GATConv']
