r"""Benchmarks one :class:`pyg_gat_ext.GATConv` layer against
:class:`torch_geometric.nn.GATConv` (or, with ``--layer gatv2``, our
:class:`~pyg_gat_ext.GATv2Conv` against PyG's ``GATv2Conv``; same weights),
forward and forward+backward, on synthetic graphs with uniform and
power-law in-degrees: time and peak memory side by side in one run, as
ratios, written to a CSV.

    python benchmarks/nn/gat_conv.py --device cpu --csv out.csv
    python benchmarks/nn/gat_conv.py --layer gatv2 --csv out.csv
    python benchmarks/nn/gat_conv.py --device cuda --nodes 2000000 \
        --edges 50000000 --configs 8x8:uniform --csv out.csv

A step that runs out of device memory (PyG's layer, at sizes where its
:obj:`[E, heads, channels]` messages do not fit) is recorded as ``oom``
and the benchmark goes on; the CSV is rewritten after every row.

Times are the minimum (and median) over repetitions on CPU and
``triton.testing.do_bench`` on CUDA. Peak memory is what one step needs
beyond what was allocated before it (:func:`pyg_gat_ext.memory.peak_memory`:
the CUDA allocator's peak, or the growth of the process's peak RSS on CPU);
the graph's cached CSR/CSC grouping, built once per graph, is reported
apart. The fused op's time alone (kernel_ms) is also set against its
memory-bandwidth bound: the bytes it must move at least, at the measured
copy bandwidth of the device's memory (fraction_of_bound = bound / time),
and against plain gathers of the same rows by ``torch.index_select``
(gather_ms; kernel_vs_gather = kernel time / gather time): the rows of
random neighbours come from memory far below the copy bandwidth.
"""
import argparse
import csv
import gc
import os
import os.path as osp
import platform
import statistics
import time

import torch
import torch_geometric.nn as pyg_nn

from pyg_gat_ext import GATConv, GATv2Conv
from pyg_gat_ext.memory import peak_memory
from pyg_gat_ext.ops import cached_gat_graph, kernel_backend
from pyg_gat_ext.ops.attention import graph_cache


def make_graph(kind, num_nodes, num_edges, device, seed=0):
    r"""Random sources; targets uniform or with power-law (Zipf-like,
    exponent 1.2, shuffled) in-degrees."""
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(0, num_nodes, (num_edges, ), generator=g)
    if kind == 'uniform':
        dst = torch.randint(0, num_nodes, (num_edges, ), generator=g)
    else:
        w = torch.arange(1, num_nodes + 1, dtype=torch.float).pow(-1.2)
        dst = torch.randperm(num_nodes, generator=g)[torch.multinomial(
            w, num_edges, True, generator=g)]
    return torch.stack([src, dst]).to(device)


#: The layers ``--layer`` compares: (PyG's class, ours).
LAYERS = {
    'gat': (pyg_nn.GATConv, GATConv),
    'gatv2': (pyg_nn.GATv2Conv, GATv2Conv),
}


def make_layers(in_channels, heads, channels, device, dtype, layer='gat'):
    torch.manual_seed(0)
    ref_cls, our_cls = LAYERS[layer]
    ref = ref_cls(in_channels, channels, heads=heads)
    ours = our_cls(in_channels, channels, heads=heads)
    ours.load_state_dict(ref.state_dict())
    return {'ours': ours.to(device, dtype), 'pyg': ref.to(device, dtype)}


def step_fn(conv, x, edge_index, mode):
    def step():
        if mode == 'forward':
            with torch.no_grad():
                conv(x, edge_index)
        else:
            conv.zero_grad(set_to_none=True)
            conv(x, edge_index).sum().backward()

    return step


def time_ms(step, device, reps):
    if device.type == 'cuda':
        import triton.testing
        ms = triton.testing.do_bench(step, warmup=50, rep=300)
        return ms, ms
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        step()
        times.append(1e3 * (time.perf_counter() - start))
    # The minimum is the least disturbed by other load on a shared machine
    # (as `timeit` advises); the median is reported beside it.
    return min(times), statistics.median(times)


def copy_bandwidth(device, reps=5):
    r"""Copy bandwidth of :obj:`device`'s memory in bytes/s (read + write),
    the fastest of :obj:`reps` copies of 256 MiB. The source is written
    first: untouched pages all map the kernel's one zero page, whose reads
    hit the cache (that had measured 25 to 40 % more than memory gives)."""
    a = torch.full((2**28, ), 7, dtype=torch.uint8, device=device)
    b = torch.empty_like(a)
    ms, _ = time_ms(lambda: b.copy_(a), device, reps)
    return 2 * a.numel() / (ms * 1e-3)


