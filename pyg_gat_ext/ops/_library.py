r"""The ``pyg_gat_ext`` operator library: each op's schema, written once in
:data:`SCHEMAS`, and what binds to it.

The dispatcher routes every call; nothing here picks an implementation:

* ``CompositeExplicitAutograd``: the pure-PyTorch reference
  (:mod:`._reference`, one function per op with the schema's arguments),
  the specification and the fallback of every device. The first call on a
  CPU tensor builds (or loads) the C++ kernels and hands the call to them;
* ``CPU``: the C++ kernels, registered from ``csrc/library.cpp`` under
  ``TORCH_LIBRARY_IMPL(pyg_gat_ext, CPU, m)`` once the library is loaded
  (``torch._C._dispatch_dump('pyg_gat_ext::gat_attention')`` shows them);
* ``CUDA``: the Triton launchers (:mod:`.triton`, one function per op with
  the schema's arguments), imported on first use;
* ``Meta`` (fake tensors, :func:`torch.compile`): the output shapes;
* ``Autograd``: each forward op's gradient is its ``*_backward`` op.

:func:`use_backend` overrides the routing for tests and benchmarks: a
:class:`~torch.utils._python_dispatch.TorchDispatchMode` that sends every
``pyg_gat_ext`` op to the implementation it names.

Segment grouping: segment ``s`` owns sorted positions ``ptr[s]`` to
``ptr[s + 1] - 1``, and position ``p`` holds row ``perm[p]`` of the input
(row ``p`` when ``perm`` is ``None``, i.e. the input is sorted); the per-row
segment ``index`` is the other form. Each op takes both and derives what it
lacks. Graphs travel grouped twice, as PyG's ``SparseTensor`` of
``adj_t`` stores them: by target (``rowptr``, ``col``: the source of each
position, ``csr_eid``: its edge id) for the forward and the target-side
gradients, and by source (``colptr``, ``row``, ``csc_eid``) for the
source-side gradients, so that no gradient is accumulated with atomics.
Scores (``a_src``, ``a_dst``, ``edge_score``) are the attention logits;
``alpha`` is always the attention weights.
"""
import contextlib
import importlib.util
import os
import warnings
from typing import Callable, Iterator, Optional, Tuple

import torch
from torch import Tensor
from torch._subclasses.fake_tensor import FakeTensor
from torch.utils._python_dispatch import TorchDispatchMode

from pyg_gat_ext.ops import _cpp, _reference

#: The schema of every op: the one place its arguments are written.
SCHEMAS = {
    'segment_csr':
    'segment_csr(Tensor index, SymInt num_nodes) -> (Tensor, Tensor)',
    'segment_softmax':
    'segment_softmax(Tensor src, Tensor? index, Tensor? ptr, Tensor? perm, '
    'SymInt num_nodes, int dim) -> Tensor',
    'segment_softmax_backward':
    'segment_softmax_backward(Tensor out, Tensor grad_out, Tensor? index, '
    'Tensor? ptr, Tensor? perm, SymInt num_nodes, int dim) -> Tensor',
    'gat_attention':
    'gat_attention(Tensor x, Tensor a_src, Tensor a_dst, Tensor? edge_score, '
    'Tensor rowptr, Tensor col, Tensor csr_eid, Tensor colptr, Tensor row, '
    'Tensor csc_eid, SymInt num_loops, bool remove_self_loops, '
    'float negative_slope, float dropout, Tensor? seed, '
    'bool return_attention_weights, bool save_stats=False) -> '
    '(Tensor, Tensor, Tensor, Tensor, Tensor)',
    'gat_attention_backward':
    'gat_attention_backward(Tensor grad_out, Tensor? grad_alpha, Tensor x, '
    'Tensor a_src, Tensor a_dst, Tensor? edge_score, Tensor lse, '
    'Tensor rowptr, Tensor col, Tensor csr_eid, Tensor colptr, Tensor row, '
    'Tensor csc_eid, SymInt num_loops, bool remove_self_loops, '
    'float negative_slope, float dropout, Tensor? seed, '
    'Tensor? out_sums=None, Tensor? slope_sum=None, Tensor? out=None) -> '
    '(Tensor, Tensor, Tensor, Tensor)',
    'gatv2_attention':
    'gatv2_attention(Tensor x_src, Tensor x_dst, Tensor att, '
    'Tensor? edge_x, Tensor rowptr, Tensor col, Tensor csr_eid, '
    'Tensor colptr, Tensor row, Tensor csc_eid, SymInt num_loops, '
    'bool remove_self_loops, float negative_slope, float dropout, '
    'Tensor? seed, bool return_attention_weights) -> '
    '(Tensor, Tensor, Tensor)',
    'gatv2_attention_backward':
    'gatv2_attention_backward(Tensor grad_out, Tensor? grad_alpha, '
    'Tensor x_src, Tensor x_dst, Tensor att, Tensor? edge_x, Tensor lse, '
    'Tensor rowptr, Tensor col, Tensor csr_eid, Tensor colptr, Tensor row, '
    'Tensor csc_eid, SymInt num_loops, bool remove_self_loops, '
    'float negative_slope, float dropout, Tensor? seed) -> '
    '(Tensor, Tensor, Tensor, Tensor)',
    'head_scores':
    'head_scores(Tensor x, Tensor att) -> Tensor',
    'head_scores_backward':
    'head_scores_backward(Tensor grad, Tensor x, Tensor att) -> '
    '(Tensor, Tensor)',
    'linear':
    'linear(Tensor x, Tensor weight, float max_density) -> Tensor',
    'linear_weight_grad':
    'linear_weight_grad(Tensor grad, Tensor x, float max_density) -> '
    'Tensor',
    'dropout':
    'dropout(Tensor x, float p, Tensor? seed) -> Tensor',
}

