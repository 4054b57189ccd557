import math
import os
import sys

import pytest
import torch
from torch_geometric.nn import GATConv as PyGGATConv

from pyg_gat_ext import GATConv
from pyg_gat_ext.visualize import (
    attention_entropy,
    plot_entropy_histograms,
    plot_neighbourhood,
    uniform_entropy,
)

# No display: networkx's drawing functions import pyplot.
os.environ.setdefault('MPLBACKEND', 'Agg')

PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'

# Node 2 has incoming edges from 0, 1 and itself, node 0 from 1, node 1
# from nobody, node 3 from 0 twice (a duplicate edge).
EDGE_INDEX = torch.tensor([[0, 1, 2, 1, 0, 0], [2, 2, 2, 0, 3, 3]])


def _head_axes(fig):
    # The colour bar is an axes too.
    return [ax for ax in fig.axes if ax.get_label() != '<colorbar>']


def _random_attention(num_nodes=20, num_edges=60, heads=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    edge_index = torch.randint(0, num_nodes, (2, num_edges), generator=g)
    conv = GATConv(4, 2, heads=heads).eval()
    x = torch.randn(num_nodes, 4, generator=g)
    _, (edge_index, alpha) = conv(x, edge_index,
                                  return_attention_weights=True)
    return edge_index, alpha


def test_attention_entropy_hand_computed():
    alpha = torch.tensor([
        [0.25, 1.0],  # 0 -> 2
        [0.75, 0.0],  # 1 -> 2
        [0.0, 0.0],  # 2 -> 2
        [1.0, 1.0],  # 1 -> 0
        [0.5, 0.9],  # 0 -> 3
        [0.5, 0.1],  # 0 -> 3
    ])
    out = attention_entropy(EDGE_INDEX, alpha)
    assert out.shape == (4, 2)
    h = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))  # 0.5623
    h3 = -(0.9 * math.log(0.9) + 0.1 * math.log(0.1))  # 0.3251
    expected = torch.tensor([[0.0, 0.0], [math.nan, math.nan], [h, 0.0],
                             [math.log(2), h3]])
    torch.testing.assert_close(out, expected, equal_nan=True)


def test_uniform_attention_gives_log_degree():
    degree = torch.bincount(EDGE_INDEX[1], minlength=4).float()
    alpha = (1 / degree[EDGE_INDEX[1]]).unsqueeze(-1).repeat(1, 3)
    expected = torch.tensor([0.0, math.nan, math.log(3), math.log(2)])
    torch.testing.assert_close(uniform_entropy(EDGE_INDEX), expected,
                               equal_nan=True)
    torch.testing.assert_close(attention_entropy(EDGE_INDEX, alpha),
                               expected.unsqueeze(-1).repeat(1, 3),
                               equal_nan=True)


def test_one_dimensional_alpha_and_num_nodes():
    alpha = torch.tensor([0.5, 0.5, 0.0, 1.0, 0.5, 0.5])
    out = attention_entropy(EDGE_INDEX, alpha, num_nodes=6)
    assert out.shape == (6, 1)
    assert torch.isnan(out[4:]).all()  # Nodes 4, 5: no incoming edges.
    assert uniform_entropy(EDGE_INDEX, num_nodes=6).shape == (6, )


@pytest.mark.parametrize('conv_cls', [GATConv, PyGGATConv])
def test_entropy_of_gat_attention(conv_cls):
    torch.manual_seed(0)
    edge_index = torch.randint(0, 30, (2, 120))
    x = torch.randn(30, 8)
    conv = conv_cls(8, 4, heads=4).eval()
    _, (ei, alpha) = conv(x, edge_index, return_attention_weights=True)
    entropy, baseline = attention_entropy(ei, alpha), uniform_entropy(ei)
    # Self-loops: every node has an incoming edge. Uniform attention has
    # the largest entropy (Gibbs' inequality).
    assert not torch.isnan(entropy).any()
    assert (entropy >= 0).all()
    assert (entropy <= baseline.unsqueeze(-1) + 1e-5).all()
    assert (entropy < baseline.unsqueeze(-1) - 1e-4).any()

    # Zero attention parameters: every score is 0, the softmax is uniform.
    with torch.no_grad():
        conv.att_src.zero_()
        conv.att_dst.zero_()
    _, (ei, alpha) = conv(x, edge_index, return_attention_weights=True)
    torch.testing.assert_close(attention_entropy(ei, alpha),
                               uniform_entropy(ei).unsqueeze(-1).expand(-1, 4))


@pytest.mark.parametrize('edge_index, alpha, error, match', [
    (EDGE_INDEX.tolist(), torch.ones(6), TypeError, 'must be a tensor'),
    (EDGE_INDEX.t(), torch.ones(6), ValueError, r'shape \[2, E\]'),
    (EDGE_INDEX.float(), torch.ones(6), ValueError, 'integers'),
    (-EDGE_INDEX - 1, torch.ones(6), ValueError, 'negative node'),
    (EDGE_INDEX, torch.ones(5, 2), ValueError, 'E = 6 edges'),
    (EDGE_INDEX, torch.ones(6, 2, 1), ValueError, 'E = 6 edges'),
    (EDGE_INDEX, torch.ones(6, dtype=torch.long), ValueError, 'floating'),
    (EDGE_INDEX, -torch.ones(6), ValueError, 'not scores'),
    (EDGE_INDEX, torch.full((6, ), math.nan), ValueError, 'NaN'),
])
def test_attention_entropy_bad_input(edge_index, alpha, error, match):
    with pytest.raises(error, match=match):
        attention_entropy(edge_index, alpha)