def kernel_bound(x, edge_index, conv, device, mode, reps=5):
    r"""Time of the fused op alone, its bandwidth bound and the time of
    plain gathers of its rows (:func:`gather_ms`), in ms. The bound: the bytes
    it must move at least are each edge's index entries and gathered source
    row of :obj:`H * C` features (forward), plus the gathered target
    gradient row (backward; GATv2 also gathers the source row again, GAT
    reads its forward's two saved sums per target instead), and the
    node-level inputs and outputs."""
    from pyg_gat_ext.ops import gat_attention, gatv2_attention
    num_nodes, num_edges = x.size(0), edge_index.size(1)
    graph = cached_gat_graph(edge_index, num_nodes, num_nodes)
    shape = (-1, conv.heads, conv.out_channels)
    with torch.no_grad():
        if isinstance(conv, GATv2Conv):  # Target rows instead of scores.
            h = conv.lin_l(x).view(shape)
            inputs = (conv.lin_r(x).view(shape), conv.att.detach())
            op = gatv2_attention
        else:
            h = conv.lin(x).view(shape)
            inputs = ((h * conv.att_src).sum(-1), (h * conv.att_dst).sum(-1))
            op = gat_attention
    row = h[0].numel() * h.element_size()
    index = graph.col.element_size() * 2  # Neighbour and edge id.
    node_bytes = num_nodes * (2 * row + 3 * conv.heads * 4)
    if isinstance(conv, GATv2Conv):
        node_bytes += num_nodes * row  # Reading (and its gradient) x_dst.
    h.requires_grad_(mode != 'forward')

    def run():
        out = op(h, *inputs, graph, num_loops=num_nodes,
                 remove_self_loops=True).out
        if mode != 'forward':
            out.backward(torch.ones_like(out))

    run()
    ms, _ = time_ms(run, device, reps)
    passes = 1
    if mode != 'forward' and isinstance(conv, GATv2Conv):
        passes = 3
    elif mode != 'forward':  # GAT: its two sums written, then read.
        passes = 2
        node_bytes += num_nodes * 4 * row
    need = passes * num_edges * (row + index) + node_bytes
    return ms, 1e3 * need / copy_bandwidth(device), gather_ms(
        h, graph, passes, device, reps)


#: Rows per index_select of gather_ms: its output buffer stays small.
GATHER_CHUNK = 1 << 16


def gather_ms(h, graph, passes, device, reps=5):
    r"""Time of :obj:`passes` plain gathers of the rows that the fused op
    gathers: :obj:`h`'s rows in the order of the grouping by target (the
    forward), then, for each pass of the backward, rows of the same size in
    the order of the grouping by source, then by target again, each by
    :func:`torch.index_select` into a reused buffer of :obj:`GATHER_CHUNK`
    rows. Random rows are fetched far below the copy bandwidth; this is the
    practical floor that the copy-bandwidth bound leaves out (index_select
    also writes the rows, which the op does not)."""
    rows = h.detach().reshape(h.size(0), -1)
    order = [graph.col, graph.row, graph.col][:passes]
    buf = rows.new_empty(min(GATHER_CHUNK, graph.col.numel()), rows.size(1))

    def run():
        for index in order:
            for chunk in index.split(GATHER_CHUNK):
                torch.index_select(rows, 0, chunk, out=buf[:chunk.numel()])

    run()
    return time_ms(run, device, reps)[0]


#: What a CSV cell holds for a step that ran out of device memory.
OOM = 'oom'


def ratio(num, den):
    r"""``num / den`` rounded, or :obj:`None` where either is missing or
    :obj:`OOM`."""
    if not isinstance(num, (int, float)) or not isinstance(den, (int, float)):
        return None
    return round(num / den, 2) if den else None


def free_memory(conv, device):
    r"""Releases what a step left behind (after an out-of-memory error:
    gradients, cached allocator blocks) before the next one."""
    if conv is not None:
        conv.zero_grad(set_to_none=True)
    gc.collect()
    if device.type == 'cuda':
        torch.cuda.empty_cache()


