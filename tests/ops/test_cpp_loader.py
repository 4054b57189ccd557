r"""The lazy C++ loader: a failed build falls back to the reference with
one warning (naming what to install), or raises under
PYG_GAT_EXT_REQUIRE_KERNELS=1; the cache is keyed by the sources' content;
builds are serialised by a lock that a killed build cannot leave stale."""
import fcntl
import glob
import os
import os.path as osp
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
import torch.utils.cpp_extension

import pyg_gat_ext
from pyg_gat_ext.ops import _cpp, kernel_backend
from tests.conftest import backend_or_skip

CPU = torch.device('cpu')


@pytest.fixture
def fresh_loader(monkeypatch, tmp_path):
    r"""A loader that has not tried yet, with an empty cache."""
    monkeypatch.setattr(_cpp, '_state', {
        'tried': False,
        'loaded': False,
        'error': None
    })
    monkeypatch.setenv('PYG_GAT_EXT_CACHE', str(tmp_path / 'cache'))
    monkeypatch.delenv('PYG_GAT_EXT_REQUIRE_KERNELS', raising=False)
    return monkeypatch


@pytest.fixture
def failing_build(fresh_loader):
    r"""A fresh loader whose build fails as without a compiler."""
    def load(**kwargs):
        raise RuntimeError('c++: command not found')

    fresh_loader.setattr(torch.utils.cpp_extension, 'load', load)
    return fresh_loader


_FALLBACK = r'''
import warnings
import torch
from torch_geometric.utils import softmax
from pyg_gat_ext.ops import kernel_backend, segment_softmax
src, index = torch.randn(10, 2), torch.randint(0, 3, (10, ))
with warnings.catch_warnings(record=True) as rec:
    warnings.simplefilter('always')
    assert kernel_backend(torch.device('cpu')) == 'reference'
    out = segment_softmax(src, index, num_nodes=3)
    assert kernel_backend(torch.device('cpu')) == 'reference'
torch.testing.assert_close(out, softmax(src, index, num_nodes=3))
dump = torch._C._dispatch_dump('pyg_gat_ext::segment_softmax')
# The reference ran: no CPU kernel was registered.
assert not any(l.startswith('CPU:') for l in dump.splitlines()), dump
print(len(rec), rec[0].message)
'''


def test_failed_build_falls_back_with_one_warning(tmp_path):
    # In a fresh process: once loaded, the C++ kernels stay registered.
    env = dict(os.environ, CXX='/nonexistent/c++',
               PYG_GAT_EXT_CACHE=str(tmp_path / 'cache'))
    env.pop('PYG_GAT_EXT_REQUIRE_KERNELS', None)
    child = subprocess.run([sys.executable, '-c', _FALLBACK], env=env,
                           capture_output=True, text=True, timeout=300)
    assert child.returncode == 0, child.stderr
    count, message = child.stdout.split(' ', 1)
    assert count == '1'  # Warned once, the failure is remembered.
    assert 'falling back to the pure-PyTorch reference' in message
    assert '/nonexistent/c++' in message


def test_backend_variable_forces_an_implementation():
    # PYG_GAT_EXT_BACKEND=reference: the reference runs, not the kernels.
    code = (
        'import torch\n'
        'from pyg_gat_ext.ops import _reference, kernel_backend\n'
        'from pyg_gat_ext.ops import segment_softmax\n'
        'calls = []\n'
        'real = _reference.segment_softmax\n'
        '_reference.segment_softmax = lambda *a: calls.append(1) or real(*a)\n'
        'segment_softmax(torch.randn(6), torch.tensor([0, 0, 1, 1, 2, 2]))\n'
        "print(kernel_backend(torch.device('cpu')), len(calls))\n")
    env = dict(os.environ, PYG_GAT_EXT_BACKEND='reference')
    child = subprocess.run([sys.executable, '-c', code], env=env,
                           capture_output=True, text=True, timeout=300)
    assert child.returncode == 0, child.stderr
    assert child.stdout.split() == ['reference', '1']
    env['PYG_GAT_EXT_BACKEND'] = 'fast'
    child = subprocess.run([sys.executable, '-c', code], env=env,
                           capture_output=True, text=True, timeout=300)
    assert "PYG_GAT_EXT_BACKEND must be one of" in child.stderr


def test_cpu_kernels_are_registered_from_the_cpp_library():
    # The dispatcher itself routes CPU calls to the C++ file's kernels.
    backend_or_skip('cpp', CPU)
    from pyg_gat_ext.ops._library import SCHEMAS
    for name in SCHEMAS:
        dump = torch._C._dispatch_dump(f'pyg_gat_ext::{name}')
        cpu = [line for line in dump.splitlines() if line.startswith('CPU:')]
        assert len(cpu) == 1 and 'csrc/library.cpp' in cpu[0], dump
        assert 'CompositeExplicitAutograd[alias]: registered at' in dump
        assert '_library.py' in dump  # The schema and the reference.


