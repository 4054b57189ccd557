r"""Peer run on CPU: DGL's GATConv against pyg_gat_ext's on the workloads
that our benchmarks use - benchmarks/nn/gat_conv.py's layers (8x8 on a
uniform graph, 4x64 on a power-law one; 100k nodes, 1.6M edges, 128
features; forward and forward+backward) and benchmarks/train/e2e.py's
cora and minibatch training steps and inference - with the same inputs
and weights, written to a CSV with DGL's time / ours (above 1: ours is
faster).

DGL 2.1 needs torch 2.2, so it lives in a virtual environment of its own,
created once (PyPI only; the torch wheel brings CUDA libraries along):

    python3 -m venv ../dgl-venv
    ../dgl-venv/bin/pip install torch==2.2.1 dgl==2.1.0 torchdata==0.7.1 \
        'numpy<2' pandas pyyaml pydantic

torch 2.2.1, not 2.2.2: dgl 2.1.0's wheel carries its graphbolt library
(loaded by `import dgl`) for torch up to 2.2.1. torchdata 0.7.1: graphbolt
imports torchdata.datapipes, gone from 0.10 on and needing a newer torch
in 0.8 and 0.9.

How it runs:
  1. export.py (in this process) writes each workload's inputs as plain
     tensors into a temporary folder (or --data): the layer graphs as
     gat_conv.py makes them, Cora as e2e.py loads it, e2e.py's pre-sampled
     mini-batches, the weights, and our eval-mode outputs for the parity
     check.
  2. For --rounds rounds, alternately (ours first in odd rounds, DGL first
     in even ones), in fresh processes:
       ours  gat_conv.py with just these configs (it times PyG's layer in
             the same process too: pyg_* columns), then e2e.py once per
             workload with --providers ours, all given the exported sizes;
       DGL   dgl_gat.py under --dgl-python, which checks DGL's outputs
             against ours (atol 1e-4) and raises on a difference.
  3. Per workload and phase, the median over the rounds of each round's
     median time, the minimum of the minima, the median peak memory (growth
     of the peak RSS over one step), and the ratios go to --csv.

Each side trains as its users would: DGL's model with torch's dropout
(DGL's GATConv drops attention weights through torch.nn.Dropout), ours
with pyg_gat_ext's (e2e.py's ours provider: patch(dropout=True)).

A comparison across environments is one across processes (and torch
versions: ours on this environment's torch, DGL on 2.2); alternating the
processes round by round spreads the machine's changing load over both
sides. Both get --threads threads (OMP_NUM_THREADS, which DGL's own
OpenMP kernels follow too).

    python benchmarks/peers/run.py
    python benchmarks/peers/run.py --quick --csv /tmp/peers.csv
"""
# The docstring above is also the text of --help: plain text, no reST.
import argparse
import csv
import importlib.util
import os
import os.path as osp
import platform
import statistics
import subprocess
import sys
import tempfile

import torch
import torch_geometric

HERE = osp.dirname(osp.abspath(__file__))
ROOT = osp.normpath(osp.join(HERE, '..', '..'))


