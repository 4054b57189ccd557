r"""Full-graph inference: the largest random graph on which an eval-mode
forward of a 2-layer GAT fits in memory, with our layer and with PyG's,
full batch and layer-wise, and what each costs in time and peak memory.

The model is PyG's torch_geometric.nn.models.GAT(--in-channels, --hidden,
num_layers=2, out_channels=--classes, heads=--heads, v2=False) (default
128 features, 8 heads x 8 hidden, 16 classes), in eval mode under no_grad.
The graphs are random (benchmarks/nn/gat_conv.py's make_graph, uniform
sources and targets) with --degree edges per node on average, at each of
--nodes in turn. Modes:

  ours            full-batch model(x, edge_index), model built after
                  pyg_gat_ext.patch()
  pyg             the same with PyG's GATConv (after unpatch())
  pyg_layerwise   PyG's layer-wise model.inference(loader), with
                  NeighborLoader(data, num_neighbors=[-1],
                  batch_size=--batch-size, input_nodes=None, shuffle=False)
                  over all nodes: every layer for all nodes, batch by batch
  ours_layerwise  the same inference(loader) with our layers

Each (size, mode) runs in a fresh child process, so its peak memory is its
own. The child caps its address space with setrlimit(RLIMIT_AS) at what it
has mapped after importing torch plus --memory-limit-gib; an allocation
beyond the cap (MemoryError or torch's out-of-memory error), a child killed
by the OS (the OOM killer) and a child whose peak RSS growth passes the
limit all count as 'oom'. A child running longer than --time-limit seconds
is killed ('timeout'). A mode that fails (oom, timeout or error) is not
run at larger sizes, which would only take longer or more memory; the run
stops when no mode is left.

Columns: seconds is the wall time of the inference alone (for layer-wise
modes, building the NeighborLoader included: it converts the graph to CSC;
for ours, the graph's CSR grouping is built inside the forward and counted
too); peak_mib is the growth of the process's peak RSS over the inference
(pyg_gat_ext.memory.peak_memory, taken after the graph, the features and
the model exist); input_mib is the size of x and edge_index themselves,
which peak_mib does not include; process_peak_mib is the child's whole
peak RSS (ru_maxrss: torch, the inputs, the model and the inference).
Before the run ends, the outputs of all modes at the smallest size are
compared (ours vs pyg and layer-wise vs full batch within --atol, ours
layer-wise vs ours full batch within 1e-5), and it raises if they differ.

    python benchmarks/train/inference.py \
        --nodes 100000 200000 400000 800000 1600000 3200000 \
        --csv benchmarks/results/inference_cpu.csv
    python benchmarks/train/inference.py --nodes 2000 4000 --csv /tmp/i.csv
"""
# The docstring above is also the text of --help: plain text, no reST.
import argparse
import importlib.util
import json
import os
import os.path as osp
import platform
import resource
import subprocess
import sys
import tempfile
import time

import torch

MODES = ['ours', 'pyg', 'pyg_layerwise', 'ours_layerwise']
#: The cap a child could not stay under.
OOM = 'oom'
#: Layer-wise and full-batch results of our layer run the same maths
#: (only the neighbourhoods are cut into batches): this close.
OURS_LAYERWISE_ATOL = 1e-5


