r"""benchmarks/nn/gat_conv.py on a tiny graph, for both layers: every
column written, both layers timed, the fused op set against its bound
and against plain gathers."""
import csv

import pytest

from tests.helpers import load_script


@pytest.mark.parametrize('layer', ['gat', 'gatv2'])
def test_layer_benchmark_writes_its_rows(layer, tmp_path):
    bench = load_script('benchmarks', 'nn', 'gat_conv.py')
    path = tmp_path / f'{layer}.csv'
    bench.main(['--layer', layer, '--nodes', '300', '--edges', '3000',
                '--in-channels', '16', '--configs', '2x4:power_law',
                '--reps', '2', '--csv', str(path)])
    with open(path, newline='') as f:
        rows = list(csv.DictReader(f))
    assert [(r['heads'], r['graph'], r['mode']) for r in rows] == [
        ('2', 'power_law', m) for m in ('forward', 'forward+backward')]
    for r in rows:
        assert r['layer'] == layer
        for key in ('ours_ms', 'pyg_ms', 'speedup', 'kernel_ms',
                    'gather_ms', 'kernel_vs_gather'):
            assert float(r[key]) > 0, key
        # (Rounded to 0 on a graph this small.)
        assert float(r['fraction_of_bound']) >= 0