def test_failed_build_is_an_error_when_kernels_are_required(failing_build):
    failing_build.setenv('PYG_GAT_EXT_REQUIRE_KERNELS', '1')
    with pytest.raises(RuntimeError, match='PYG_GAT_EXT_REQUIRE_KERNELS=1 '
                       'forbids the fallback'):
        kernel_backend(CPU)


def test_missing_ninja_is_named(fresh_loader, tmp_path):
    compiler = shutil.which(os.environ.get('CXX', 'c++'))
    if compiler is None:
        pytest.skip('no C++ compiler')
    empty = tmp_path / 'empty'
    empty.mkdir()
    # No ninja on PATH, nor as the `ninja` package, nor next to Python.
    fresh_loader.setenv('PATH', str(empty))
    fresh_loader.setenv('CXX', compiler)
    fresh_loader.setitem(sys.modules, 'ninja', None)
    fresh_loader.setattr(_cpp.sysconfig, 'get_path', lambda *a, **k: '')
    fresh_loader.setattr(_cpp.sys, 'executable', str(empty / 'python'))
    with pytest.warns(RuntimeWarning) as rec:
        assert not _cpp.load()
    assert len(rec) == 1
    message = str(rec[0].message)
    assert 'needs ninja (pip install ninja), which is missing' in message
    assert 'compiler' not in message


def test_missing_compiler_is_named(fresh_loader):
    if _cpp._ninja_dir() is None:
        pytest.skip('no ninja')
    fresh_loader.setenv('CXX', '/nonexistent/c++')
    with pytest.warns(RuntimeWarning, match='needs a C\\+\\+ compiler such '
                      'as g\\+\\+ \\(Debian/Ubuntu: apt-get install g\\+\\+;'
                      " .*'/nonexistent/c\\+\\+' is not found\\), which is "
                      'missing') as rec:
        assert not _cpp.load()
    assert 'ninja' not in str(rec[0].message)


def test_cache_dir_is_keyed_by_source_content_torch_and_cpu(
        monkeypatch, tmp_path):
    path = _cpp.cache_dir()
    assert torch.__version__.replace('+', '_') in path and '-cpu-' in path
    assert path.startswith(_cpp.cache_root())
    # Another install of the same sources (path, file times): same folder.
    copy = tmp_path / 'csrc'
    shutil.copytree(_cpp.CSRC, copy)
    for name in os.listdir(copy):
        os.utime(copy / name, (1e9, 1e9))
    monkeypatch.setattr(_cpp, 'CSRC', str(copy))
    assert _cpp.cache_dir() == path
    # A changed header is another build.
    with open(copy / 'common.h', 'a') as f:
        f.write('\n')
    assert _cpp.cache_dir() != path


def test_triton_that_does_not_import_falls_back(monkeypatch):
    import builtins

    from pyg_gat_ext.ops import _library
    monkeypatch.setattr(_library, '_triton_state', {
        'tried': False,
        'module': None
    })
    monkeypatch.setattr(_library, 'HAS_TRITON', True)
    real_import = builtins.__import__

    def broken_import(name, *args, **kwargs):
        if name == 'pyg_gat_ext.ops.triton' or (name == 'pyg_gat_ext.ops'
                                                 and 'triton' in str(args)):
            raise ImportError('libcuda.so.1: cannot open shared object')
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, '__import__', broken_import)
    with pytest.warns(RuntimeWarning, match='does not import'):
        assert kernel_backend(torch.device('cuda')) == 'reference'
    assert kernel_backend(torch.device('cuda')) == 'reference'  # Remembered.


def test_sanitizer_build_has_its_own_cache(monkeypatch):
    monkeypatch.delenv('PYG_GAT_EXT_SANITIZE', raising=False)
    plain = _cpp.cache_dir()
    monkeypatch.setenv('PYG_GAT_EXT_SANITIZE', 'address')
    assert _cpp.cache_dir() == plain + '-address'
    monkeypatch.setenv('PYG_GAT_EXT_SANITIZE', 'thread')
    with pytest.raises(ValueError, match='PYG_GAT_EXT_SANITIZE'):
        _cpp.cache_dir()


def test_lock_file_of_a_dead_process_does_not_block(tmp_path):
    # What a build killed by SIGKILL leaves: the file, naming its holder,
    # but no lock (the kernel released it with the process).
    (tmp_path / 'build.lock').write_text('999999999 somehost 0\n')
    start = time.monotonic()
    with _cpp._build_lock(str(tmp_path)) as locked:
        assert locked
        pid = (tmp_path / 'build.lock').read_text().split()[0]
        assert pid == str(os.getpid())
    assert time.monotonic() - start < 1
    assert (tmp_path / 'build.lock').read_text() == ''