def _load_gat_conv_benchmark():
    # benchmarks/ is no package: import make_graph's and write_csv's script
    # by path.
    path = osp.join(osp.dirname(osp.abspath(__file__)), '..', 'nn',
                    'gat_conv.py')
    spec = importlib.util.spec_from_file_location('_bench_gat_conv', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _vm_size():
    # Bytes of address space this process has mapped.
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith('VmSize:'):
                return int(line.split()[1]) * 1024
    raise RuntimeError('no VmSize in /proc/self/status')


def _is_oom(error):
    return isinstance(error, (MemoryError, torch.OutOfMemoryError)) or (
        isinstance(error, RuntimeError)
        and "can't allocate memory" in str(error))


def build_model(mode, args):
    r"""PyG's GAT with our layers (``ours*``) or PyG's, seeded alike."""
    import pyg_gat_ext
    if mode.startswith('ours'):
        pyg_gat_ext.patch()
    else:
        pyg_gat_ext.unpatch()
    from torch_geometric.nn.models import GAT
    torch.manual_seed(0)
    model = GAT(args.in_channels, args.hidden, num_layers=2,
                out_channels=args.classes, heads=args.heads, v2=False)
    return model.eval()


def run_inference(model, mode, data, batch_size):
    r"""One eval-mode inference of :obj:`model` over all nodes of
    :obj:`data`, full batch or layer-wise."""
    with torch.no_grad():
        if not mode.endswith('layerwise'):
            return model(data.x, data.edge_index)
        from torch_geometric.loader import NeighborLoader
        loader = NeighborLoader(data, num_neighbors=[-1],
                                batch_size=batch_size, input_nodes=None,
                                shuffle=False)
        return model.inference(loader)


def child(args):
    r"""One (size, mode), in this process: returns its row."""
    from torch_geometric.data import Data

    from pyg_gat_ext.memory import peak_memory
    mode, nodes = args.child, args.nodes[0]
    edges = args.degree * nodes
    result = dict(nodes=nodes, edges=edges, mode=mode)
    limit = int(args.memory_limit_gib * 2**30)
    # Warm-up on a tiny graph (C++ kernel load, lazy imports) before the cap
    # and before timing; the same model class, fresh weights below.
    make_graph = _load_gat_conv_benchmark().make_graph
    warm = make_graph('uniform', 64, 512, 'cpu')
    run_inference(build_model(mode, args), mode,
                  Data(x=torch.randn(64, args.in_channels), edge_index=warm),
                  16)
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = _vm_size() + limit
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    try:
        edge_index = make_graph('uniform', nodes, edges, 'cpu')
        x = torch.randn(nodes, args.in_channels,
                        generator=torch.Generator().manual_seed(1))
        data = Data(x=x, edge_index=edge_index)
        result['input_mib'] = round(
            (x.nbytes + edge_index.nbytes) / 2**20, 1)
        model = build_model(mode, args)
        with peak_memory('cpu') as mem:
            start = time.perf_counter()
            out = run_inference(model, mode, data, args.batch_size)
            seconds = time.perf_counter() - start
        status = 'ok'
        if mem.bytes is not None and mem.bytes > limit:
            status = OOM  # Under the address-space cap, over the limit.
        result.update(status=status, seconds=round(seconds, 2),
                      peak_mib=None if mem.mib is None else round(mem.mib))
        if args.save_out:
            torch.save(out, args.save_out)
    except Exception as error:  # noqa: BLE001 (reported, not hidden)
        if not _is_oom(error):
            raise
        result.update(status=OOM)
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
    result['process_peak_mib'] = round(
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10)
    return result


def spawn(mode, nodes, args, save_out=None):
    r"""Runs :func:`child` for one (size, mode) in a fresh process; returns
    its row (status ``oom``, ``timeout`` or ``error`` when it failed)."""
    cmd = [
        sys.executable, osp.abspath(__file__), '--child', mode, '--nodes',
        str(nodes), '--degree', str(args.degree), '--in-channels',
        str(args.in_channels), '--hidden', str(args.hidden), '--heads',
        str(args.heads), '--classes', str(args.classes), '--batch-size',
        str(args.batch_size), '--memory-limit-gib',
        str(args.memory_limit_gib)
    ] + (['--save-out', save_out] if save_out else [])
    row = dict(nodes=nodes, edges=args.degree * nodes, mode=mode)
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True,
                              timeout=args.time_limit)
    except subprocess.TimeoutExpired:
        return dict(row, status='timeout', seconds=args.time_limit)
    lines = [line for line in proc.stdout.splitlines()
             if line.startswith('{')]
    if proc.returncode == 0 and lines:
        return json.loads(lines[-1])
    if proc.returncode in (-9, 137):  # SIGKILL: the kernel's OOM killer.
        return dict(row, status=OOM, detail='killed (SIGKILL)')
    return dict(row, status='error',
                detail=proc.stderr.strip()[-500:].replace('\n', ' | '))


def run_here(mode, nodes, args, save_out=None):
    r"""Runs :func:`child` for one (size, mode) in this process."""
    sub = argparse.Namespace(**vars(args))
    sub.child, sub.nodes, sub.save_out = mode, [nodes], save_out
    return child(sub)