BACKENDS = ('auto', 'reference', 'cpp', 'triton')

#: Triton kernels are registered for CUDA when `triton` is installed, and run
#: once it imports (on first use; compiled on first launch). Under
#: ``TRITON_INTERPRET=1`` they also run on CPU tensors, which is how they are
#: tested without a GPU.
HAS_TRITON = importlib.util.find_spec('triton') is not None


def _op(name: str) -> torch._ops.OpOverloadPacket:
    return getattr(torch.ops.pyg_gat_ext, name)


def _first_tensor(args) -> Optional[Tensor]:
    return next((a for a in args if isinstance(a, Tensor)), None)


_triton_state = {'tried': False, 'module': None}


def _triton():
    # The Triton launchers, imported on first use; None (with one warning)
    # if triton is installed but does not import.
    if not _triton_state['tried']:
        _triton_state['tried'] = True
        try:
            from pyg_gat_ext.ops import triton as triton_ops
            _triton_state['module'] = triton_ops
        except Exception as e:
            warnings.warn(
                f'pyg_gat_ext: triton is installed but does not import, '
                f'using the pure-PyTorch reference on CUDA. Cause: '
                f'{type(e).__name__}: {e}', RuntimeWarning, stacklevel=3)
    return _triton_state['module']


def _default_kernel(name: str) -> Callable:
    reference = getattr(_reference, name)

    def kernel(*args):
        # Only the first call on CPU tensors can find the C++ kernels
        # unloaded: load them (they register under CPU) and call again.
        first = _first_tensor(args)
        if (not _cpp._state['tried'] and first is not None
                and first.device.type == 'cpu' and _cpp.load()):
            return _op(name)(*args)
        return reference(*args)

    return kernel


def _cuda_kernel(name: str) -> Callable:
    reference = getattr(_reference, name)

    def kernel(*args):
        triton_ops = _triton() if HAS_TRITON else None
        if triton_ops is None:
            return reference(*args)
        return getattr(triton_ops, name)(*args)

    return kernel


_lib = torch.library.Library('pyg_gat_ext', 'DEF')
for _name, _schema in SCHEMAS.items():
    _lib.define(_schema)
    _lib.impl(_name, _default_kernel(_name), 'CompositeExplicitAutograd')
    _lib.impl(_name, _cuda_kernel(_name), 'CUDA')

# Fake kernels: output shapes for fake tensors and torch.compile. #########


@torch.library.register_fake('pyg_gat_ext::segment_csr')
def _(index, num_nodes):
    return (index.new_empty(num_nodes + 1, dtype=torch.long),
            index.new_empty(index.size(0), dtype=torch.long))


@torch.library.register_fake('pyg_gat_ext::segment_softmax')
def _(src, index, ptr, perm, num_nodes, dim):
    return torch.empty_like(src)


@torch.library.register_fake('pyg_gat_ext::segment_softmax_backward')
def _(out, grad_out, index, ptr, perm, num_nodes, dim):
    return torch.empty_like(out)


