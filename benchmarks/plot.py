r"""Plots a benchmark CSV from ``benchmarks/results/``: one column (e.g. the
speed-up over PyG) against a size column, one line per configuration, one
panel per value of a column (and per plotted column). Writes a PNG. An x
column holding text (e.g. the mode) gives grouped bars instead of lines.

The segment-softmax sweep (one row per provider; ours against PyG)::

    python benchmarks/plot.py benchmarks/results/segment_softmax_cpu.csv \
        --where provider=ours --out docs/_static/segment_softmax_cpu.png

A benchmark with one row per configuration and ``speedup`` and
``memory_ratio`` columns, as ``benchmarks/nn/gat_conv.py`` writes: against
the number of nodes, or as bars per mode::

    python benchmarks/plot.py benchmarks/results/gat_conv_cpu.csv \
        --x nodes --y speedup memory_ratio --lines graph heads --panels mode
    python benchmarks/plot.py benchmarks/results/gat_conv_cpu.csv \
        --x mode --y speedup memory_ratio --lines graph heads channels \
        --panels '' --out docs/_static/gat_conv_cpu.png
"""
import argparse
import csv
import math
import os.path as osp
from collections import defaultdict


def _value(text):
    # Numbers as numbers (for sorting and the axes), the rest as text.
    try:
        number = float(text)
    except ValueError:
        return text
    return int(number) if number.is_integer() else number


def read_rows(path):
    r"""The rows of a CSV file as dictionaries of numbers and strings."""
    with open(path, newline='') as f:
        return [{k: _value(v) for k, v in row.items()}
                for row in csv.DictReader(f)]


def select(rows, where):
    r"""The rows whose columns equal every :obj:`'column=value'` in
    :obj:`where`."""
    for condition in where:
        column, sep, value = condition.partition('=')
        if not sep:
            raise ValueError(f"--where needs 'column=value' (got "
                             f"'{condition}')")
        _check_columns(rows, [column])
        rows = [r for r in rows if str(r[column]) == value]
        if not rows:
            raise ValueError(f"no rows with {column}={value}")
    return rows


def _check_columns(rows, columns):
    if not rows:
        raise ValueError('the CSV file has no rows')
    missing = [c for c in columns if c not in rows[0]]
    if missing:
        raise ValueError(f"no column(s) {missing} in the CSV file; it has "
                         f"{list(rows[0])}")


def _label(keys, values):
    return ', '.join(f'{k}={v}' for k, v in zip(keys, values, strict=True))


def plot(rows, x, ys, lines=(), panels=None, baseline=1.0, title=None,
         logx=None):
    r"""Draws :obj:`ys` against :obj:`x`: one panel per (column of
    :obj:`ys`, value of :obj:`panels`), one line per combination of the
    :obj:`lines` columns. Returns the :class:`matplotlib.figure.Figure`.
    Every point must be one row: narrow the rows first (:func:`select`)."""
    from matplotlib.figure import Figure

    _check_columns(rows, [x, *ys, *lines] + ([panels] if panels else []))
    panel_values = sorted({r[panels] for r in rows}, key=str) if panels else [
        None
    ]
    keys = [(y, p) for y in ys for p in panel_values]
    ncols = min(len(keys), 3)
    nrows = math.ceil(len(keys) / ncols)
    fig = Figure(figsize=(4.6 * ncols, 3.4 * nrows), layout='constrained')
    xs = [r[x] for r in rows]
    # Text in the x column (e.g. a mode): grouped bars instead of lines.
    categorical = not all(isinstance(v, (int, float)) for v in xs)
    categories = list(dict.fromkeys(str(v) for v in xs))
    if categorical:
        rows = [{**r, x: str(r[x])} for r in rows]
    if logx is None:  # Log scale for sizes spanning two decades or more.
        logx = (not categorical and min(xs) > 0
                and max(xs) >= 100 * min(xs))
    for i, (y, p) in enumerate(keys):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        series = defaultdict(dict)
        for r in rows:
            if panels and r[panels] != p:
                continue
            line = tuple(r[c] for c in lines)
            if r[x] in series[line]:
                raise ValueError(
                    f'several rows for {x}={r[x]}, '
                    f'{_label(lines, line) or "one line"}'
                    f'{f", {panels}={p}" if panels else ""}: pick one with '
                    f'--where or split them with --lines or --panels')
            series[line][r[x]] = r[y]
        ordered = sorted(series.items(), key=str)
        for k, (line, points) in enumerate(ordered):
            label = _label(lines, line) or y
            if categorical:  # Grouped bars, one group per category.
                width = 0.8 / len(ordered)
                ax.bar([categories.index(v) - 0.4 + (k + 0.5) * width
                        for v in points], list(points.values()), width,
                       label=label)
                continue
            px = sorted(points)
            ax.plot(px, [points[v] for v in px], marker='o', markersize=3,
                    label=label)
        if categorical:
            ax.set_xticks(range(len(categories)), categories)
        if baseline is not None:
            ax.axhline(baseline, color='black', linewidth=0.8,
                       linestyle='--', label=f'{baseline:g} (PyG)')
        if logx:
            ax.set_xscale('log')
        if all(isinstance(r[y], (int, float)) and r[y] >= 0 for r in rows):
            ax.set_ylim(bottom=0)
        ax.set_xlabel(x)
        ax.set_ylabel(y)
        ax.set_title(f'{panels}={p}' if panels else y, fontsize=10)
        ax.grid(True, alpha=0.3)
        if categorical:  # Bars fill the axes: the legend goes below.
            ax.legend(fontsize=7, loc='upper center',
                      bbox_to_anchor=(0.5, -0.22))
        else:
            ax.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    return fig


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('csv', help='a CSV file written by a benchmark')
    parser.add_argument('--x', default='entries',
                        help='the size column (default: entries)')
    parser.add_argument('--y', nargs='+', default=['speedup_vs_pyg'],
                        help='the column(s) to plot, a panel row each '
                        '(default: speedup_vs_pyg)')
    parser.add_argument('--lines', nargs='*', default=['kind', 'heads'],
                        help='columns that tell the lines of a panel apart '
                        '(default: kind heads)')
    parser.add_argument('--panels', default='mode',
                        help="a column with one panel per value ('' for "
                        'none; default: mode)')
    parser.add_argument('--where', nargs='*', default=[],
                        metavar='COLUMN=VALUE',
                        help='keep only the rows with these values')
    parser.add_argument('--baseline', type=float, default=1.0,
                        help='a horizontal reference line (default: 1, '
                        "PyG's value of a ratio); nan for none")
    parser.add_argument('--title', default=None,
                        help='the figure title (default: the file name)')
    parser.add_argument('--out', default=None,
                        help='the PNG to write (default: the CSV path with '
                        '.png)')
    parser.add_argument('--dpi', type=int, default=100)
    args = parser.parse_args(argv)

    rows = select(read_rows(args.csv), args.where)
    title = args.title if args.title is not None else osp.basename(args.csv)
    baseline = None if math.isnan(args.baseline) else args.baseline
    fig = plot(rows, args.x, args.y, args.lines, args.panels or None,
               baseline, title)
    out = args.out or osp.splitext(args.csv)[0] + '.png'
    fig.savefig(out, dpi=args.dpi, bbox_inches='tight')
    print(f'wrote {out}')
    return out


if __name__ == '__main__':
    main()
