import sys

import pytest
import torch

from pyg_gat_ext.memory import peak_memory


@pytest.mark.skipif(not sys.platform.startswith('linux'),
                    reason='CPU peak memory is measured through /proc')
def test_peak_memory_cpu_counts_a_temporary():
    with peak_memory('cpu') as small:
        x = torch.ones(2**18)  # 1 MiB
        del x
    with peak_memory('cpu') as large:
        x = torch.ones(2**25)  # 128 MiB, freed before the block ends
        del x
    assert large.bytes is not None and small.bytes is not None
    assert 120 * 2**20 <= large.bytes <= 160 * 2**20
    assert small.bytes < 16 * 2**20
    assert 'MiB' in repr(large)


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
def test_peak_memory_cuda_counts_a_temporary():
    with peak_memory('cuda') as mem:
        x = torch.ones(2**25, device='cuda')
        del x
    assert mem.bytes == 2**27