def write_csv(path, rows, first=()):
    r"""Writes :obj:`rows` (dictionaries) as a CSV, with the columns
    :obj:`first` leading and every other key after them in order of first
    appearance; the benchmarks in ``benchmarks/train/`` write through it
    too."""
    fields = list(dict.fromkeys([*first, *(k for row in rows for k in row)]))
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    with open(path, 'w', newline='') as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--layer', default='gat', choices=sorted(LAYERS))
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--dtype', default='float32')
    parser.add_argument('--nodes', type=int, default=100_000)
    parser.add_argument('--edges', type=int, default=1_600_000)
    parser.add_argument('--in-channels', type=int, default=128)
    parser.add_argument(
        '--configs', nargs='+', default=['8x8:uniform', '4x64:power_law'],
        help='HEADSxCHANNELS:GRAPH entries, GRAPH uniform or power_law')
    parser.add_argument('--modes', nargs='+',
                        default=['forward', 'forward+backward'])
    parser.add_argument('--reps', type=int, default=5)
    parser.add_argument('--csv', default=None)
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    print(f'{platform.processor() or platform.machine()} | '
          f'{torch.get_num_threads()} threads | torch {torch.__version__} | '
          f'ops on {device}: {kernel_backend(device)} | {args.dtype}')
    rows = []
    for config in args.configs:
        shape, kind = config.split(':')
        heads, channels = (int(v) for v in shape.split('x'))
        edge_index = make_graph(kind, args.nodes, args.edges, device)
        x = torch.randn(args.nodes, args.in_channels, device=device,
                        dtype=dtype)
        layers = make_layers(args.in_channels, heads, channels, device,
                             dtype, args.layer)
        graph_cache.clear()
        with peak_memory(device) as cache_mem:
            cached_gat_graph(edge_index, args.nodes, args.nodes)
        for mode in args.modes:
            row = dict(layer=args.layer, device=str(device), dtype=args.dtype,
                       nodes=args.nodes, edges=args.edges,
                       in_channels=args.in_channels, heads=heads,
                       channels=channels, graph=kind, mode=mode)
            for name, conv in layers.items():
                step = step_fn(conv, x, edge_index, mode)
                try:
                    step()  # Warm-up: kernel build, graph cache.
                    gc.collect()
                    with peak_memory(device) as mem:
                        step()
                    best, median = time_ms(step, device, args.reps)
                except torch.OutOfMemoryError:
                    # PyG's layer forms [E, heads, channels] messages and
                    # may not fit where the fused layer does: a result.
                    best = median = None
                row[f'{name}_ms'] = OOM if best is None else round(best, 3)
                row[f'{name}_median_ms'] = (OOM if median is None else
                                            round(median, 3))
                row[f'{name}_peak_mib'] = (OOM if best is None else
                                           None if mem.mib is None else
                                           round(mem.mib, 1))
                if best is None:
                    free_memory(conv, device)
            row['graph_cache_mib'] = (None if cache_mem.mib is None else
                                      round(cache_mem.mib, 1))
            row['speedup'] = ratio(row['pyg_ms'], row['ours_ms'])
            row['speedup_median'] = ratio(row['pyg_median_ms'],
                                          row['ours_median_ms'])
            row['memory_ratio'] = ratio(row['pyg_peak_mib'],
                                        row['ours_peak_mib'])
            # The fused op alone against its bandwidth bound:
            try:
                kernel_ms, bound_ms, gathers_ms = kernel_bound(
                    x, edge_index, layers['ours'], device, mode,
                    args.reps)
            except torch.OutOfMemoryError:
                kernel_ms = None
                free_memory(layers['ours'], device)
            row['kernel_ms'] = (OOM if kernel_ms is None else
                                round(kernel_ms, 3))
            row['bandwidth_bound_ms'] = (OOM if kernel_ms is None else
                                         round(bound_ms, 3))
            row['fraction_of_bound'] = ratio(row['bandwidth_bound_ms'],
                                             row['kernel_ms'])
            row['gather_ms'] = (OOM if kernel_ms is None else
                                round(gathers_ms, 3))
            row['kernel_vs_gather'] = ratio(row['kernel_ms'],
                                            row['gather_ms'])
            print(', '.join(f'{k}={v}' for k, v in row.items()
                            if k not in ('device', 'dtype')), flush=True)
            rows.append(row)
            if args.csv:  # After every row: a run cut short keeps its rows.
                write_csv(args.csv, rows)
        del layers, x, edge_index
        free_memory(None, device)

    if args.csv:
        print(f'wrote {args.csv}')
    return rows


if __name__ == '__main__':
    main()
