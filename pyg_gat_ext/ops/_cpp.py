r"""Lazy loader of the C++ CPU kernels in ``pyg_gat_ext/csrc``.

Nothing is compiled at install or import time: the first op call on a CPU
tensor builds the kernels with :func:`torch.utils.cpp_extension.load` (one
line on stderr when the build starts, one when it ends), and later
processes load the built library with :func:`torch.ops.load_library`
without calling the build at all. If the build fails (e.g. no compiler),
one warning names what to install and the pure-PyTorch reference runs
instead; with ``PYG_GAT_EXT_REQUIRE_KERNELS=1`` the failure is an error,
which is how CI proves the kernels ran.

The cache (``$PYG_GAT_EXT_CACHE``, else ``~/.cache/pyg_gat_ext``) holds one
folder per torch version, Python version, CPU instruction sets (the kernels
use ``-march=native``) and hash of the sources' *content* and compile
flags: a re-install, an editable install and a wheel of the same sources
share one build, whatever their paths and file times. A build runs in a
fresh private folder, from a copy of the sources that were hashed, and its
library is renamed into place when complete, so a half-written library is
never loaded. Builds of one folder are serialised by an ``flock`` on its
``build.lock`` (released by the kernel when its holder dies, even by
``SIGKILL``, so it cannot go stale; the file names the holder for the
message of a waiter). A waiter gives up after
``$PYG_GAT_EXT_LOCK_TIMEOUT`` seconds (600) with an error that names the
holder, which falls back like a failed build.

``PYG_GAT_EXT_SANITIZE=address`` builds the kernels with AddressSanitizer
into a cache of their own (run Python with the ASan runtime preloaded,
``LD_PRELOAD=$(gcc -print-file-name=libasan.so)``); CI runs the op tests so.
"""
import contextlib
import ctypes
import glob
import hashlib
import os
import os.path as osp
import platform
import shutil
import socket
import sys
import sysconfig
import tempfile
import threading
import time
import warnings
from typing import Dict, Iterator, Optional, Tuple

import torch

CSRC = osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))), 'csrc')

#: The library's name: ``TORCH_EXTENSION_NAME`` and the file ``NAME.so``.
NAME = 'pyg_gat_ext_cpu'

#: Compile and link flags, part of the cache key.
CFLAGS = ['-O3', '-march=native', '-fopenmp']
LDFLAGS = ['-fopenmp']
_ASAN = ['-fsanitize=address', '-fno-omit-frame-pointer']

#: The announced duration of a first build until one was measured here
#: (69 to 86 s measured on 2 cores since the GATv2 kernels; ninja compiles
#: the 5 files in parallel).
TYPICAL_BUILD_SECONDS = 80

_lock = threading.Lock()
_state = {
    'tried': False,
    'loaded': False,
    'error': None,
    'path': None,
    'empty_cache': None,
}


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


def _sources() -> Dict[str, bytes]:
    # Every file of csrc the build reads (.cpp and .h), by file name.
    paths = glob.glob(osp.join(CSRC, '*.cpp')) + glob.glob(
        osp.join(CSRC, '*.h'))
    sources = {}
    for path in sorted(paths):
        with open(path, 'rb') as f:
            sources[osp.basename(path)] = f.read()
    return sources


def _source_hash(sources: Dict[str, bytes]) -> str:
    # Content and names of the sources, and the flags (the sanitizer's are
    # keyed by the folder's suffix): not their paths or times.
    h = hashlib.sha256(repr((CFLAGS, LDFLAGS)).encode())
    for name, data in sources.items():
        h.update(f'{name}\0{len(data)}\0'.encode())
        h.update(data)
    return h.hexdigest()[:16]


def cache_root() -> str:
    return os.environ.get('PYG_GAT_EXT_CACHE') or osp.join(
        osp.expanduser('~'), '.cache', 'pyg_gat_ext')


