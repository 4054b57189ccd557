r"""Trains a 2-layer GAT full-batch on a synthetic graph with
:class:`pyg_gat_ext.GATConv` and with :class:`torch_geometric.nn.GATConv`,
each in its own process, and reports per implementation whether it fits,
the peak memory of a training epoch and the time per epoch.

On a GPU the default graph (2M nodes, 100M edges, 8 heads x 8 channels)
makes PyG's layer run out of memory in :obj:`message`, where it forms the
:obj:`[E, heads, channels]` messages, while the fused layer fits::

    python benchmarks/nn/train_large.py --device cuda
    python benchmarks/nn/train_large.py --device cpu --nodes 100000 \
        --edges 1600000

On CPU the peak memory is the growth of the process's peak RSS.
"""
import argparse
import json
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

DEFAULTS = {'cpu': (100_000, 1_600_000), 'cuda': (2_000_000, 100_000_000)}


class GAT(torch.nn.Module):
    def __init__(self, conv_cls, in_channels, hidden, heads, classes):
        super().__init__()
        self.conv1 = conv_cls(in_channels, hidden, heads=heads)
        self.conv2 = conv_cls(hidden * heads, classes, heads=1,
                              concat=False)

    def forward(self, x, edge_index):
        return self.conv2(F.elu(self.conv1(x, edge_index)), edge_index)


def train(args):
    r"""One implementation, in this process: prints a JSON line."""
    from pyg_gat_ext import GATConv
    from pyg_gat_ext.memory import peak_memory
    if args.impl == 'pyg':
        from torch_geometric.nn import GATConv
    device = torch.device(args.device)
    g = torch.Generator().manual_seed(0)
    edge_index = torch.randint(0, args.nodes, (2, args.edges),
                               generator=g).to(device)
    x = torch.randn(args.nodes, args.in_channels, generator=g).to(device)
    y = torch.randint(0, args.classes, (args.nodes, ), generator=g)
    y = y.to(device)
    torch.manual_seed(0)
    model = GAT(GATConv, args.in_channels, args.hidden, args.heads,
                args.classes).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.005)

    def epoch():
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x, edge_index), y)
        loss.backward()
        optimizer.step()
        return loss.item()

    result = dict(impl=args.impl, nodes=args.nodes, edges=args.edges,
                  heads=args.heads, hidden=args.hidden)
    try:
        epoch()  # Warm-up: kernels, graph cache, optimizer state.
        with peak_memory(device) as mem:
            epoch()
        times = []
        for _ in range(args.epochs):
            start = time.perf_counter()
            loss = epoch()
            if device.type == 'cuda':
                torch.cuda.synchronize()
            times.append(1e3 * (time.perf_counter() - start))
        result.update(status='ok', loss=round(loss, 4),
                      ms_per_epoch=round(min(times), 1),
                      peak_mib=None if mem.mib is None else round(mem.mib))
        if device.type == 'cuda':
            result['max_allocated_mib'] = round(
                torch.cuda.max_memory_allocated(device) / 2**20)
    except torch.OutOfMemoryError:
        result.update(status='out of memory')
    print(json.dumps(result), flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--device', default='cuda'
                        if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--nodes', type=int, default=None)
    parser.add_argument('--edges', type=int, default=None)
    parser.add_argument('--in-channels', type=int, default=128)
    parser.add_argument('--hidden', type=int, default=8)
    parser.add_argument('--heads', type=int, default=8)
    parser.add_argument('--classes', type=int, default=16)
    parser.add_argument('--epochs', type=int, default=3)
    parser.add_argument('--impl', choices=['ext', 'pyg'], default=None,
                        help='run one implementation in this process')
    parser.add_argument('--timeout', type=float, default=None,
                        help='seconds each implementation may run')
    parser.add_argument('--csv', default=None)
    args = parser.parse_args(argv)
    device_type = torch.device(args.device).type
    nodes, edges = DEFAULTS.get(device_type, DEFAULTS['cpu'])
    args.nodes = args.nodes or nodes
    args.edges = args.edges or edges
    if args.impl is not None:
        return train(args)

    print(f'2-layer GAT, {args.nodes} nodes, {args.edges} edges, '
          f'{args.in_channels} features, {args.heads} heads x '
          f'{args.hidden}, on {args.device}')
    rows = []
    for impl in ['ext', 'pyg']:
        cmd = [sys.executable, __file__, '--impl', impl] + [
            f'--{k.replace("_", "-")}={v}' for k, v in vars(args).items()
            if k not in ('impl', 'csv', 'timeout')
        ]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True,
                                  timeout=args.timeout)
        except subprocess.TimeoutExpired:
            # One implementation stuck or slow must not cost the other.
            rows.append(dict(impl=impl, status=f'timed out after '
                             f'{args.timeout} s'))
            continue
        lines = [line for line in proc.stdout.splitlines()
                 if line.startswith('{')]
        if proc.returncode != 0 or not lines:
            # Killed by the OS (CPU out of memory) or another failure.
            rows.append(dict(impl=impl, status=f'failed (exit '
                             f'{proc.returncode}): '
                             f'{proc.stderr.strip()[-300:]}'))
        else:
            rows.append(json.loads(lines[-1]))
    print(f'{"impl":<5} {"status":<15} {"ms/epoch":>9} {"peak MiB":>9}')
    for row in rows:
        print(f'{row["impl"]:<5} {row["status"][:15]:<15} '
              f'{row.get("ms_per_epoch", "-")!s:>9} '
              f'{row.get("peak_mib", "-")!s:>9}')
        if not row['status'].startswith(('ok', 'out of memory')):
            print(row['status'])
    if args.csv:
        from gat_conv import write_csv  # The script beside this one.
        write_csv(args.csv, rows)
        print(f'wrote {args.csv}')
    return rows


if __name__ == '__main__':
    main()
