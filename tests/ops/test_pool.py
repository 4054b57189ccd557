r"""The pool of large CPU buffers of the C++ kernels (csrc/pool.cpp): large
outputs reuse a freed block instead of faulting in fresh pages, keep their
values, and still count in pyg_gat_ext.memory.peak_memory."""
import gc

import pytest
import torch

from pyg_gat_ext.memory import peak_memory
from pyg_gat_ext.ops import empty_cache, use_backend
from tests.conftest import backend_or_skip

LARGE = (1 << 25) // 4 + 1024  # Float entries just above 32 MiB.


@pytest.fixture(autouse=True)
def cpp_kernels():
    backend_or_skip('cpp', torch.device('cpu'))
    empty_cache()
    yield
    gc.collect()
    empty_cache()


def dropout(x, seed):
    # The C++ dropout op: its output comes from the pool when large.
    return torch.ops.pyg_gat_ext.dropout(x, 0.5, torch.tensor([seed, 0]))


def test_large_outputs_reuse_freed_blocks():
    x = torch.randn(LARGE)
    first = dropout(x, 1)
    expected = first.clone()
    ptr = first.data_ptr()
    del first
    again = dropout(x, 1)
    assert again.data_ptr() == ptr  # The freed block, not a new mapping.
    torch.testing.assert_close(again, expected, rtol=0, atol=0)
    other = dropout(x, 2)  # The block is taken: a second one.
    assert other.data_ptr() != ptr
    assert not torch.equal(other, again)
    del again, other
    assert empty_cache() >= 2 * x.nbytes
    assert empty_cache() == 0


def test_small_outputs_are_ordinary_tensors():
    small = dropout(torch.randn(1000), 1)
    assert small.untyped_storage().resizable()
    del small
    assert empty_cache() == 0


def test_at_most_eight_blocks_are_kept():
    x = torch.randn(LARGE)
    outs = [dropout(x, seed) for seed in range(10)]
    del outs
    assert empty_cache() == 8 * (34 << 20)  # Rounded up to 2 MiB each.


def test_gat_attention_outputs_and_gradients_in_the_pool():
    from pyg_gat_ext.ops import gat_attention, gat_graph
    n, H, C = (1 << 25) // 256 + 16, 8, 8  # out and grad_x above 32 MiB.
    g = torch.Generator().manual_seed(0)
    src = torch.randint(0, n, (n, ), generator=g)
    dst = torch.randint(0, n, (n, ), generator=g)
    graph = gat_graph(src, dst, n, n)
    x = torch.randn(n, H, C, generator=g).requires_grad_()
    a_src = torch.randn(n, H, generator=g)
    a_dst = torch.randn(n, H, generator=g)
    results = []
    for backend in ['cpp', 'cpp', 'reference']:  # The second cpp reuses.
        with use_backend(backend):
            out = gat_attention(x, a_src, a_dst, graph, num_loops=n).out
            grad, = torch.autograd.grad(out.sum(), x)
        results.append((out.detach(), grad))
        del out, grad
    for (out, grad) in results[:2]:
        torch.testing.assert_close(out, results[2][0])
        torch.testing.assert_close(grad, results[2][1])


def test_peak_memory_counts_pooled_blocks():
    x = torch.randn(LARGE)
    dropout(x, 1)  # Freed at once: a block free in the pool.
    with peak_memory('cpu') as mem:
        out = dropout(x, 3)
    if mem.mib is None:
        pytest.skip('peak RSS cannot be measured here')
    assert mem.mib >= out.nbytes / 2**20
