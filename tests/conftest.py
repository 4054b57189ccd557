import os
import os.path as osp
import shutil

import pytest
import torch

# Without a GPU, Triton kernels run in its interpreter on CPU tensors. This
# must be set before the first Triton kernel is defined (lazily, on use).
if not torch.cuda.is_available():
    os.environ.setdefault('TRITON_INTERPRET', '1')

from pyg_gat_ext.ops import _cpp, _library, use_backend  # noqa: E402

#: Absolute and relative tolerances against PyG, per dtype.
TOL = {
    torch.float32: dict(atol=1e-5, rtol=1e-5),
    torch.float64: dict(atol=1e-10, rtol=1e-10),
}

#: Devices every device-parametrised test runs on; CUDA cases are skipped
#: cleanly without a GPU.
DEVICES = [
    'cpu',
    pytest.param(
        'cuda', marks=pytest.mark.skipif(not torch.cuda.is_available(),
                                         reason='CUDA is not available')),
]

#: The folder holding the raw Planetoid files that tests may copy from.
SHARED_DATA = os.environ.get(
    'PYG_GAT_EXT_DATA',
    osp.join(osp.dirname(__file__), '..', '..', 'shared', 'data',
             'Planetoid'))


@pytest.fixture(params=DEVICES)
def device(request):
    return torch.device(request.param)


@pytest.fixture
def planetoid_root(tmp_path):
    r"""A temporary Planetoid root holding a copy of the raw Cora files, so
    that nothing is written next to the shared originals."""
    src = osp.join(SHARED_DATA, 'Cora', 'raw')
    if not osp.isdir(src):
        pytest.skip(f'raw Planetoid Cora files not found in {src}')
    shutil.copytree(src, tmp_path / 'Cora' / 'raw')
    return str(tmp_path)


#: The implementations of every op: the pure-PyTorch reference, the C++ CPU
#: kernels, and the Triton kernels (CUDA, or CPU under the interpreter).
BACKENDS = ['reference', 'cpp', 'triton']


def backend_or_skip(name, device):
    r"""Skips a backend that cannot run here, unless
    ``PYG_GAT_EXT_REQUIRE_KERNELS=1`` (as CI sets), where that is an
    error."""
    reason = None
    if name == 'cpp' and device.type != 'cpu':
        pytest.skip('the C++ kernels run on CPU')
    if name == 'cpp' and not _cpp.load():
        reason = f'C++ kernels unavailable: {_cpp._state["error"]}'
    if name == 'triton' and not _library.HAS_TRITON:
        reason = 'triton is not installed'
    if name == 'triton' and device.type == 'cpu' and os.environ.get(
            'TRITON_INTERPRET') != '1':
        pytest.skip('Triton runs on CPU only under TRITON_INTERPRET=1')
    if reason is not None:
        if _cpp.require_kernels():
            pytest.fail(reason)
        pytest.skip(reason)


@pytest.fixture(params=BACKENDS)
def backend(request, device):
    r"""Runs the test with each implementation forced in turn."""
    backend_or_skip(request.param, device)
    with use_backend(request.param):
        yield request.param


@pytest.fixture(params=['fused', 'unfused'])
def path(request):
    r"""Forces :class:`pyg_gat_ext.GATConv` and
    :class:`pyg_gat_ext.GATv2Conv` onto the fused kernel or onto the
    :class:`MessagePassing` path for every layer."""
    from pyg_gat_ext import GATConv, GATv2Conv
    previous = GATConv.fused, GATv2Conv.fused
    GATConv.fused = GATv2Conv.fused = request.param == 'fused'
    try:
        yield request.param
    finally:
        GATConv.fused, GATv2Conv.fused = previous
