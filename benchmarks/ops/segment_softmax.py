r"""Benchmarks :func:`pyg_gat_ext.ops.segment_softmax` against
:func:`torch_geometric.utils.softmax` and ``torch_scatter``'s
``scatter_softmax``, forward and forward+backward, on uniform and power-law
segment lengths. Writes a CSV; ratios are taken within one run, from the
minimum (and the median) over repetitions.

    python benchmarks/ops/segment_softmax.py --device cpu --csv out.csv
"""
import argparse
import csv
import platform
import statistics
import time

import torch
from torch_geometric.utils import softmax as pyg_softmax

from pyg_gat_ext.ops import kernel_backend, segment_softmax


def make_index(kind, num_entries, num_segments, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    if kind == 'uniform':
        index = torch.randint(0, num_segments, (num_entries, ), generator=g)
    else:  # Power-law (Zipf-like) segment lengths, shuffled.
        w = torch.arange(1, num_segments + 1, dtype=torch.float).pow(-1.2)
        index = torch.multinomial(w, num_entries, True, generator=g)
    return index.to(device)


def providers():
    out = {
        'ours': lambda s, i, n: segment_softmax(s, i, num_nodes=n),
        'pyg': lambda s, i, n: pyg_softmax(s, i, num_nodes=n),
    }
    try:
        from torch_scatter.composite import scatter_softmax
        out['torch_scatter'] = lambda s, i, n: scatter_softmax(
            s, i, dim=0, dim_size=n)
    except ImportError:
        pass
    return out


def measure(fn, src, index, num_segments, mode, device, reps):
    grad = torch.randn_like(src)

    def step():
        if mode == 'forward':
            with torch.no_grad():
                fn(src, index, num_segments)
        else:
            x = src.detach().requires_grad_()
            fn(x, index, num_segments).backward(grad)

    step()  # Warm-up (and first-use kernel build).
    if device.type == 'cuda':
        import triton.testing
        torch.cuda.reset_peak_memory_stats()
        ms = triton.testing.do_bench(step, rep=200)
        return ms, ms, torch.cuda.max_memory_allocated() / 2**20
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        step()
        times.append(1e3 * (time.perf_counter() - start))
    # The minimum is the least disturbed by other load on a shared machine
    # (as `timeit` advises); the median is reported beside it.
    return min(times), statistics.median(times), float('nan')


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--entries', type=int, nargs='+',
                        default=[10_000, 100_000, 1_000_000, 2_000_000,
                                 10_000_000])
    parser.add_argument('--heads', type=int, nargs='+', default=[1, 8])
    parser.add_argument('--kinds', nargs='+', default=['uniform', 'power_law'])
    parser.add_argument('--modes', nargs='+',
                        default=['forward', 'forward_backward'])
    parser.add_argument('--avg-degree', type=int, default=16)
    parser.add_argument('--dtype', default='float32')
    parser.add_argument('--reps', type=int, default=5)
    parser.add_argument('--csv', default='segment_softmax.csv')
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    print(f'# {platform.processor() or platform.machine()}, '
          f'{torch.get_num_threads()} threads, torch {torch.__version__}, '
          f'device {device}, ours on {kernel_backend(device)}')
    rows = []
    for num_entries in args.entries:
        num_segments = max(1, num_entries // args.avg_degree)
        for kind in args.kinds:
            index = make_index(kind, num_entries, num_segments, device)
            for heads in args.heads:
                src = torch.randn(num_entries, heads, dtype=dtype,
                                  device=device)
                for mode in args.modes:
                    result = {}
                    for name, fn in providers().items():
                        result[name] = measure(fn, src, index, num_segments,
                                               mode, device, args.reps)
                    base, base_median, _ = result['pyg']
                    for name, (ms, median, mem) in result.items():
                        rows.append(dict(
                            entries=num_entries, segments=num_segments,
                            kind=kind, heads=heads, mode=mode, provider=name,
                            min_ms=round(ms, 3), median_ms=round(median, 3),
                            peak_mib=round(mem, 1),
                            speedup_vs_pyg=round(base / ms, 2),
                            median_speedup_vs_pyg=round(base_median / median,
                                                        2)))
                    ours, ours_median, _ = result['ours']
                    print(f'E={num_entries:>9,} {kind:>9} H={heads} '
                          f'{mode:>16}: ' + '  '.join(
                              f'{n} {ms:8.2f} ms'
                              for n, (ms, _, _) in result.items()) +
                          f'  speed-up {base / ours:.2f}x (median '
                          f'{base_median / ours_median:.2f}x)')
    with open(args.csv, 'w', newline='') as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f'# wrote {args.csv}')


if __name__ == '__main__':
    main()