def test_sparse_adjacency_is_refused_with_advice():
    adj = torch.sparse_coo_tensor(EDGE_INDEX, torch.ones(6), (4, 4))
    with pytest.raises(TypeError, match='to_edge_index'):
        uniform_entropy(adj)


def test_num_nodes_too_small():
    with pytest.raises(ValueError, match="'num_nodes' is 3"):
        uniform_entropy(EDGE_INDEX, num_nodes=3)


def test_plot_neighbourhood_one_axes_per_head(tmp_path):
    pytest.importorskip('matplotlib')
    pytest.importorskip('networkx')
    edge_index, alpha = _random_attention(heads=3)
    node = int(edge_index[1, 0])
    fig = plot_neighbourhood(node, edge_index, alpha,
                             y=torch.arange(20) % 4)
    assert len(_head_axes(fig)) == 3
    assert [ax.get_title().split(':')[0]
            for ax in _head_axes(fig)] == ['head 0', 'head 1', 'head 2']
    assert len(fig.axes) == 4  # One colour bar for all heads.
    path = tmp_path / 'neighbourhood.png'
    fig.savefig(path)
    assert path.stat().st_size > 1000
    assert path.read_bytes()[:8] == PNG_SIGNATURE

    fig = plot_neighbourhood(node, edge_index, alpha, heads=[2])
    assert [ax.get_title().split(':')[0]
            for ax in _head_axes(fig)] == ['head 2']


def test_plot_neighbourhood_titles_give_entropies():
    pytest.importorskip('matplotlib')
    pytest.importorskip('networkx')
    alpha = torch.tensor([[0.25], [0.75], [0.0], [1.0], [0.5], [0.5]])
    fig = plot_neighbourhood(2, EDGE_INDEX, alpha)
    # Node 2: weights 0.25, 0.75 and 0 (self-loop) over 3 edges.
    assert _head_axes(fig)[0].get_title() == (
        'head 0: entropy 0.562 (uniform 1.099)')
    # A node without a self-loop and with a duplicate edge.
    fig = plot_neighbourhood(3, EDGE_INDEX, alpha)
    assert len(_head_axes(fig)) == 1


def test_plot_neighbourhood_bad_input():
    pytest.importorskip('matplotlib')
    pytest.importorskip('networkx')
    alpha = torch.ones(6, 2) / 2
    with pytest.raises(ValueError, match='node 1 has no incoming edges'):
        plot_neighbourhood(1, EDGE_INDEX, alpha)
    with pytest.raises(ValueError, match="'node' 7 out of range"):
        plot_neighbourhood(7, EDGE_INDEX, alpha)
    with pytest.raises(ValueError, match=r"'heads' \[2\] out of range"):
        plot_neighbourhood(2, EDGE_INDEX, alpha, heads=[0, 2])
    with pytest.raises(ValueError, match="'y' must have shape"):
        plot_neighbourhood(2, EDGE_INDEX, alpha, y=torch.zeros(3))


def test_plot_entropy_histograms(tmp_path):
    matplotlib = pytest.importorskip('matplotlib')
    pytest.importorskip('networkx')
    edge_index, alpha = _random_attention(heads=5)
    fig = plot_entropy_histograms(edge_index, alpha, ncols=2, bins=10)
    assert len(fig.axes) == 5
    assert fig.axes[0].get_legend() is not None
    # Each panel: the attention bars and the uniform baseline's outline.
    assert all(len(ax.patches) == 10 + 1 for ax in fig.axes)
    path = tmp_path / 'entropy.png'
    fig.savefig(path)
    assert path.read_bytes()[:8] == PNG_SIGNATURE

    # Into a given figure, a subset of heads.
    fig = matplotlib.figure.Figure()
    assert plot_entropy_histograms(edge_index, alpha, heads=[1, 3],
                                   fig=fig) is fig
    assert len(fig.axes) == 2
    with pytest.raises(ValueError, match="'bins' must be positive"):
        plot_entropy_histograms(edge_index, alpha, bins=0)
    with pytest.raises(ValueError, match="'heads' is empty"):
        plot_entropy_histograms(edge_index, alpha, heads=[])


@pytest.mark.parametrize('module', ['matplotlib', 'networkx'])
def test_plotting_without_viz_extra(monkeypatch, module):
    monkeypatch.setitem(sys.modules, module, None)  # Import fails.
    if module == 'matplotlib':
        monkeypatch.setitem(sys.modules, 'matplotlib.figure', None)
    # Commands that work: the package is not on PyPI.
    with pytest.raises(ImportError,
                       match=r"pip install matplotlib networkx \(or pip "
                       r"install '\.\[viz\]' from a checkout"):
        plot_entropy_histograms(EDGE_INDEX, torch.ones(6))
    # The entropies need no plotting library.
    assert attention_entropy(EDGE_INDEX, torch.ones(6)).shape == (4, 1)
