r"""The segment-softmax op on every backend (reference, C++, Triton): against
the reference, PyG's softmax and dense softmax; special values; gradients;
the op contract; torch.compile; bad input."""
import pytest
import torch
from torch_geometric.utils import softmax as pyg_softmax

from pyg_gat_ext.ops import (
    _reference,
    kernel_backend,
    segment_csr,
    segment_softmax,
    use_backend,
)
from tests.conftest import TOL


def _segments(kind, num_entries, num_segments, seed=0):
    g = torch.Generator().manual_seed(seed)
    if kind == 'random':  # Unsorted, with empty segments.
        return torch.randint(0, num_segments, (num_entries, ), generator=g)
    if kind == 'singletons':  # Every segment of length 1.
        return torch.randperm(num_entries, generator=g)
    if kind == 'power_law':  # A few long segments, many short ones.
        w = torch.arange(1, num_segments + 1, dtype=torch.float).pow(-1.5)
        return torch.multinomial(w, num_entries, True, generator=g)
    if kind == 'one_huge':  # One segment longer than any chunk or block.
        index = torch.randint(1, num_segments, (num_entries, ), generator=g)
        index[torch.rand(num_entries, generator=g) < 0.8] = 0
        return index
    raise ValueError(kind)


def _csr(index, num_segments):
    ptr, perm = _reference.segment_csr(index, num_segments)
    return ptr, perm


@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
@pytest.mark.parametrize('shape', [(), (3, ), (2, 4)])
@pytest.mark.parametrize('kind', ['random', 'singletons', 'power_law'])
def test_matches_pyg_softmax(kind, shape, dtype, backend, device):
    # Sizes small enough for the Triton interpreter; with 2 threads the C++
    # kernels stream `index` for 'random' and 'power_law' and walk segments
    # for 'singletons' (test_long_segment: segments longer than a block).
    num_entries = 120
    if kind == 'singletons' and backend == 'triton':
        num_entries = 40  # A program per segment in the interpreter.
    num_segments = num_entries if kind == 'singletons' else 15
    index = _segments(kind, num_entries, num_segments).to(device)
    src = 5 * torch.randn((num_entries, ) + shape, dtype=dtype, device=device)
    with use_backend('reference'):
        expected = pyg_softmax(src, index, num_nodes=num_segments)
    torch.testing.assert_close(
        segment_softmax(src, index, num_nodes=num_segments), expected,
        **TOL[dtype])
    torch.testing.assert_close(segment_softmax(src, index), expected,
                               **TOL[dtype])
    # The CSR form over sorted entries (the `ptr` argument):
    ptr, perm = _csr(index, num_segments)
    torch.testing.assert_close(segment_softmax(src[perm], ptr=ptr),
                               expected[perm], **TOL[dtype])
    # A grouping built once and reused, over the unsorted entries:
    ptr, perm = segment_csr(index, num_segments)
    torch.testing.assert_close(segment_softmax(src, ptr=ptr, perm=perm),
                               expected, **TOL[dtype])


def test_long_segment(backend, device):
    # A segment of more than 100k entries: C++ streams it over thread slices
    # (by `index`) or splits it over chunks merged in order (by `ptr` and
    # `perm`); Triton loops over it in blocks within one program.
    # (Triton's blocks are at most 1024 entries: 20k is long for it, and
    # fits the interpreter's pace.)
    n = 20_000 if backend == 'triton' else 130_000
    index = _segments('one_huge', n, 50).to(device)
    assert (index == 0).sum() > 0.75 * n
    src = 3 * torch.randn(n, 2, dtype=torch.float64, device=device)
    expected = pyg_softmax(src, index)
    torch.testing.assert_close(segment_softmax(src, index), expected,
                               **TOL[torch.float64])
    ptr, perm = _csr(index, 50)
    torch.testing.assert_close(
        torch.ops.pyg_gat_ext.segment_softmax(src, None, ptr, perm, 50, 0),
        expected, **TOL[torch.float64])


@pytest.mark.parametrize('dim', [1, -1])
def test_other_dim(dim, backend, device):
    src = torch.randn(3, 50, 2, dtype=torch.float64, device=device)
    if dim == -1:  # Non-contiguous, segments along the last dimension.
        src = src.transpose(1, 2)
    index = _segments('random', 50, 7).to(device)
    torch.testing.assert_close(segment_softmax(src, index, dim=dim),
                               pyg_softmax(src, index, dim=dim),
                               **TOL[torch.float64])


