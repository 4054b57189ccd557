r"""Peak-memory measurement for comparisons (examples, benchmarks).

:func:`peak_memory` measures how much memory a block of code needs on top of
what was in use when the block began:

- on CUDA, the peak of :func:`torch.cuda.max_memory_allocated` (tensor
  memory of the caching allocator, kernel workspaces included);
- on CPU, the growth of the process's peak resident set size on Linux (all
  memory the process touches, C++ kernel scratch included), after resetting
  the peak through ``/proc/self/clear_refs``. Elsewhere it is :obj:`None`.

The CPU figure is process-wide: run nothing else in other threads while
measuring, and compare figures taken in one process, one after the other.
"""
import contextlib
import re
import sys
from typing import Iterator, Optional, Union

import torch

_STATUS = '/proc/self/status'


class PeakMemory:
    r"""The result of :func:`peak_memory`: :obj:`bytes` is set when the
    block ends (:obj:`None` where the platform cannot measure it)."""
    def __init__(self) -> None:
        self.bytes: Optional[int] = None

    @property
    def mib(self) -> Optional[float]:
        return None if self.bytes is None else self.bytes / 2**20

    def __repr__(self) -> str:
        mib = 'n/a' if self.mib is None else f'{self.mib:.1f} MiB'
        return f'PeakMemory({mib})'


def _rss_kib() -> Optional[dict]:
    # Current and peak resident set size of this process, in KiB.
    try:
        with open(_STATUS) as f:
            status = f.read()
    except OSError:
        return None
    fields = {}
    for key in ('VmRSS', 'VmHWM'):
        match = re.search(key + r':\s+(\d+)\s+kB', status)
        if match is None:
            return None
        fields[key] = int(match.group(1))
    return fields


def _reset_rss_peak() -> bool:
    # Freed heap memory that glibc keeps would be reused without counting:
    # hand it back to the OS first, then reset the peak.
    try:
        import ctypes
        ctypes.CDLL('libc.so.6').malloc_trim(0)
    except (OSError, AttributeError):
        pass
    try:
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')  # Resets VmHWM to the current VmRSS.
        return True
    except OSError:
        return False


@contextlib.contextmanager
def peak_memory(
    device: Union[str, torch.device, None] = None, ) -> Iterator[PeakMemory]:
    r"""Context manager measuring the peak memory that the block allocates
    on :obj:`device` (CPU by default) beyond what was in use at its start::

        with peak_memory('cpu') as mem:
            conv(x, edge_index).sum().backward()
        print(mem.mib)
    """
    device = torch.device('cpu' if device is None else device)
    result = PeakMemory()
    if device.type == 'cuda':
        torch.cuda.synchronize(device)
        start = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        yield result
        torch.cuda.synchronize(device)
        result.bytes = torch.cuda.max_memory_allocated(device) - start
        return
    # Buffers that the kernels keep for reuse are not in use: unmapped
    # before the peak is reset, so that the block's own use of them counts
    # (as the CUDA allocator's cached blocks do not in memory_allocated).
    # Not imported here: this module also runs alone, beside other
    # libraries' torch (benchmarks/peers), and loaded kernels imported it.
    cpp = sys.modules.get('pyg_gat_ext.ops._cpp')
    if cpp is not None:
        cpp.empty_cache()
    before = _rss_kib() if device.type == 'cpu' else None
    if before is None or not _reset_rss_peak():
        yield result
        return
    before = _rss_kib()
    yield result
    after = _rss_kib()
    if before is not None and after is not None:
        result.bytes = max(0, after['VmHWM'] - before['VmRSS']) * 1024
