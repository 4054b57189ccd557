import os
import os.path as osp
import re
import runpy
import sys

import pytest
import torch

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


def _fail_with_short_error(cora, argv, capsys):
    # The example's error for missing data: exit code 2, a few lines on
    # stderr naming --root, $PYG_GAT_EXT_DATA and where the files go.
    with pytest.raises(SystemExit) as e:
        cora['main'](argv)
    assert e.value.code == 2
    out, err = capsys.readouterr()
    assert out == ''
    assert 'error: ' in err and 'Traceback' not in err
    assert len(err.splitlines()) <= 3
    assert '--root DIR or $PYG_GAT_EXT_DATA=DIR' in err
    assert ('DIR/Cora/raw/ind.cora.x, ind.cora.tx, ind.cora.allx, '
            'ind.cora.y, ind.cora.ty, ind.cora.ally, ind.cora.graph, '
            'ind.cora.test.index.') in err
    return err


def test_cora_example_missing_root(tmp_path, capsys):
    cora = runpy.run_path(osp.join(EXAMPLES, 'cora.py'))
    err = _fail_with_short_error(cora, ['--root', str(tmp_path)], capsys)
    assert f"No raw Planetoid files for 'Cora' in {tmp_path}" in err
    assert os.listdir(tmp_path) == []

    raw = tmp_path / 'Cora' / 'raw'
    raw.mkdir(parents=True)
    (raw / 'ind.cora.x').touch()
    err = _fail_with_short_error(cora, ['--root', str(tmp_path)], capsys)
    assert 'missing: ind.cora.tx, ind.cora.allx,' in err
    assert os.listdir(raw) == ['ind.cora.x']


def test_cora_example_no_root_offline(tmp_path, monkeypatch, capsys):
    # No --root, no $PYG_GAT_EXT_DATA: PyG's download into its default
    # folder, which fails offline (here: a download that writes part of a
    # file, then fails). The error is short and the folders the download
    # created are gone.
    from torch_geometric.io import fs
    urls = []

    def cp(url, folder, *args, **kwargs):  # What Planetoid downloads with.
        urls.append(url)
        with open(osp.join(folder, osp.basename(url)), 'w') as f:
            f.write('partial')
        raise OSError('Cannot connect to host github.com:443\n(details)')

    monkeypatch.setattr(fs, 'cp', cp)
    monkeypatch.delenv('PYG_GAT_EXT_DATA', raising=False)
    monkeypatch.delenv('PYG_HOME', raising=False)
    monkeypatch.setenv('HOME', str(tmp_path))
    cora = runpy.run_path(osp.join(EXAMPLES, 'cora.py'))
    assert cora['default_root']().startswith(str(tmp_path))
    err = _fail_with_short_error(cora, ['--epochs', '1'], capsys)
    assert urls  # The online path is PyG's own download.
    assert "Could not download Planetoid 'Cora'" in err
    assert 'Cannot connect to host github.com:443)' in err
    assert os.listdir(tmp_path) == []


def test_cora_example_help_is_plain_text(capsys):
    # The description is the module docstring: no Sphinx/reST markup.
    cora = runpy.run_path(osp.join(EXAMPLES, 'cora.py'))
    with pytest.raises(SystemExit) as e:
        cora['main'](['--help'])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert 'python examples/cora.py --root ../shared/data/Planetoid' in out
    assert '--compare' in out and '--no-progress' in out
    assert '``' not in out and '::' not in out
    assert not re.search(r':[a-z]+:`', out), out


def test_cora_example_compare(planetoid_root, capsys):
    cora = runpy.run_path(osp.join(EXAMPLES, 'cora.py'))
    results = cora['main'](['--root', planetoid_root, '--epochs', '3',
                            '--compare', '--no-progress'])
    assert list(results) == ['ext', 'pyg']
    for runs in results.values():
        assert len(runs) == 1 and 0.0 <= runs[0].acc <= 1.0
        assert runs[0].ms_per_epoch > 0 and runs[0].epochs == 3
    if sys.platform.startswith('linux'):  # Peak RSS through /proc.
        assert all(runs[0].peak_mib > 0 for runs in results.values())
    captured = capsys.readouterr()
    out = captured.out
    table = out[out.index('impl '):].splitlines()
    assert table[2].startswith('ext   pyg_gat_ext.GATConv')
    assert table[3].startswith('pyg   torch_geometric.nn.GATConv')
    assert 'as fast per epoch as PyG' in table[4]
    # No progress bar when stderr is not a terminal.
    assert 'seed 0' not in captured.err


