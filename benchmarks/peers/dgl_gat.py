r"""DGL's GATConv on the workloads that benchmarks/peers/export.py wrote:
the peer side of benchmarks/peers/run.py. Runs in DGL's own environment
(DGL 2.1 with torch 2.2) and imports only torch, dgl, the standard
library and, by path, pyg_gat_ext/memory.py (torch and the standard library
only).

Each workload gets DGL layers with PyG's weights (lin.weight -> fc.weight,
att_src -> attn_l, att_dst -> attn_r, bias -> bias) on a DGL graph with
PyG GATConv's self-loop handling (existing self-loops removed, one added
per node; allow_zero_in_degree=True), and must give our exported eval-mode
output (atol 1e-4) before it is timed:

  layer_*    one layer, forward (no_grad) and forward+backward, as
             benchmarks/nn/gat_conv.py: one warm-up step, the peak memory
             of one step, then the timed reps; the graph is built once
  cora       the paper model (examples/cora.py: input, hidden and attention
             dropout 0.6, 8 heads x 8 with ELU, then 1 output head), infer
             (eval, no_grad) and train (forward, loss, backward, Adam step)
             as benchmarks/train/e2e.py: warm-up calls, timed reps, then the
             peak memory of one more step; the graph is built once
  minibatch  the same model on the pre-sampled mini-batches, each step on
             the next batch, its DGL graph built inside the step (timed),
             as our layer builds its graph per step

Times are the minimum and median over the reps in ms; peak memory is the
growth of the process's peak RSS over one step, measured by
pyg_gat_ext/memory.py's peak_memory as on our side (empty where it cannot
be read). The rows are written as CSV to --csv (else stdout).

    ../dgl-venv/bin/python benchmarks/peers/dgl_gat.py /tmp/peers \
        --csv /tmp/dgl.csv
"""
# The docstring above is also the text of --help: plain text, no reST.
import argparse
import csv
import gc
import importlib.util
import json
import os.path as osp
import platform
import statistics
import sys
import time

import dgl
import torch
import torch.nn.functional as F
from dgl.nn.pytorch import GATConv

#: Tolerance of the check of DGL's outputs against ours (eval mode).
ATOL = 1e-4
#: PyG GATConv's parameters and DGL's names for them.
NAMES = {'lin.weight': 'fc.weight', 'att_src': 'attn_l',
         'att_dst': 'attn_r', 'bias': 'bias'}


def make_graph(edge_index, num_nodes):
    r"""The DGL graph of a PyG :obj:`edge_index` (sources in row 0), its
    self-loops replaced by one per node as PyG's GATConv does."""
    g = dgl.graph((edge_index[0], edge_index[1]), num_nodes=num_nodes)
    return dgl.add_self_loop(dgl.remove_self_loop(g))


def conv_from_pyg(state, prefix='', dropout=0.0):
    r"""A DGL GATConv with the weights of the PyG GATConv whose state_dict
    entries start with :obj:`prefix`; raises on any entry it cannot map
    (e.g. a residual or edge features)."""
    mine = {k[len(prefix):]: v for k, v in state.items()
            if k.startswith(prefix)}
    if set(mine) != set(NAMES):
        raise ValueError(f'cannot map PyG GATConv parameters {sorted(mine)} '
                         f'to DGL (expected {sorted(NAMES)})')
    _, heads, channels = mine['att_src'].shape
    conv = GATConv(mine['lin.weight'].size(1), channels, heads,
                   attn_drop=dropout, negative_slope=0.2,
                   allow_zero_in_degree=True)
    conv.load_state_dict({NAMES[k]: v.reshape(-1) if k == 'bias' else v
                          for k, v in mine.items()})
    return conv


class Layer(torch.nn.Module):
    r"""One GATConv taking PyG's :obj:`(x, graph)` order, heads
    concatenated."""
    def __init__(self, state):
        super().__init__()
        self.conv = conv_from_pyg(state)

    def forward(self, g, x):
        return self.conv(g, x).flatten(1)


class GAT(torch.nn.Module):
    r"""examples/cora.py's model on DGL's GATConv: dropout, GATConv (heads
    concatenated), ELU, dropout, GATConv (one head, averaged)."""
    def __init__(self, state, dropout):
        super().__init__()
        self.dropout = dropout
        self.conv1 = conv_from_pyg(state, 'conv1.', dropout)
        self.conv2 = conv_from_pyg(state, 'conv2.', dropout)

    def forward(self, g, x):
        x = F.dropout(x, p=self.dropout, training=self.training)
        x = F.elu(self.conv1(g, x).flatten(1))
        x = F.dropout(x, p=self.dropout, training=self.training)
        return self.conv2(g, x).mean(1)


def check(name, model, data):
    r"""Raises unless :obj:`model` gives our exported eval-mode output;
    returns the largest absolute difference."""
    c = data['check']
    model.eval()
    with torch.no_grad():
        out = model(make_graph(c['edge_index'], c['x'].size(0)), c['x'])
    torch.testing.assert_close(out, c['out'], atol=ATOL, rtol=1e-5,
                               msg=lambda m: f'{name}: DGL differs from ours '
                               f'in eval mode with the same weights: {m}')
    return float((out - c['out']).abs().max())