def _attention_fake(x, a, b, edge, rowptr, col, csr_eid, colptr, row,
                    csc_eid, num_loops, remove_self_loops, negative_slope,
                    dropout, seed, return_attention_weights):
    # Both attention ops: `out` takes the shape of the source rows `x`.
    num_dst, heads = rowptr.size(0) - 1, x.size(1)
    num_alpha = col.size(0) + num_loops if return_attention_weights else 0
    return (x.new_empty(num_dst, heads, x.size(2)),
            x.new_empty(num_dst, heads, dtype=_reference.opmath(x.dtype)),
            x.new_empty(num_alpha, heads))


def _attention_backward_fake(grad_out, grad_alpha, x, a, b, edge, *args):
    # Both backward ops: one gradient like each of the four tensor inputs,
    # and an empty one for a missing edge input (rank 2 for GAT's scores,
    # 3 for GATv2's edge features).
    grad_edge = (x.new_empty((0, ) + tuple(a.shape[1:]))
                 if edge is None else torch.empty_like(edge))
    return (torch.empty_like(x), torch.empty_like(a), torch.empty_like(b),
            grad_edge)


def _gat_attention_fake(*args, save_stats=False):
    # GAT's op also returns the statistics of its backward (see
    # _reference.gat_attention_stats), with no rows unless `save_stats`.
    if len(args) == 17:
        *args, save_stats = args
    outputs = _attention_fake(*args)
    x, rowptr = args[0], args[4]
    rows = rowptr.size(0) - 1 if save_stats else 0
    acc = _reference.opmath(x.dtype)
    slots = _reference.stats_slots(x.dtype)
    return outputs + (x.new_empty(rows, slots, x.size(1), x.size(2),
                                  dtype=acc),
                      x.new_empty(rows, x.size(1), dtype=acc))


torch.library.register_fake('pyg_gat_ext::gat_attention',
                            _gat_attention_fake)
torch.library.register_fake('pyg_gat_ext::gatv2_attention', _attention_fake)
for _name in ('gat_attention', 'gatv2_attention'):
    torch.library.register_fake(f'pyg_gat_ext::{_name}_backward',
                                _attention_backward_fake)


@torch.library.register_fake('pyg_gat_ext::head_scores')
def _(x, att):
    return x.new_empty(x.size(0), att.size(0), x.size(1))


@torch.library.register_fake('pyg_gat_ext::head_scores_backward')
def _(grad, x, att):
    return torch.empty_like(x), torch.empty_like(att)


@torch.library.register_fake('pyg_gat_ext::linear')
def _(x, weight, max_density):
    return x.new_empty(x.size(0), weight.size(0))


@torch.library.register_fake('pyg_gat_ext::linear_weight_grad')
def _(grad, x, max_density):
    return x.new_empty(grad.size(1), x.size(1))


@torch.library.register_fake('pyg_gat_ext::dropout')
def _(x, p, seed):
    return torch.empty_like(x, memory_format=torch.contiguous_format)


# Autograd ###################################################################


def _no_grads(name: str, count: int) -> Tuple[None, ...]:
    # `None` for the trailing arguments of op `name` after its first `count`.
    num_args = len(_op(name).default._schema.arguments)
    return (None, ) * (num_args - count)


def _setup_softmax(ctx, inputs: Tuple, output: Tensor) -> None:
    _, index, ptr, perm, num_nodes, dim = inputs
    ctx.save_for_backward(output, index, ptr, perm)
    ctx.num_nodes, ctx.dim = num_nodes, dim


def _softmax_grad(ctx, grad: Tensor):
    out, index, ptr, perm = ctx.saved_tensors
    grad_src = _op('segment_softmax_backward')(out, grad, index, ptr, perm,
                                               ctx.num_nodes, ctx.dim)
    return (grad_src, ) + _no_grads('segment_softmax', 1)


torch.library.register_autograd('pyg_gat_ext::segment_softmax',
                                _softmax_grad, setup_context=_setup_softmax)


def _setup_softmax_backward(ctx, inputs: Tuple, output: Tensor) -> None:
    out, grad_out, index, ptr, perm, num_nodes, dim = inputs
    ctx.save_for_backward(out, grad_out, index, ptr, perm)
    ctx.num_nodes, ctx.dim = num_nodes, dim


