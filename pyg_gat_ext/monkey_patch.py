r"""A one-line switch: :func:`patch` binds :class:`pyg_gat_ext.GATConv` and
:class:`pyg_gat_ext.GATv2Conv` to every name under which PyG exposes its own
``GATConv`` and ``GATv2Conv``, so that PyG's model classes (``GAT(...)``
with ``v2=False`` or ``v2=True``, ``AttentiveFP``, ``Polynormer``) and models
built from ``torch_geometric.nn`` afterwards (``to_hetero``, ``HeteroConv``)
use the fused layers; :func:`unpatch` restores PyG's. In the manner of
Liger-Kernel's ``apply_liger_kernel_to_*``.

Only names are rebound: layers built before :func:`patch` stay PyG's, and
``state_dict`` moves between the two classes as it is. With
:obj:`dropout=True` it also binds :func:`pyg_gat_ext.nn.functional.dropout`
to :func:`torch.nn.functional.dropout`, which :class:`torch.nn.Dropout` and
PyG's models call: CPU and CUDA floating-point tensors then take the
counter-based kernel, anything else torch's dropout.
"""
import importlib
import sys
import threading
from typing import Dict, List, Tuple

#: The modules that bind PyG's ``GATConv`` or ``GATv2Conv`` by name,
#: imported by :func:`patch` (where installed) before the scan of every
#: loaded ``torch_geometric`` module finds the others.
MODULES = (
    'torch_geometric.nn',
    'torch_geometric.nn.conv',
    'torch_geometric.nn.conv.gat_conv',
    'torch_geometric.nn.conv.gatv2_conv',
    'torch_geometric.nn.models.basic_gnn',
    'torch_geometric.nn.models.attentive_fp',
    'torch_geometric.nn.models.polynormer',
)

_lock = threading.Lock()
#: (module name, attribute) -> the object bound there before :func:`patch`.
_patched: Dict[Tuple[str, str], object] = {}


def _pyg_class(name: str) -> type:
    # PyG's class `name`: from the record once patched (its module then
    # holds ours), else from its module.
    if ('torch_geometric.nn', name) in _patched:
        return _patched[('torch_geometric.nn', name)]
    return getattr(importlib.import_module('torch_geometric.nn.conv'), name)


def patch(dropout: bool = False) -> List[str]:
    r"""Binds :class:`pyg_gat_ext.GATConv` to PyG's ``GATConv`` names:
    ``torch_geometric.nn.GATConv``, ``torch_geometric.nn.conv.GATConv``,
    ``torch_geometric.nn.conv.gat_conv.GATConv`` and every module of
    ``torch_geometric`` that imported the class by name (the model classes
    ``GAT``, ``AttentiveFP`` and ``Polynormer`` among them), and
    :class:`pyg_gat_ext.GATv2Conv` to PyG's ``GATv2Conv`` names alike (so
    ``GAT(..., v2=True)`` builds ours), and with
    :obj:`dropout` our dropout to ``torch.nn.functional.dropout`` (off by
    default: it changes the random stream of every dropout in the process).
    Idempotent; :func:`unpatch` reverses it. Returns the modules patched by
    this call.

    .. code-block:: python

        import pyg_gat_ext
        pyg_gat_ext.patch()  # before the model is built
        model = torch_geometric.nn.models.GAT(16, 64, 2, heads=8)
    """
    import torch

    from pyg_gat_ext.nn import GATConv, GATv2Conv, functional
    with _lock:
        for name in MODULES:
            try:
                importlib.import_module(name)
            except ImportError:  # An optional part PyG could not import.
                pass
        done = set()
        for attr, ours in (('GATConv', GATConv), ('GATv2Conv', GATv2Conv)):
            original = _pyg_class(attr)
            for name, module in list(sys.modules.items()):
                if not (name == 'torch_geometric'
                        or name.startswith('torch_geometric.')):
                    continue
                if getattr(module, attr, None) is original:
                    _patched[(name, attr)] = original
                    setattr(module, attr, ours)
                    done.add(name)
        if dropout and torch.nn.functional.dropout is functional.torch_dropout:
            _patched[('torch.nn.functional', 'dropout')] = (
                functional.torch_dropout)
            torch.nn.functional.dropout = functional.dropout
            done.add('torch.nn.functional')
        return sorted(done)


def unpatch() -> List[str]:
    r"""Restores PyG's ``GATConv`` wherever :func:`patch` bound ours.
    Idempotent. Returns the modules restored by this call."""
    with _lock:
        done = set()
        for (name, attr), original in list(_patched.items()):
            module = sys.modules.get(name)
            if module is not None:
                setattr(module, attr, original)
                done.add(name)
            del _patched[(name, attr)]
        return sorted(done)


def is_patched() -> bool:
    r"""Whether :func:`patch` is in effect."""
    return bool(_patched)
