import os.path as osp
import runpy

import pytest

BENCHMARKS = osp.join(osp.dirname(__file__), '..', 'benchmarks')
RESULTS = osp.join(BENCHMARKS, 'results')


@pytest.fixture
def plot_script():
    pytest.importorskip('matplotlib')
    return runpy.run_path(osp.join(BENCHMARKS, 'plot.py'))


def test_plot_segment_softmax_csv(plot_script, tmp_path):
    out = tmp_path / 'segment_softmax.png'
    plot_script['main']([osp.join(RESULTS, 'segment_softmax_cpu.csv'),
                         '--where', 'provider=ours', '--out', str(out)])
    assert out.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'

    rows = plot_script['select'](plot_script['read_rows'](
        osp.join(RESULTS, 'segment_softmax_cpu.csv')), ['provider=ours'])
    fig = plot_script['plot'](rows, 'entries', ['speedup_vs_pyg'],
                              ['kind', 'heads'], 'mode')
    assert [ax.get_title() for ax in fig.axes] == [
        'mode=forward', 'mode=forward_backward']
    # Uniform and power-law segments, 1 and 8 heads; and the PyG line.
    assert len(fig.axes[0].get_lines()) == 4 + 1
    assert fig.axes[0].get_xscale() == 'log'


def test_plot_one_row_per_configuration(plot_script, tmp_path):
    # The layout of a GATConv benchmark: ours and PyG side by side in a row.
    path = tmp_path / 'gat_conv_cpu.csv'
    path.write_text(
        'nodes,heads,mode,ours_ms,pyg_ms,speedup,memory_ratio\n'
        '1000,1,forward,1.0,2.0,2.0,0.5\n'
        '1000,8,forward,2.0,5.0,2.5,0.4\n'
        '100000,1,forward,10.0,30.0,3.0,0.5\n'
        '100000,8,forward,20.0,70.0,3.5,0.3\n')
    out = plot_script['main']([str(path), '--x', 'nodes', '--y', 'speedup',
                               'memory_ratio', '--lines', 'heads'])
    assert out == str(tmp_path / 'gat_conv_cpu.png')
    assert osp.getsize(out) > 1000


def test_plot_refuses_ambiguous_or_unknown_columns(plot_script):
    rows = plot_script['read_rows'](osp.join(RESULTS,
                                             'segment_softmax_cpu.csv'))
    # Three providers per point: which one?
    with pytest.raises(ValueError, match='several rows'):
        plot_script['plot'](rows, 'entries', ['speedup_vs_pyg'],
                            ['kind', 'heads'], 'mode')
    with pytest.raises(ValueError, match=r"no column\(s\) \['nodes'\]"):
        plot_script['plot'](rows, 'nodes', ['speedup_vs_pyg'])
    with pytest.raises(ValueError, match='no rows with provider=mine'):
        plot_script['select'](rows, ['provider=mine'])
    with pytest.raises(ValueError, match='column=value'):
        plot_script['select'](rows, ['provider'])


def test_plot_text_x_column_gives_grouped_bars(plot_script, tmp_path):
    path = tmp_path / 'modes.csv'
    path.write_text('graph,mode,speedup\n'
                    'uniform,forward,7.4\n'
                    'uniform,forward+backward,3.9\n'
                    'power_law,forward,5.1\n'
                    'power_law,forward+backward,8.0\n')
    rows = plot_script['read_rows'](str(path))
    fig = plot_script['plot'](rows, 'mode', ['speedup'], ['graph'])
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == [
        'forward', 'forward+backward']
    assert len(ax.patches) == 4  # Two bars per mode.
    assert sorted(p.get_height() for p in ax.patches) == [3.9, 5.1, 7.4, 8.0]