def _load(name):
    # benchmarks/ is no package: a sibling script by path.
    path = osp.join(HERE, f'{name}.py')
    spec = importlib.util.spec_from_file_location(f'_peers_{name}', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


export = _load('export')
ratio, write_csv = export.gat_conv.ratio, export.gat_conv.write_csv


def _num(value):
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _read(path):
    with open(path, newline='') as f:
        return list(csv.DictReader(f))


def run_ours(meta, tmp, env):
    r"""Our side of one round: the existing benchmark scripts, with just
    these workloads and sizes. Returns {(workload, phase): times}."""
    out = {}
    path = osp.join(tmp, 'ours.csv')
    layers = [m for m in meta.values() if m['kind'] == 'layer']
    m = layers[0]
    subprocess.run([
        sys.executable, osp.join(ROOT, 'benchmarks', 'nn', 'gat_conv.py'),
        '--nodes', str(m['nodes']), '--edges', str(m['edges']),
        '--in-channels', str(m['in_channels']), '--reps', str(m['reps']),
        '--modes', *m['phases'], '--configs',
        *(c['config'] for c in layers), '--csv', path
    ], check=True, env=env)
    for r in _read(path):
        name = export.layer_name(f'{r["heads"]}x{r["channels"]}:'
                                 f'{r["graph"]}')
        out[name, r['mode']] = dict(
            min_ms=_num(r['ours_ms']), median_ms=_num(r['ours_median_ms']),
            peak_mib=_num(r['ours_peak_mib']),
            pyg_median_ms=_num(r['pyg_median_ms']))
    for name in ('cora', 'minibatch'):
        m = meta[name]
        cmd = [
            sys.executable, osp.join(ROOT, 'benchmarks', 'train', 'e2e.py'),
            '--workloads', name, '--providers', 'ours', '--warmup',
            str(m['warmup']), '--reps', str(m['reps']), '--csv', path
        ]
        if name == 'minibatch':
            cmd += ['--nodes', str(m['nodes']), '--edges', str(m['edges']),
                    '--batch-size', str(m['batch_size']), '--features',
                    str(m['features']), '--classes', str(m['classes']),
                    '--num-neighbors', *map(str, m['num_neighbors'])]
        elif m['root']:
            cmd += ['--root', m['root']]
        subprocess.run(cmd, check=True, env=env)
        for r in _read(path):
            if r['provider'] == 'ours':
                out[name, r['phase']] = dict(
                    min_ms=_num(r['min_ms']),
                    median_ms=_num(r['median_ms']),
                    peak_mib=_num(r['peak_mib']), status=r['status'])
    return out


def run_dgl(python, data, threads, tmp, env):
    r"""DGL's side of one round (dgl_gat.py in DGL's environment)."""
    path = osp.join(tmp, 'dgl.csv')
    subprocess.run([python, osp.join(HERE, 'dgl_gat.py'), data,
                    '--threads', str(threads), '--csv', path], check=True,
                   env=env)
    out = {}
    for r in _read(path):
        out[r['workload'], r['phase']] = dict(
            min_ms=_num(r['min_ms']), median_ms=_num(r['median_ms']),
            peak_mib=_num(r['peak_mib']), dgl=r['dgl'],
            dgl_torch=r['dgl_torch'])
    return out


def summarize(meta, rounds):
    r"""One row per workload and phase over the :obj:`rounds` (a list of
    {'ours': ..., 'dgl': ...} results)."""
    rows = []
    for key in rounds[0]['ours']:
        name, phase = key
        row = dict(workload=name, phase=phase)
        for side in ('ours', 'dgl'):
            runs = [r[side][key] for r in rounds if key in r[side]]
            medians = [r['median_ms'] for r in runs
                       if r['median_ms'] is not None]
            mins = [r['min_ms'] for r in runs if r['min_ms'] is not None]
            peaks = [r['peak_mib'] for r in runs if r['peak_mib'] is not None]
            row[f'{side}_median_ms'] = (round(statistics.median(medians), 3)
                                        if medians else None)
            row[f'{side}_min_ms'] = min(mins) if mins else None
            row[f'{side}_peak_mib'] = (round(statistics.median(peaks), 1)
                                       if peaks else None)
            row[f'{side}_round_medians_ms'] = ' '.join(map(str, medians))
        row['dgl_vs_ours'] = ratio(row['dgl_median_ms'], row['ours_median_ms'])
        row['dgl_vs_ours_min'] = ratio(row['dgl_min_ms'], row['ours_min_ms'])
        row['dgl_vs_ours_peak'] = ratio(row['dgl_peak_mib'],
                                        row['ours_peak_mib'])
        pyg = [r['ours'][key].get('pyg_median_ms') for r in rounds]
        if all(v is not None for v in pyg):
            row['pyg_median_ms'] = round(statistics.median(pyg), 3)
        dgl = rounds[0]['dgl'].get(key, {})
        m = meta[name]
        row.update(rounds=len(rounds), reps=m['reps'], nodes=m['nodes'],
                   edges=m['edges'], dgl=dgl.get('dgl'),
                   dgl_torch=dgl.get('dgl_torch'))
        rows.append(row)
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--dgl-python',
                        default=osp.join(ROOT, '..', 'dgl-venv', 'bin',
                                         'python'),
                        help="the DGL environment's python (default: "
                        '../dgl-venv/bin/python next to the checkout)')
    parser.add_argument('--rounds', type=int, default=3)
    parser.add_argument('--threads', type=int, default=2,
                        help='threads of either side (OMP_NUM_THREADS)')
    parser.add_argument('--root', default=None,
                        help='folder holding Cora/raw/ (default: as e2e.py)')
    parser.add_argument('--data', default=None,
                        help='export into (and keep) this folder (default: '
                        'a temporary one)')
    parser.add_argument('--quick', action='store_true',
                        help='tiny sizes, 2 reps: a smoke test')
    parser.add_argument('--csv', default='benchmarks/results/peers_cpu.csv',
                        help="the CSV to write ('' for none; default: "
                        '%(default)s)')
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error('--rounds must be at least 1')
    if not osp.isfile(args.dgl_python):
        parser.error(f'no DGL python at {args.dgl_python} (see --help for '
                     'how to create its environment)')
    env = {**os.environ, 'OMP_NUM_THREADS': str(args.threads)}
    info = dict(machine=platform.processor() or platform.machine(),
                threads=args.threads, torch=torch.__version__,
                torch_geometric=torch_geometric.__version__)

    with tempfile.TemporaryDirectory(prefix='pyg_gat_ext_peers_') as tmp:
        data = args.data or osp.join(tmp, 'data')
        meta = export.export(data, args.quick, args.root)
        print(f'exported {", ".join(meta)} to {data}', flush=True)
        rounds = []
        for i in range(args.rounds):
            print(f'--- round {i + 1} of {args.rounds} ---', flush=True)
            result = {}
            for side in ('ours', 'dgl') if i % 2 == 0 else ('dgl', 'ours'):
                if side == 'ours':
                    result[side] = run_ours(meta, tmp, env)
                else:
                    result[side] = run_dgl(args.dgl_python, data,
                                           args.threads, tmp, env)
            rounds.append(result)

    rows = [{**row, **info} for row in summarize(meta, rounds)]
    print(f'\n{"workload":<22} {"phase":<17} {"ours ms":>10} {"DGL ms":>10}'
          f' {"DGL/ours":>9}  (medians over {args.rounds} rounds)')
    for row in rows:
        print(f'{row["workload"]:<22} {row["phase"]:<17} '
              f'{row["ours_median_ms"] or "-":>10} '
              f'{row["dgl_median_ms"] or "-":>10} '
              f'{row["dgl_vs_ours"] or "-":>9}')
    if args.csv:
        write_csv(args.csv, rows)
        print(f'wrote {args.csv}')
    return rows


if __name__ == '__main__':
    main()