def _softmax_backward_grad(ctx, v: Tensor):
    # grad_src_k = y_k (g_k - s_k) with s = segment_sum(g * y) gathered, so
    # for a cotangent v:  d/dg_j = y_j (v_j - t_j),
    #                     d/dy_j = v_j (g_j - s_j) - g_j t_j,
    # with t = segment_sum(v * y) gathered: double backward for free.
    out, grad_out, index, ptr, perm = ctx.saved_tensors
    n, dim = ctx.num_nodes, ctx.dim
    if index is None:
        index = _reference.ptr_to_index(ptr, perm, out.size(dim))
    s = _reference.segment_sum(grad_out * out, index, n, dim)
    t = _reference.segment_sum(v * out, index, n, dim)
    s, t = s.index_select(dim, index), t.index_select(dim, index)
    grad_y = v * (grad_out - s) - grad_out * t
    grad_g = out * (v - t)
    return (grad_y, grad_g) + _no_grads('segment_softmax_backward', 2)


torch.library.register_autograd('pyg_gat_ext::segment_softmax_backward',
                                _softmax_backward_grad,
                                setup_context=_setup_softmax_backward)


def _setup_attention(ctx, inputs: Tuple, output: Tuple) -> None:
    # Everything the backward op takes after its two gradient-side inputs
    # (grad_out, grad_alpha, then the four tensors, lse, the graph, ...);
    # the two attention ops lay out their arguments alike, and GAT's
    # statistics (outputs 3 and 4, if any) go last, followed by `out` where
    # they leave it out (one slot: see _reference.gat_attention_stats).
    stats = tuple(output[3:])
    if stats and stats[0].numel() > 0 and stats[0].size(1) == 1:
        stats += (output[0], )
    ctx.save_for_backward(*inputs[:4], output[1], *inputs[4:10], inputs[14],
                          *stats)
    ctx.params = inputs[10:14]  # num_loops ... dropout
    ctx.has_alpha = output[2].numel() > 0
    ctx.num_stats = len(stats)
    # An unused output's gradient comes as None, not zeros: a gradient of
    # the weights only where a loss reaches them (GAT's backward can use its
    # statistics only without one).
    ctx.set_materialize_grads(False)


def _attention_grad(name: str) -> Callable:
    # The gradient of attention op `name` through its `*_backward` op. The
    # log-sum-exp and GAT's backward statistics are saved, not
    # differentiable; a gradient of the returned attention weights flows
    # into the scores.
    def grad(ctx, grad_out, grad_lse, grad_alpha, *grad_stats):
        saved = ctx.saved_tensors
        stats = saved[len(saved) - ctx.num_stats:]
        *tensors, seed = saved[:len(saved) - ctx.num_stats]
        x, edge, lse = tensors[0], tensors[3], tensors[4]
        if grad_out is None:
            grad_out = x.new_zeros(lse.size(0), x.size(1), x.size(2))
        if not ctx.has_alpha:
            grad_alpha = None
        grads = _op(f'{name}_backward')(grad_out.contiguous(), grad_alpha,
                                        *tensors, *ctx.params, seed, *stats)
        return grads[:3] + (None if edge is None else grads[3],
                            ) + _no_grads(name, 4)

    return grad


for _name in ('gat_attention', 'gatv2_attention'):
    torch.library.register_autograd(f'pyg_gat_ext::{_name}',
                                    _attention_grad(_name),
                                    setup_context=_setup_attention)


def _setup_head_scores(ctx, inputs: Tuple, output: Tensor) -> None:
    ctx.save_for_backward(*inputs)


def _head_scores_grad(ctx, grad: Tensor):
    x, att = ctx.saved_tensors
    return _op('head_scores_backward')(grad, x, att)


torch.library.register_autograd('pyg_gat_ext::head_scores',
                                _head_scores_grad,
                                setup_context=_setup_head_scores)


def _setup_linear(ctx, inputs: Tuple, output: Tensor) -> None:
    x, weight, ctx.max_density = inputs
    ctx.save_for_backward(x, weight)


def _linear_grad(ctx, grad: Tensor):
    # grad_x is a dense product (the gradient has no zeros to skip);
    # grad_weight skips the zeros of x again.
    x, weight = ctx.saved_tensors
    grad_x = grad_weight = None
    if ctx.needs_input_grad[0]:
        grad_x = grad.mm(weight)
    if ctx.needs_input_grad[1]:
        grad_weight = _op('linear_weight_grad')(grad, x, ctx.max_density)
    return grad_x, grad_weight, None


torch.library.register_autograd('pyg_gat_ext::linear', _linear_grad,
                                setup_context=_setup_linear)


def _setup_dropout(ctx, inputs: Tuple, output: Tensor) -> None:
    _, ctx.p, seed = inputs
    ctx.save_for_backward(seed)


