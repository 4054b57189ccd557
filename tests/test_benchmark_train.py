import csv

import pytest
import torch

import pyg_gat_ext
from pyg_gat_ext.nn import functional
from tests.helpers import load_script

#: Tiny mini-batches. The compile providers stay out: compiling takes
#: minutes on a small CPU (the smoke run of the script covers them).
QUICK = ['--quick', '--providers', 'pyg', 'ours', '--nodes', '2000',
         '--edges', '20000', '--batch-size', '64']


@pytest.fixture(scope='module')
def e2e():
    return load_script('benchmarks', 'train', 'e2e.py')


@pytest.fixture(autouse=True)
def _unpatched():
    yield
    pyg_gat_ext.unpatch()


def _check_csv(path, workloads):
    with open(path, newline='') as f:
        rows = list(csv.DictReader(f))
    keys = [(r['workload'], r['phase'], r['provider']) for r in rows]
    assert sorted(keys) == sorted((w, phase, p) for w in workloads
                                  for phase in ('train', 'infer')
                                  for p in ('pyg', 'ours'))
    for r in rows:
        assert r['status'] == 'ok'
        assert float(r['median_ms']) > 0 and float(r['min_ms']) > 0
        assert int(r['reps']) == 2
        assert float(r['compile_s']) >= 0
        assert r['torch'] == torch.__version__ and int(r['threads']) >= 1
        if r['provider'] == 'pyg':
            assert float(r['speedup_vs_pyg']) == 1.0
        if r['phase'] == 'infer':  # Ours' first output against PyG's.
            assert float(r['max_abs_diff']) <= 1e-5
    # torch's dropout and PyG's GATConv are bound again afterwards.
    assert not pyg_gat_ext.is_patched()
    assert torch.nn.functional.dropout is functional.torch_dropout


def test_minibatch_workloads(e2e, tmp_path, capsys):
    path = str(tmp_path / 'train.csv')
    rows = e2e.main(QUICK + ['--workloads', 'minibatch', 'gat_model',
                             '--csv', path])
    assert len(rows) == 8
    _check_csv(path, ['minibatch', 'gat_model'])
    out = capsys.readouterr().out
    assert 'ours matches PyG in eval mode' in out and 'median ms' in out


def test_cora_workload(e2e, planetoid_root, tmp_path):
    # Skipped (by the fixture) where the raw Cora files are not found.
    path = str(tmp_path / 'train.csv')
    e2e.main(QUICK + ['--workloads', 'cora', '--root', planetoid_root,
                      '--csv', path])
    _check_csv(path, ['cora'])


def test_check_outputs_raises_on_mismatch(e2e):
    build, _ = e2e.model_factory('gat_model', 16, 4)
    torch.manual_seed(0)
    pyg, ours = build(False), build(True)
    ours.load_state_dict(pyg.state_dict())
    ei = torch.randint(0, 30, (2, 100))
    batch = e2e.Batch(torch.randn(30, 16), ei, None, None)
    assert e2e.check_outputs(pyg, ours, batch) <= 1e-5
    with torch.no_grad():
        ours.convs[0].att_src.add_(0.1)
    with pytest.raises(AssertionError, match='ours and PyG differ'):
        e2e.check_outputs(pyg, ours, batch)


def test_main_runs_the_check(e2e, monkeypatch, tmp_path):
    # A broken "ours" must stop the run before any timing.
    class Broken(pyg_gat_ext.GATConv):
        def forward(self, x, edge_index, *args, **kwargs):
            return super().forward(x, edge_index, *args, **kwargs) + 1e-3

    conv_class = e2e.conv_class
    monkeypatch.setattr(e2e, 'conv_class',
                        lambda ours: Broken if ours else conv_class(ours))
    with pytest.raises(AssertionError, match='ours and PyG differ'):
        e2e.main(QUICK + ['--workloads', 'minibatch', '--csv', ''])
    assert torch.nn.functional.dropout is functional.torch_dropout