def check_agreement(outputs, atol):
    r"""Raises :class:`AssertionError` unless the outputs of the modes in
    :obj:`outputs` agree: ours vs pyg and each layer-wise mode vs its full
    batch within :obj:`atol`, ours layer-wise vs ours within 1e-5. Returns
    the max abs differences checked."""
    pairs = [('ours', 'pyg', atol), ('pyg_layerwise', 'pyg', atol),
             ('ours_layerwise', 'ours', OURS_LAYERWISE_ATOL),
             ('ours_layerwise', 'pyg_layerwise', atol)]
    diffs = {}
    for a, b, tol in pairs:
        if a not in outputs or b not in outputs:
            continue
        diff = (outputs[a] - outputs[b]).abs().max().item()
        diffs[f'{a} vs {b}'] = diff
        if not diff <= tol:
            raise AssertionError(f'{a} and {b} differ by {diff:.3g} '
                                 f'(> {tol:g})')
    return diffs


def print_row(row):
    def cell(key):
        value = row.get(key)
        return '-' if value is None else str(value)

    print(f'{row["nodes"]:>9} {row["edges"]:>10} {row["mode"]:<15} '
          f'{row["status"]:<7} {cell("seconds"):>8} {cell("peak_mib"):>9} '
          f'{cell("input_mib"):>9} {cell("process_peak_mib"):>12}',
          flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument('--nodes', type=int, nargs='+',
                        default=[100_000, 200_000, 400_000, 800_000,
                                 1_600_000])
    parser.add_argument('--degree', type=int, default=16,
                        help='edges per node (average in-degree)')
    parser.add_argument('--in-channels', type=int, default=128)
    parser.add_argument('--hidden', type=int, default=64,
                        help='hidden channels, all heads together')
    parser.add_argument('--heads', type=int, default=8)
    parser.add_argument('--classes', type=int, default=16)
    parser.add_argument('--modes', nargs='+', choices=MODES, default=MODES)
    parser.add_argument('--batch-size', type=int, default=4096,
                        help='target nodes per layer-wise batch')
    parser.add_argument('--memory-limit-gib', type=float, default=20.0)
    parser.add_argument('--time-limit', type=float, default=600.0,
                        help='seconds a child may run')
    parser.add_argument('--atol', type=float, default=1e-4)
    parser.add_argument('--csv', default=None)
    parser.add_argument(
        '--in-process', action='store_true',
        help='run every (size, mode) in this process (quick checks, tests:\n'
        'the peak memory is then not one mode\'s alone)')
    parser.add_argument('--child', choices=MODES, default=None,
                        help=argparse.SUPPRESS)
    parser.add_argument('--save-out', default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        result = child(args)
        print(json.dumps(result), flush=True)  # For spawn().
        return result

    sizes = sorted(args.nodes)
    print(f'{platform.processor() or platform.machine()} | '
          f'{torch.get_num_threads()} threads | torch {torch.__version__} | '
          f'load {" ".join(f"{v:.2f}" for v in os.getloadavg())} | '
          f'2-layer GAT {args.in_channels} -> {args.heads} heads x '
          f'{args.hidden // args.heads} -> {args.classes}, degree '
          f'{args.degree}, limit {args.memory_limit_gib:g} GiB')
    print(f'{"nodes":>9} {"edges":>10} {"mode":<15} {"status":<7} '
          f'{"seconds":>8} {"peak_mib":>9} {"input_mib":>9} '
          f'{"process_peak":>12}')
    rows, alive, diffs = [], list(args.modes), {}
    with tempfile.TemporaryDirectory() as tmp:
        for i, nodes in enumerate(sizes):
            outputs = {}
            for mode in list(alive):
                save = osp.join(tmp, f'{mode}.pt') if i == 0 else None
                row = (run_here(mode, nodes, args, save) if args.in_process
                       else spawn(mode, nodes, args, save))
                rows.append(row)
                print_row(row)
                if row['status'] != 'ok':
                    alive.remove(mode)
                    if row.get('detail'):
                        print(f'  {row["detail"]}')
                elif save:
                    outputs[mode] = torch.load(save)
                if args.csv:  # Rewritten after every row.
                    _load_gat_conv_benchmark().write_csv(args.csv, rows)
            if i == 0:
                diffs = check_agreement(outputs, args.atol)
                print('agreement at the smallest size (max abs diff): ' +
                      (', '.join(f'{k} {v:.2g}' for k, v in diffs.items())
                       or 'nothing to compare'))
            if not alive:
                break
    if args.csv:
        print(f'wrote {args.csv}')
    return rows, diffs


if __name__ == '__main__':
    main()
