import csv

import pytest
import torch

import pyg_gat_ext
from tests.helpers import load_script

MODES = ['ours', 'pyg', 'pyg_layerwise', 'ours_layerwise']
#: Tiny graphs; batches of 512 give the layer-wise modes several batches.
TINY = ['--nodes', '2000', '4000', '--batch-size', '512']


@pytest.fixture(scope='module')
def inference():
    return load_script('benchmarks', 'train', 'inference.py')


@pytest.fixture(autouse=True)
def _unpatched():
    yield
    pyg_gat_ext.unpatch()


def _read(path):
    with open(path, newline='') as f:
        return list(csv.DictReader(f))


def test_all_modes_in_process(inference, tmp_path):
    path = str(tmp_path / 'inference.csv')
    rows, diffs = inference.main(TINY + ['--in-process', '--csv', path])
    csv_rows = _read(path)
    assert [(int(r['nodes']), r['mode']) for r in csv_rows] == [
        (n, m) for n in (2000, 4000) for m in MODES]
    for r in csv_rows:
        assert r['status'] == 'ok'
        assert int(r['edges']) == 16 * int(r['nodes'])
        assert float(r['seconds']) >= 0 and float(r['peak_mib']) >= 0
        assert float(r['input_mib']) > 0
    # The agreement check ran on the smallest size, on every pair.
    assert len(diffs) == 4 and max(diffs.values()) <= 1e-5


def test_child_process(inference, tmp_path):
    # One mode through spawn(): the child's JSON line becomes the row.
    path = str(tmp_path / 'inference.csv')
    inference.main(['--nodes', '1000', '--modes', 'ours', '--csv', path])
    (row, ) = _read(path)
    assert row['mode'] == 'ours' and row['status'] == 'ok'
    assert float(row['process_peak_mib']) > float(row['peak_mib'])


def test_agreement_check_raises(inference):
    out = torch.randn(10, 16)
    outputs = {m: out.clone() for m in MODES}
    assert max(inference.check_agreement(outputs, 1e-4).values()) == 0
    outputs['pyg'] = out + 1e-3
    with pytest.raises(AssertionError, match='ours and pyg differ'):
        inference.check_agreement(outputs, 1e-4)
    outputs = {m: out.clone() for m in MODES}
    outputs['ours_layerwise'] = out + 5e-5  # Within 1e-4, not 1e-5.
    with pytest.raises(AssertionError, match='ours_layerwise and ours'):
        inference.check_agreement(outputs, 1e-4)


def test_oom_bookkeeping(inference, tmp_path):
    # A cap of ~100 KiB above what is mapped: the graph does not fit, every
    # mode is 'oom' at the first size and none runs at the second.
    path = str(tmp_path / 'inference.csv')
    rows, diffs = inference.main(TINY + [
        '--in-process', '--memory-limit-gib', '0.0001', '--csv', path])
    csv_rows = _read(path)
    assert [(r['nodes'], r['mode'], r['status']) for r in csv_rows] == [
        ('2000', m, 'oom') for m in MODES]
    assert diffs == {}