def _dropout_grad(ctx, grad: Tensor):
    # The same mask, regenerated from the seed: the op is its own gradient.
    seed, = ctx.saved_tensors
    return _op('dropout')(grad, ctx.p, seed), None, None


torch.library.register_autograd('pyg_gat_ext::dropout', _dropout_grad,
                                setup_context=_setup_dropout)

# The test override ##########################################################


def _is_wrapper(arg) -> bool:
    return (isinstance(arg, Tensor) and type(arg).__torch_dispatch__
            is not Tensor.__torch_dispatch__)


class _Override(TorchDispatchMode):
    # Sends every `pyg_gat_ext` op to the implementation `backend` names.
    def __init__(self, backend: str):
        super().__init__()
        self.backend = backend

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        first = _first_tensor(args)
        if any(isinstance(a, FakeTensor) for a in args) or (
                first is not None and first.device.type == 'meta'):
            return func(*args, **kwargs)  # Shapes only: the fake kernel.
        if any(_is_wrapper(a) for a in args):
            # A tensor subclass (e.g. PyG's EdgeIndex) unwraps itself first
            # and calls the op again with plain tensors.
            return NotImplemented
        if func.namespace == 'pyg_gat_ext':
            device = first.device if first is not None else torch.device(
                'cpu')
            backend = kernel_backend(device)
            if backend == 'reference':
                return getattr(_reference, func._opname)(*args, **kwargs)
            if backend == 'triton':
                return getattr(_triton(), func._opname)(*args, **kwargs)
        return func(*args, **kwargs)  # The C++ kernels are the CPU kernels.


#: The forced implementations, innermost last.
_forced = ['auto']


def _triton_interpret() -> bool:
    return os.environ.get('TRITON_INTERPRET', '0') == '1'


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[None]:
    r"""Context manager that runs every op with implementation :obj:`name`:
    ``'reference'`` (pure PyTorch), ``'cpp'`` (CPU), ``'triton'`` (CUDA, or
    CPU under ``TRITON_INTERPRET=1``) or ``'auto'`` (the dispatcher's
    choice: the kernel of each device where it is available, else the
    reference). For tests and benchmarks: it intercepts the ops in this
    thread with a dispatch mode, which costs a Python call per op; fake
    and meta tensors (``torch.compile``, ``opcheck``) pass through it to
    the fake kernels."""
    if name not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS} (got '{name}')")
    _forced.append(name)
    try:
        if name == 'auto':
            yield
        else:
            with _Override(name):
                yield
    finally:
        _forced.pop()


def use_reference() -> 'contextlib.AbstractContextManager[None]':
    r"""Shorthand for :obj:`use_backend('reference')`."""
    return use_backend('reference')


def kernel_backend(device: torch.device) -> str:
    r"""The implementation the ops run on :obj:`device`: ``'cpp'``,
    ``'triton'`` or ``'reference'``. Builds the C++ kernels if needed, and
    raises if a forced backend cannot run on :obj:`device`."""
    forced = _forced[-1]
    if forced == 'reference':
        return 'reference'
    if forced == 'cpp' or (forced == 'auto' and device.type == 'cpu'):
        if device.type == 'cpu' and _cpp.load():
            return 'cpp'
        if forced == 'cpp':
            raise RuntimeError(f"pyg_gat_ext: the 'cpp' backend cannot run "
                               f'on {device} (CPU only, and it must build)')
        return 'reference'
    if forced == 'triton':
        if (HAS_TRITON and (device.type == 'cuda' or _triton_interpret())
                and _triton() is not None):
            return 'triton'
        raise RuntimeError(f"pyg_gat_ext: the 'triton' backend cannot run "
                           f'on {device} (needs triton to import, and CUDA '
                           f'or TRITON_INTERPRET=1)')
    if device.type == 'cuda' and HAS_TRITON and _triton() is not None:
        return 'triton'
    return 'reference'


def _force_from_environment() -> Optional[_Override]:
    # PYG_GAT_EXT_BACKEND forces an implementation for the whole process
    # (in the thread that imports pyg_gat_ext, and the autograd threads it
    # starts, which inherit its dispatch modes).
    name = os.environ.get('PYG_GAT_EXT_BACKEND', 'auto')
    if name not in BACKENDS:
        raise ValueError(f'PYG_GAT_EXT_BACKEND must be one of {BACKENDS} '
                         f"(got '{name}')")
    if name == 'auto':
        return None
    _forced.append(name)
    override = _Override(name)
    override.__enter__()
    return override  # Held for the life of the process.


_environment_override = _force_from_environment()