def _load_memory():
    # pyg_gat_ext/memory.py by path (it needs only torch and the standard
    # library), so that both sides measure peak memory the same way without
    # importing pyg_gat_ext, which this environment does not have.
    path = osp.join(osp.dirname(osp.abspath(__file__)), '..', '..',
                    'pyg_gat_ext', 'memory.py')
    spec = importlib.util.spec_from_file_location('_pyg_gat_ext_memory',
                                                  path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


memory = _load_memory()


def peak_mib(step, *args):
    r"""Runs :obj:`step(*args)` and returns its peak memory in MiB (None
    where it cannot be measured), as our benchmarks measure it
    (pyg_gat_ext.memory.peak_memory)."""
    gc.collect()
    with memory.peak_memory('cpu') as mem:
        step(*args)
    return None if mem.mib is None else round(mem.mib, 1)


def timed(step, args):
    r"""Times :obj:`step` on each of :obj:`args`; returns (min, median) in
    ms."""
    times = []
    for a in args:
        start = time.perf_counter()
        step(a)
        times.append(1e3 * (time.perf_counter() - start))
    return round(min(times), 3), round(statistics.median(times), 3)


def run_layer(name, meta, data):
    conv = Layer(data['state_dict'])
    diff = check(name, conv, data)
    g = make_graph(data['edge_index'], data['x'].size(0))
    x = data['x']

    def step_fn(mode):
        def step(_=None):
            if mode == 'forward':
                with torch.no_grad():
                    conv(g, x)
            else:
                conv.zero_grad(set_to_none=True)
                conv(g, x).sum().backward()

        return step

    rows = []
    for mode in meta['phases']:
        step = step_fn(mode)
        step()  # Warm-up: DGL builds its sparse formats on first use.
        mem = peak_mib(step)
        best, median = timed(step, range(meta['reps']))
        rows.append(dict(workload=name, phase=mode, min_ms=best,
                         median_ms=median, peak_mib=mem, reps=meta['reps'],
                         max_abs_diff=diff))
    return rows


def run_model(name, meta, data):
    model = GAT(data['state_dict'], meta['dropout'])
    diff = check(name, model, data)
    optimizer = torch.optim.Adam(model.parameters(), lr=meta['lr'],
                                 weight_decay=meta['weight_decay'])
    batches = data['batches']
    fixed = None if meta['graph_per_step'] else make_graph(
        batches[0]['edge_index'], batches[0]['x'].size(0))
    n = meta['warmup'] + meta['reps'] + 1
    batches = [batches[i % len(batches)] for i in range(n)]

    def graph(b):
        if fixed is not None:
            return fixed
        return make_graph(b['edge_index'], b['x'].size(0))

    def infer(b):
        model.eval()
        with torch.no_grad():
            return model(graph(b), b['x'])

    def train(b):
        model.train()
        optimizer.zero_grad(set_to_none=True)
        out = model(graph(b), b['x'])
        t = b['target']
        t = slice(0, t) if isinstance(t, int) else t
        F.cross_entropy(out[t], b['y'][t]).backward()
        optimizer.step()
        return out

    rows = []
    for phase in meta['phases']:  # Infer first, as e2e.py: same weights.
        step = infer if phase == 'infer' else train
        for b in batches[:meta['warmup']]:
            step(b)
        best, median = timed(step, batches[meta['warmup']:n - 1])
        mem = peak_mib(step, batches[-1])
        rows.append(dict(workload=name, phase=phase, min_ms=best,
                         median_ms=median, peak_mib=mem, reps=meta['reps'],
                         max_abs_diff=diff))
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('data', help="export.py's output folder")
    parser.add_argument('--workloads', nargs='+', default=None,
                        help='default: all in DATA/meta.json')
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--csv', default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    with open(osp.join(args.data, 'meta.json')) as f:
        meta = json.load(f)
    info = dict(machine=platform.processor() or platform.machine(),
                threads=torch.get_num_threads(), dgl=dgl.__version__,
                dgl_torch=torch.__version__)
    print(f'{info["machine"]} | {info["threads"]} threads | DGL '
          f'{info["dgl"]} | torch {info["dgl_torch"]}', file=sys.stderr)
    rows = []
    for name in args.workloads or meta:
        data = torch.load(osp.join(args.data, f'{name}.pt'),
                          weights_only=True)
        run = run_layer if meta[name]['kind'] == 'layer' else run_model
        for row in run(name, meta[name], data):
            print(', '.join(f'{k}={v}' for k, v in row.items()),
                  file=sys.stderr, flush=True)
            rows.append({**row, **info})
        del data
    f = open(args.csv, 'w', newline='') if args.csv else sys.stdout
    try:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    finally:
        if args.csv:
            f.close()


if __name__ == '__main__':
    main()