def test_cora_example_plot(planetoid_root, tmp_path):
    pytest.importorskip('matplotlib')
    pytest.importorskip('networkx')
    cora = runpy.run_path(osp.join(EXAMPLES, 'cora.py'))
    out_dir = tmp_path / 'plots'
    cora['main'](['--root', planetoid_root, '--epochs', '2', '--plot',
                  str(out_dir), '--node', '5'])
    names = sorted(os.listdir(out_dir))
    assert names == ['attention_node5.png', 'entropy_conv1.png',
                     'entropy_conv2.png']
    for name in names:
        with open(out_dir / name, 'rb') as f:
            assert f.read(8) == b'\x89PNG\r\n\x1a\n'


def test_progress_bar_fallback_without_tqdm(monkeypatch, capsys):
    cora = runpy.run_path(osp.join(EXAMPLES, 'cora.py'))
    monkeypatch.setitem(sys.modules, 'tqdm', None)  # Import fails.
    monkeypatch.setattr(sys.stderr, 'isatty', lambda: True, raising=False)
    bar = cora['progress_bar'](3, 'ext seed 0')
    bar.set_postfix_str('loss 1.0')
    bar.update()
    bar.write('message')
    bar.close()
    out, err = capsys.readouterr()
    assert out == 'message\n'
    assert 'ext seed 0: 1/3 loss 1.0' in err
    # Off when asked, and when stderr is not a terminal.
    for enabled, tty in [(False, True), (True, False)]:
        monkeypatch.setattr(sys.stderr, 'isatty', lambda t=tty: t,
                            raising=False)
        bar = cora['progress_bar'](3, 'ext seed 0', enabled)
        bar.update()
        bar.close()
        assert capsys.readouterr().err == ''


def test_cora_example_bad_arguments(capsys):
    cora = runpy.run_path(osp.join(EXAMPLES, 'cora.py'))
    with pytest.raises(SystemExit):
        cora['main'](['--epochs', '0'])
    assert 'at least 1' in capsys.readouterr().err


def test_lockstep_training_matches_training_alone(planetoid_root):
    # --compare trains both in lockstep, each on its own random stream:
    # the model trained next to PyG's is the one trained alone.
    cora = runpy.run_path(osp.join(EXAMPLES, 'cora.py'))
    dataset = cora['load_dataset']('Cora', planetoid_root)
    data = dataset[0]
    alone = cora['run'](data, dataset.num_classes, 'ext', seed=1, epochs=4,
                        progress=False)
    trainers = [cora['Trainer'](data, dataset.num_classes, impl, seed=1)
                for impl in ['pyg', 'ext']]
    _, ext = cora['train'](trainers, epochs=4, progress=False)
    assert ext.epochs == alone.epochs == 4
    assert ext.acc == alone.acc
    expected = alone.model.state_dict()
    for name, value in ext.model.state_dict().items():
        torch.testing.assert_close(value, expected[name])


def test_paired_ms_uses_the_epochs_both_trained():
    cora = runpy.run_path(osp.join(EXAMPLES, 'cora.py'))
    Result = cora['Result']
    # PyG stops after 3 epochs; ours runs alone for 2 more, slower.
    ext = Result(0.8, 0.0, None, 5, None, (0.1, 0.1, 0.1, 0.9, 0.9))
    pyg = Result(0.8, 0.0, None, 3, None, (0.2, 0.2, 0.2))
    ms = cora['paired_ms']({'ext': [ext], 'pyg': [pyg]})
    assert ms == {'ext': [100.0], 'pyg': [200.0]}
    table = cora['summary_table']({'ext': [ext], 'pyg': [pyg]})
    assert '100.0' in table and 'n/a' in table