def test_complete_bipartite_equals_dense_softmax(backend, device):
    # Every target attends to every source: each segment is a full row.
    num_dst, num_src, heads = 5, 9, 3
    logits = torch.randn(num_dst, num_src, heads, dtype=torch.float64,
                         device=device)
    index = torch.arange(num_dst, device=device).repeat_interleave(num_src)
    out = segment_softmax(logits.view(-1, heads), index, num_nodes=num_dst)
    torch.testing.assert_close(out.view(num_dst, num_src, heads),
                               logits.softmax(dim=1), **TOL[torch.float64])


INF, NAN = float('inf'), float('nan')


@pytest.mark.parametrize('values', [
    pytest.param([3.0] * 6, id='all_equal'),
    pytest.param([1e4, -1e4, 1e4, 0.0, -1e4, -1e4], id='large'),
    pytest.param([-INF, -INF, 1.0, 2.0, -INF, 4.0], id='neg_inf'),
    pytest.param([NAN, 0.0, 1.0, 2.0, 3.0, 4.0], id='nan'),
    pytest.param([INF, 0.0, 1.0, 2.0, 3.0, 4.0], id='pos_inf'),
])
def test_special_values_as_pyg(values, backend, device):
    src = torch.tensor(values, device=device)
    index = torch.tensor([0, 0, 1, 1, 2, 2], device=device)
    expected = pyg_softmax(src, index)
    out = segment_softmax(src, index)
    torch.testing.assert_close(out, expected, equal_nan=True)
    assert torch.isfinite(out).sum() == torch.isfinite(expected).sum()


def test_empty_and_empty_segments(backend, device):
    src = torch.empty(0, 4, device=device)
    index = torch.empty(0, dtype=torch.long, device=device)
    assert segment_softmax(src, index, num_nodes=3).shape == (0, 4)
    assert segment_softmax(src, index).shape == (0, 4)
    # Segments 0, 2 and 4 are empty:
    src = torch.randn(4, 2, device=device)
    index = torch.tensor([1, 3, 3, 1], device=device)
    torch.testing.assert_close(segment_softmax(src, index, num_nodes=5),
                               pyg_softmax(src, index, num_nodes=5))


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_half_precision_computed_in_float32(dtype, backend, device):
    if backend == 'reference':
        pytest.skip('the reference computes in the input dtype, as PyG')
    index = _segments('power_law', 500, 20).to(device)
    src = 100 * torch.randn(500, 4, device=device)
    out = segment_softmax(src.to(dtype), index)
    assert out.dtype == dtype and torch.isfinite(out).all()
    expected = pyg_softmax(src.to(dtype).float(), index)
    torch.testing.assert_close(out.float(), expected, atol=1e-2, rtol=1e-2)


def test_gradient(backend, device):
    n = 12 if backend == 'triton' else 30  # The interpreter is slow.
    index = _segments('power_law', n, 6).to(device)
    src = torch.randn(n, 2, dtype=torch.float64, device=device,
                      requires_grad=True)
    fn = lambda s: segment_softmax(s, index, num_nodes=6)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (src, ))
    if backend != 'triton':  # The interpreter is slow.
        assert torch.autograd.gradgradcheck(fn, (src, ))
    # The gradient agrees with PyG's (autograd through its scatters):
    g = torch.randn(n, 2, dtype=torch.float64, device=device)
    ours, = torch.autograd.grad(fn(src), src, g)
    ref, = torch.autograd.grad(pyg_softmax(src, index, num_nodes=6), src, g)
    torch.testing.assert_close(ours, ref, **TOL[torch.float64])


@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
def test_kernels_match_reference(dtype, backend, device):
    # Forward and backward op, every grouping form, against the reference.
    index = _segments('random', 400, 30).to(device)
    src = torch.randn(400, 3, dtype=dtype, device=device)
    grad = torch.randn(400, 3, dtype=dtype, device=device)
    ptr, perm = _csr(index, 30)
    forms = [(index, None, None), (None, ptr, perm), (index, ptr, perm)]
    with use_backend('reference'):
        out = _reference.segment_softmax(src, index, None, None, 30, 0)
        grad_src = _reference.segment_softmax_backward(out, grad, index, None,
                                                       None, 30, 0)
    for idx, p, q in forms:
        torch.testing.assert_close(
            torch.ops.pyg_gat_ext.segment_softmax(src, idx, p, q, 30, 0), out,
            **TOL[dtype])
        torch.testing.assert_close(
            torch.ops.pyg_gat_ext.segment_softmax_backward(
                out, grad, idx, p, q, 30, 0), grad_src, **TOL[dtype])


def test_segment_csr(backend, device):
    index = _segments('random', 1000, 40).to(device)
    ptr, perm = torch.ops.pyg_gat_ext.segment_csr(index, 40)
    assert ptr.tolist() == [0] + torch.bincount(
        index, minlength=40).cumsum(0).tolist()
    assert torch.equal(perm, index.argsort(stable=True))  # Stable.


