r"""The lazy C++ loader: a failed build falls back to the reference with
one warning, or raises under PYG_GAT_EXT_REQUIRE_KERNELS=1."""
import pytest
import torch
import torch.utils.cpp_extension
from torch_geometric.utils import softmax as pyg_softmax

from pyg_gat_ext.ops import _cpp, kernel_backend, segment_softmax

CPU = torch.device('cpu')


@pytest.fixture
def failing_build(monkeypatch):
    r"""A fresh loader whose build fails as without a compiler."""
    monkeypatch.setattr(_cpp, '_state', {
        'tried': False,
        'loaded': False,
        'error': None
    })

    def load(**kwargs):
        raise RuntimeError('c++: command not found')

    monkeypatch.setattr(torch.utils.cpp_extension, 'load', load)
    return monkeypatch


def test_failed_build_falls_back_with_one_warning(failing_build):
    failing_build.delenv('PYG_GAT_EXT_REQUIRE_KERNELS', raising=False)
    src, index = torch.randn(10, 2), torch.randint(0, 3, (10, ))
    with pytest.warns(RuntimeWarning, match='falling back to the pure-Py'
                      'Torch reference.*c\\+\\+: command not found') as rec:
        assert kernel_backend(CPU) == 'reference'
        out = segment_softmax(src, index, num_nodes=3)
        assert kernel_backend(CPU) == 'reference'
    assert len(rec) == 1  # Warned once, the failure is remembered.
    torch.testing.assert_close(out, pyg_softmax(src, index, num_nodes=3))


def test_failed_build_is_an_error_when_kernels_are_required(failing_build):
    failing_build.setenv('PYG_GAT_EXT_REQUIRE_KERNELS', '1')
    with pytest.raises(RuntimeError, match='PYG_GAT_EXT_REQUIRE_KERNELS=1 '
                       'forbids the fallback'):
        kernel_backend(CPU)


def test_cache_dir_is_keyed_by_torch_and_cpu():
    path = _cpp.cache_dir()
    assert torch.__version__.replace('+', '_') in path and '-cpu-' in path


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
