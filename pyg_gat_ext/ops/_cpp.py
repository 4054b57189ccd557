r"""Lazy loader of the C++ CPU kernels in ``pyg_gat_ext/csrc``.

Nothing is compiled at install or import time: the first op call on a CPU
tensor builds the kernels with :func:`torch.utils.cpp_extension.load` into a
cache keyed by the torch and Python versions, the CPU's instruction sets and
the install location (``$PYG_GAT_EXT_CACHE``, else ``~/.cache/pyg_gat_ext``),
and later processes load the cached library. If
the build fails (e.g. no compiler), one warning is issued and the
pure-PyTorch reference runs instead; with ``PYG_GAT_EXT_REQUIRE_KERNELS=1``
the failure is an error, which is how CI proves the kernels ran.

``PYG_GAT_EXT_SANITIZE=address`` builds the kernels with AddressSanitizer
into a cache of their own (run Python with the ASan runtime preloaded,
``LD_PRELOAD=$(gcc -print-file-name=libasan.so)``); CI runs the op tests so.
"""
import glob
import hashlib
import os
import os.path as osp
import platform
import sys
import threading
import warnings

import torch

CSRC = osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))), 'csrc')

_lock = threading.Lock()
_state = {'tried': False, 'loaded': False, 'error': None}


def _cpu_tag() -> str:
    # The kernels are built with -march=native: a cached library must never
    # run on a CPU with other instruction sets, so the CPU flags are part of
    # the cache key.
    flags = platform.machine()
    try:
        with open('/proc/cpuinfo') as f:
            flags += next((line for line in f if line.startswith('flags')),
                          '')
    except OSError:
        pass
    return hashlib.sha1(flags.encode()).hexdigest()[:10]


def cache_dir() -> str:
    root = os.environ.get('PYG_GAT_EXT_CACHE') or osp.join(
        osp.expanduser('~'), '.cache', 'pyg_gat_ext')
    # The install location is part of the key too: ninja rebuilds when the
    # source paths change, so two installs would otherwise rebuild in turn.
    where = hashlib.sha1(CSRC.encode()).hexdigest()[:8]
    tag = (f'torch-{torch.__version__}-py{sys.version_info[0]}'
           f'{sys.version_info[1]}-cpu-{_cpu_tag()}-src-{where}')
    if sanitizer():
        tag += f'-{sanitizer()}'

    return osp.join(root, tag.replace('+', '_'))


def sanitizer() -> str:
    r"""The sanitizer the kernels are built with (``PYG_GAT_EXT_SANITIZE``,
    only ``'address'``), or ``''``."""
    name = os.environ.get('PYG_GAT_EXT_SANITIZE', '')
    if name not in ('', 'address'):
        raise ValueError(f"PYG_GAT_EXT_SANITIZE must be 'address' or unset "
                         f"(got '{name}')")
    return name


def require_kernels() -> bool:
    return os.environ.get('PYG_GAT_EXT_REQUIRE_KERNELS', '0') == '1'


def load() -> bool:
    r"""Builds (once) and loads the C++ kernels; returns whether they are
    available. Thread-safe; a failure is remembered, not retried."""
    if _state['tried']:
        return _state['loaded']
    with _lock:
        if _state['tried']:
            return _state['loaded']
        try:
            from torch.utils.cpp_extension import load as load_extension
            build_dir = cache_dir()
            asan = []
            if sanitizer():
                asan = ['-fsanitize=address', '-fno-omit-frame-pointer']
            os.makedirs(build_dir, exist_ok=True)
            load_extension(
                name='pyg_gat_ext_cpu',
                sources=sorted(glob.glob(osp.join(CSRC, '*.cpp'))),
                extra_cflags=['-O3', '-march=native', '-fopenmp'] + asan,
                extra_ldflags=['-fopenmp'] + asan,
                build_directory=build_dir,
                is_python_module=False,
                verbose=False,
            )
            _state['loaded'] = True
        except Exception as e:  # A missing compiler, headers, ...
            _state['error'] = e
            if require_kernels():
                _state['tried'] = True
                raise RuntimeError(
                    f'pyg_gat_ext: building the C++ kernels failed and '
                    f'PYG_GAT_EXT_REQUIRE_KERNELS=1 forbids the fallback: '
                    f'{e}') from e
            warnings.warn(
                f'pyg_gat_ext: could not build the C++ CPU kernels, falling '
                f'back to the pure-PyTorch reference (slower, same results). '
                f'Cause: {type(e).__name__}: {e}', RuntimeWarning,
                stacklevel=3)
        _state['tried'] = True
        return _state['loaded']