def test_kernel_backend_reports_what_runs(backend, device):
    assert kernel_backend(device) == backend


def test_opcheck(device):
    # The registration (schema, fake kernel, autograd) with the kernels the
    # dispatcher routes to on each device: C++ on CPU, Triton on CUDA.
    # (use_backend's dispatch mode would sit under opcheck's tracing.)
    index = _segments('random', 40, 5).to(device)
    src = torch.randn(40, 3, device=device, requires_grad=True)
    ptr, perm = _csr(index, 5)
    for args in [(src, index, None, None, 5, 0), (src, None, ptr, perm, 5, 0)]:
        torch.library.opcheck(torch.ops.pyg_gat_ext.segment_softmax.default,
                              args)
    out = segment_softmax(src.detach(), index).requires_grad_()
    grad = torch.randn(40, 3, device=device, requires_grad=True)
    torch.library.opcheck(
        torch.ops.pyg_gat_ext.segment_softmax_backward.default,
        (out, grad, index, ptr, perm, 5, 0))
    torch.library.opcheck(torch.ops.pyg_gat_ext.segment_csr.default,
                          (index, 5))


def test_compile_fullgraph(device):
    torch._dynamo.reset()
    index = _segments('random', 40, 5).to(device)
    src = torch.randn(40, 3, device=device, requires_grad=True)
    fn = torch.compile(lambda s, i: segment_softmax(s, i, num_nodes=5),
                       fullgraph=True)
    out = fn(src, index)
    torch.testing.assert_close(out, segment_softmax(src, index, None, 5))
    out.sum().backward()


@pytest.mark.parametrize('kwargs,match', [
    (dict(src=torch.ones(4, dtype=torch.long)), 'floating point'),
    (dict(index=None), "requires 'index' or 'ptr'"),
    (dict(index=torch.zeros(3, dtype=torch.long)), "'index' has 3 entries"),
    (dict(index=torch.zeros(4, 1, dtype=torch.long)), "1-D integer"),
    (dict(ptr=torch.tensor([[0, 4]])), "'ptr' to be a non-empty 1-D"),
    (dict(dim=2), "out of range"),
    (dict(ptr=torch.tensor([0, 2, 4]), perm=torch.tensor([0, 1])),
     "'perm' must hold one entry per row"),
    (dict(ptr=torch.tensor([0, 2, 4]), num_nodes=3),
     "'ptr' has 3 entries, that is 2 segments, but 'num_nodes' is 3"),
])
def test_bad_input(kwargs, match):
    args = dict(src=torch.randn(4), index=torch.tensor([0, 0, 1, 1]))
    args.update(kwargs)
    with pytest.raises((ValueError, TypeError), match=match):
        segment_softmax(**args)


def test_bad_grouping_is_an_error_not_a_crash():
    src = torch.randn(4, 2)
    with use_backend('cpp'):
        with pytest.raises(IndexError, match='out of range for 2 segments'):
            segment_softmax(src, torch.tensor([0, 1, 5, 1]), num_nodes=2)
        with pytest.raises(ValueError, match="'ptr' must start at 0"):
            segment_softmax(src, ptr=torch.tensor([0, 2, 3]))
        with pytest.raises(ValueError, match="1 decreasing steps"):
            segment_softmax(src, ptr=torch.tensor([0, 3, 1, 4]))
        # The kernel checks its own inputs too (the op can be called
        # directly, e.g. from TorchScript):
        with pytest.raises(RuntimeError, match="'ptr' must start at 0"):
            torch.ops.pyg_gat_ext.segment_softmax(
                src, None, torch.tensor([0, 2, 3]), None, 2, 0)
        with pytest.raises(RuntimeError, match='non-decreasing'):
            torch.ops.pyg_gat_ext.segment_softmax(
                src, None, torch.tensor([0, 3, 1, 4]), None, 3, 0)


def test_triton_grid_is_one_dimensional_for_any_outer_size():
    # CUDA allows 65535 programs in the grid's second and third dimensions:
    # segments along dim 1 of a [70000, 50, 3] input take one dimension.
    pytest.importorskip('triton')
    from pyg_gat_ext.ops.triton.segment_softmax import segment_softmax_launches
    src = torch.empty(70000, 50, 3)
    ptr, perm = segment_csr(_segments('random', 50, 7), 7)
    launches, _ = segment_softmax_launches(src, None, ptr, perm, 7, 1)
    (launch, ) = launches
    assert len(launch.grid) == 1 and launch.grid[0] == 7 * 70000