def cache_dir(sources: Optional[Dict[str, bytes]] = None) -> str:
    r"""The folder of the kernels built from :obj:`sources` (default: the
    files of ``csrc``) for this torch, Python, CPU and sanitizer."""
    if sources is None:
        sources = _sources()
    tag = (f'torch-{torch.__version__}-py{sys.version_info[0]}'
           f'{sys.version_info[1]}-cpu-{_cpu_tag()}-src-'
           f'{_source_hash(sources)}')
    if sanitizer():
        tag += f'-{sanitizer()}'
    return osp.join(cache_root(), tag.replace('+', '_'))


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


def lock_timeout() -> float:
    r"""Seconds a process waits for another's build of the same kernels
    (``PYG_GAT_EXT_LOCK_TIMEOUT``, default 600) before it gives up."""
    return float(os.environ.get('PYG_GAT_EXT_LOCK_TIMEOUT', '600'))


def _say(message: str) -> None:
    sys.stderr.write(f'pyg_gat_ext: {message}\n')
    sys.stderr.flush()


def _ninja_dir() -> Optional[str]:
    # The folder of the ninja executable: on PATH, else where the `ninja`
    # package put it (the scripts folder of this Python, which is not on
    # PATH when a virtual environment's python runs without activation).
    found = shutil.which('ninja')
    if found:
        return osp.dirname(found)
    candidates = [sysconfig.get_path('scripts'), osp.dirname(sys.executable)]
    try:
        import ninja
        candidates.insert(0, ninja.BIN_DIR)
    except (ImportError, AttributeError):
        pass
    for folder in candidates:
        if folder and shutil.which('ninja', path=folder):
            return folder
    return None


def _build_tools() -> Tuple[str, str]:
    # The ninja folder and the C++ compiler torch will call, or an error
    # that says which is missing and how to install it.
    ninja_dir = _ninja_dir()
    compiler = os.environ.get('CXX', 'c++')
    missing = []
    if ninja_dir is None:
        missing.append('ninja (pip install ninja)')
    if shutil.which(compiler) is None:
        missing.append(f"a C++ compiler such as g++ (Debian/Ubuntu: apt-get "
                       f"install g++; $CXX names another; '{compiler}' is "
                       f"not found)")
    if missing:
        raise RuntimeError('building the kernels needs ' +
                           ' and '.join(missing) + ', which '
                           f'{"are" if len(missing) > 1 else "is"} missing')
    return ninja_dir, compiler


def _holder(path: str) -> str:
    # Who holds the lock, from what it wrote into the lock file.
    try:
        with open(path) as f:
            pid, host, since = f.read().split()
        started = time.strftime('%H:%M:%S', time.localtime(float(since)))
        ago = time.time() - float(since)
        return (f'process {pid} on {host} (building since {started}, '
                f'{ago:.0f} s ago)')
    except (OSError, ValueError):
        return 'another process'


@contextlib.contextmanager
def _build_lock(build_dir: str) -> Iterator[bool]:
    r"""Holds ``build_dir/build.lock`` exclusively; yields :obj:`True`, or
    :obj:`False` where the file system has no locks. Raises
    :class:`TimeoutError`, naming the holder, after :func:`lock_timeout`
    seconds of waiting."""
    import fcntl

    path = osp.join(build_dir, 'build.lock')
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)  # Not inherited.
    try:
        deadline = time.monotonic() + lock_timeout()
        locked, waiting = True, False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                pass
            except OSError:
                # No locks (some network file systems): concurrent builds
                # are still safe, each in its own folder.
                locked = False
                break
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f'gave up after {lock_timeout():.0f} s waiting for '
                    f'{_holder(path)} to finish compiling the kernels in '
                    f'{build_dir} (the lock is {path}; '
                    f'PYG_GAT_EXT_LOCK_TIMEOUT sets the wait)')
            if not waiting:
                waiting = True
                _say(f'waiting for {_holder(path)} to finish compiling the '
                     f'C++ CPU kernels in {build_dir}')
            time.sleep(0.2)
        if locked:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f'{os.getpid()} {socket.gethostname()} '
                      f'{time.time():.0f}\n'.encode(), 0)
        try:
            yield locked
        finally:
            if locked:
                os.ftruncate(fd, 0)
    finally:
        os.close(fd)  # Releases the lock.