def test_waiter_names_the_holder_and_gives_up(fresh_loader, capsys):
    fresh_loader.setenv('PYG_GAT_EXT_LOCK_TIMEOUT', '1')
    fresh_loader.setenv('PYG_GAT_EXT_REQUIRE_KERNELS', '1')
    build_dir = _cpp.cache_dir()
    os.makedirs(build_dir)
    # Another open file description: locked against this process too.
    with open(osp.join(build_dir, 'build.lock'), 'w') as holder:
        fcntl.flock(holder, fcntl.LOCK_EX)
        holder.write(f'4242 somehost {time.time() - 90:.0f}\n')
        holder.flush()
        with pytest.raises(RuntimeError, match='gave up after 1 s waiting '
                           'for process 4242 on somehost \\(building since '
                           '.*, 9\\d s ago\\)'):
            _cpp.load()
    assert 'waiting for process 4242 on somehost' in capsys.readouterr().err


# Real builds, in other processes: one killed by SIGKILL while it compiles,
# then one that builds, and one from another install that loads the cache.

_CHILD = r'''
import torch
from pyg_gat_ext.ops import _cpp
assert _cpp.CSRC.startswith(__import__('os').getcwd()), _cpp.CSRC
print(_cpp.load(), _cpp.cache_dir())
print(torch.ops.pyg_gat_ext.segment_csr(torch.tensor([1, 0, 1]), 2))
print(torch._C._dispatch_dump('pyg_gat_ext::segment_csr'))
'''

START = 'compiling the C++ CPU kernels'
END = 'compiled the C++ CPU kernels in'


def _install(root):
    # A copy of the package, as another install of the same sources.
    package = osp.dirname(pyg_gat_ext.__file__)
    shutil.copytree(package, osp.join(root, 'pyg_gat_ext'),
                    ignore=shutil.ignore_patterns('__pycache__'))
    return str(root)


def _kill_session(sid):
    # SIGKILL to every process of a session: the build's Python, ninja and
    # the compilers (which ninja puts into process groups of their own).
    for stat in glob.glob('/proc/[0-9]*/stat'):
        try:
            with open(stat) as f:
                fields = f.read().rsplit(')', 1)[1].split()
            if int(fields[3]) == sid:
                os.kill(int(stat.split('/')[2]), signal.SIGKILL)
        except (OSError, IndexError, ValueError):
            pass  # Gone meanwhile.


def _child(root, env, **kwargs):
    return subprocess.Popen([sys.executable, '-c', _CHILD], cwd=root,
                            env=dict(env, PYTHONPATH=root), text=True,
                            **kwargs)


@pytest.fixture(scope='module')
def killed_then_built(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('loader')
    cache = str(tmp / 'cache')
    first, second = _install(tmp / 'first'), _install(tmp / 'second')
    for path in glob.glob(osp.join(second, 'pyg_gat_ext', 'csrc', '*')):
        os.utime(path, (1e9, 1e9))  # Other file times.
    env = dict(os.environ, PYG_GAT_EXT_CACHE=cache,
               PYG_GAT_EXT_REQUIRE_KERNELS='1')

    # Kill (with its compilers) a build that has started compiling.
    killed = _child(first, env, stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE, start_new_session=True)
    try:
        for line in killed.stderr:
            if START in line:
                break
        else:
            pytest.fail('the build did not start')
        deadline = time.monotonic() + 120
        while not glob.glob(osp.join(cache, '*', 'build-*', 'lock')):
            assert time.monotonic() < deadline, 'torch did not start'
            time.sleep(0.1)
        time.sleep(1)
    finally:
        _kill_session(killed.pid)
        killed.wait()
        killed.stderr.close()
    # What the old loader then waited on forever: torch's lock file.
    stale = glob.glob(osp.join(cache, '*', 'build-*', 'lock'))

    rebuilt = _child(first, env, stdout=subprocess.PIPE,
                     stderr=subprocess.PIPE)
    out, err = rebuilt.communicate(timeout=1200)
    return dict(cache=cache, second=second, env=env, stale=stale,
                returncode=rebuilt.returncode, out=out, err=err)


@pytest.mark.slow
def test_build_killed_by_sigkill_does_not_block_the_next(killed_then_built):
    r = killed_then_built
    assert r['stale']
    assert r['returncode'] == 0, r['err']
    assert r['out'].startswith('True ')
    assert 'tensor([0, 1, 3])' in r['out']
    assert START in r['err'] and END in r['err']
    assert 'waiting for' not in r['err']  # The lock died with its holder.
    assert not glob.glob(osp.join(r['cache'], '*', 'build-*'))


@pytest.mark.slow
def test_another_install_of_the_same_sources_loads_the_build(
        killed_then_built):
    r = killed_then_built
    assert r['returncode'] == 0, r['err']
    child = _child(r['second'], r['env'], stdout=subprocess.PIPE,
                   stderr=subprocess.PIPE)
    out, err = child.communicate(timeout=300)
    assert child.returncode == 0, err
    assert out.splitlines()[0] == r['out'].splitlines()[0]  # Same folder.
    assert 'tensor([0, 1, 3])' in out and 'csrc/library.cpp' in out
    assert 'pyg_gat_ext:' not in err  # Neither built nor waited.
