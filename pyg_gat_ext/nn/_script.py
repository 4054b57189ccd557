r"""What :func:`torch.jit.script` on :class:`pyg_gat_ext.GATConv` itself
gets: the layer's :meth:`forward` is overloaded for TorchScript (its return
type depends on :obj:`return_attention_weights`, as in PyG), so scripted on
its own it would have overloads but no callable :meth:`forward`; as a
submodule of a scripted model it is fine. This says so at script time.
"""
import sys

#: The error of :obj:`torch.jit.script(conv)`, with what to do instead.
SCRIPT_ALONE = (
    '{name}: torch.jit.script(conv) on the layer itself cannot give a '
    'callable module: its forward is overloaded for TorchScript (the return '
    "type depends on return_attention_weights, as in PyG's {name}). Script "
    'the module that calls it instead, with the argument types it uses, '
    'e.g.\n\n'
    '    class Model(torch.nn.Module):\n'
    '        def __init__(self):\n'
    '            super().__init__()\n'
    '            self.conv = {name}(16, 8, heads=2)\n\n'
    '        def forward(self, x: Tensor, edge_index: Tensor) -> Tensor:\n'
    '            return self.conv(x, edge_index)\n\n'
    '    torch.jit.script(Model())')


def refuse_scripting_alone(name: str = 'GATConv') -> None:
    r"""Raises :obj:`SCRIPT_ALONE` if the module whose
    :meth:`__prepare_scriptable__` calls this is the one passed to
    :func:`torch.jit.script`. Python only."""
    # The frames: this function, `__prepare_scriptable__`, the recursive
    # `call_prepare_scriptable_func_impl`, and above that its entry point
    # only for the top-level module.
    caller = sys._getframe(3).f_code.co_name
    if caller == 'call_prepare_scriptable_func':
        raise RuntimeError(SCRIPT_ALONE.format(name=name))
