import os
import os.path as osp
import shutil

import pytest
import torch

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