def _estimate() -> int:
    try:
        with open(osp.join(cache_root(), 'last-build-seconds')) as f:
            return max(1, round(float(f.read())))
    except (OSError, ValueError):
        return TYPICAL_BUILD_SECONDS


def _record(seconds: float) -> None:
    path = osp.join(cache_root(), 'last-build-seconds')
    with contextlib.suppress(OSError):
        with open(f'{path}.{os.getpid()}', 'w') as f:
            f.write(f'{seconds:.1f}\n')
        os.replace(f'{path}.{os.getpid()}', path)


def _build(sources: Dict[str, bytes], build_dir: str, library: str) -> None:
    # Builds the kernels into `library` and loads them: in a fresh private
    # folder (so ninja never sees old paths or times, and torch's own lock
    # file there is never waited on by anyone else), from a copy of exactly
    # the hashed sources; the finished library is renamed into place.
    ninja_dir, _ = _build_tools()
    from torch.utils.cpp_extension import load as load_extension

    work = tempfile.mkdtemp(prefix=f'build-{os.getpid()}-', dir=build_dir)
    try:
        csrc = osp.join(work, 'csrc')
        os.mkdir(csrc)
        for name, data in sources.items():
            with open(osp.join(csrc, name), 'wb') as f:
                f.write(data)
        flags, ldflags = list(CFLAGS), list(LDFLAGS)
        if sanitizer():
            flags, ldflags = flags + _ASAN, ldflags + _ASAN
        _say(f'compiling the C++ CPU kernels (first use, about '
             f'{_estimate()} s) into {build_dir}')
        start = time.monotonic()
        path = os.environ.get('PATH')
        os.environ['PATH'] = ninja_dir + os.pathsep + (path or '')
        try:
            built = load_extension(
                name=NAME,
                sources=sorted(
                    osp.join(csrc, name) for name in sources
                    if name.endswith('.cpp')),
                extra_cflags=flags,
                extra_ldflags=ldflags,
                build_directory=work,
                is_python_module=False,
                verbose=False,
            )
        except BaseException:
            _say(f'compiling the C++ CPU kernels failed after '
                 f'{time.monotonic() - start:.0f} s')
            raise
        finally:
            if path is None:
                del os.environ['PATH']
            else:
                os.environ['PATH'] = path
        os.replace(built, library)  # Loaded already, from `built`.
        _state['path'] = library
        seconds = time.monotonic() - start
        _say(f'compiled the C++ CPU kernels in {seconds:.1f} s')
        _record(seconds)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _load_library() -> None:
    sources = _sources()
    build_dir = cache_dir(sources)
    library = osp.join(build_dir, f'{NAME}.so')
    if not osp.exists(library):
        os.makedirs(build_dir, exist_ok=True)
        with _build_lock(build_dir) as locked:
            if not osp.exists(library):
                if locked:  # The folders of killed builds, locks and all.
                    for old in glob.glob(osp.join(build_dir, 'build-*')):
                        shutil.rmtree(old, ignore_errors=True)
                _build(sources, build_dir, library)
                return
    torch.ops.load_library(library)
    _state['path'] = library


def empty_cache() -> int:
    r"""Unmaps the CPU buffers of 8 MiB and more that the C++ kernels keep
    for reuse once freed (at most 8 blocks; see the design page) and returns
    their bytes, 0 where the kernels are not loaded. As
    :func:`torch.cuda.empty_cache`, it frees no tensor still in use."""
    if not _state['loaded']:
        return 0
    if _state['empty_cache'] is None:  # The loaded library, not a copy.
        fn = ctypes.CDLL(_state['path']).pyg_gat_ext_empty_cache
        fn.restype = ctypes.c_int64
        _state['empty_cache'] = fn
    return int(_state['empty_cache']())


def load() -> bool:
    r"""Builds (once) and loads the C++ kernels; returns whether they are
    available. Thread-safe; a failure is remembered, not retried."""
    if _state['tried']:
        return _state['loaded']
    with _lock:
        if _state['tried']:
            return _state['loaded']
        try:
            _load_library()
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
