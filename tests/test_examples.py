import os
import os.path as osp
import runpy

import pytest

EXAMPLES = osp.join(osp.dirname(__file__), '..', 'examples')


def _listing(root):
    return sorted(osp.join(d, f) for d, _, fs in os.walk(root) for f in fs)


def test_cora_example_runs_offline_without_writing(planetoid_root, capsys):
    cora = runpy.run_path(osp.join(EXAMPLES, 'cora.py'))
    before = _listing(planetoid_root)
    accs = cora['main'](['--root', planetoid_root, '--epochs', '5',
                         '--seeds', '2'])
    assert len(accs) == 2 and all(0.0 <= a <= 1.0 for a in accs)
    assert 'test accuracy' in capsys.readouterr().out
    assert _listing(planetoid_root) == before  # No `processed/` written.


def test_cora_example_missing_root(tmp_path):
    cora = runpy.run_path(osp.join(EXAMPLES, 'cora.py'))
    with pytest.raises(FileNotFoundError, match='No raw Planetoid files'):
        cora['main'](['--root', str(tmp_path), '--epochs', '1'])
