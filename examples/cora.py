"""Reproduces the GAT paper (Velickovic et al., 2018) on Planetoid Cora with
pyg_gat_ext.GATConv: two layers (8 heads x 8 hidden units with ELU, then
one output head), dropout 0.6 on the inputs and on the attention, Adam with
lr 0.005 and weight decay 5e-4, early stopping on the validation loss.

Runs offline from a folder holding <dataset>/raw/ Planetoid files:

    python examples/cora.py --root ../shared/data/Planetoid

The raw files are copied to a temporary folder first, so nothing is ever
written next to them. --compare trains PyG's GATConv on the same seeds and
prints one table (test accuracy, time per epoch, peak memory); --plot DIR
writes attention figures (pyg_gat_ext.visualize) of the trained model as
PNG files.
"""
# The docstring above is also the text of --help: plain text, no reST.
import argparse
import copy
import os
import os.path as osp
import shutil
import statistics
import sys
import tempfile
import time
from contextlib import nullcontext
from typing import NamedTuple, Optional, Tuple

import torch
import torch.nn.functional as F
import torch_geometric
import torch_geometric.transforms as T
from torch_geometric.datasets import Planetoid

from pyg_gat_ext.memory import peak_memory
from pyg_gat_ext.nn.functional import dropout

ENV_ROOT = 'PYG_GAT_EXT_DATA'
IMPLS = {
    'ext': 'pyg_gat_ext.GATConv',
    'pyg': 'torch_geometric.nn.GATConv',
}


#: The raw files' extensions, as in PyG's Planetoid.raw_file_names:
#: <root>/<Name>/raw/ind.<name>.<ext>.
RAW_EXTS = ['x', 'tx', 'allx', 'y', 'ty', 'ally', 'graph', 'test.index']


class DatasetNotFound(FileNotFoundError):
    r"""The raw Planetoid files are neither in the root given nor
    downloadable; the message says where to put them."""


def default_root():
    r"""The folder that PyG downloads Planetoid into when no root is
    given: ``Planetoid/`` in PyG's home folder (``$PYG_HOME``, else
    ``~/.cache/pyg``)."""
    return osp.join(torch_geometric.get_home_dir(), 'Planetoid')


def _raw_names(name):
    return [f'ind.{name.lower()}.{ext}' for ext in RAW_EXTS]


def _missing_raw(root, name):
    raw = osp.join(root, name, 'raw')
    return [f for f in _raw_names(name) if not osp.isfile(osp.join(raw, f))]


def _not_found(name, what):
    return DatasetNotFound(
        f'{what}.\nGive the folder holding the raw Planetoid files with '
        f"--root DIR or ${ENV_ROOT}=DIR; PyG's Planetoid reads "
        f'DIR/{name}/raw/' + ', '.join(_raw_names(name)) + '.')


def _download(root, name):
    # PyG's own download into its default folder (the online path). On
    # failure, the folders it created are removed again, partly
    # downloaded files with them.
    created, path = None, osp.join(root, name, 'raw')
    while not osp.exists(path):  # The topmost folder PyG would create.
        created, path = path, osp.dirname(path)
    try:
        return Planetoid(root, name, transform=T.NormalizeFeatures())
    except Exception as e:
        if not _missing_raw(root, name):
            raise  # Downloaded: the error is not the download's.
        if created is not None:
            shutil.rmtree(created, ignore_errors=True)
        reason = (str(e).splitlines() or [''])[0] or type(e).__name__
        raise _not_found(name, f"Could not download Planetoid '{name}' "
                         f'into {root} ({reason})') from e


def load_dataset(name, root=None):
    r"""Loads Planetoid :obj:`name` from :obj:`root` (else the environment
    variable ``PYG_GAT_EXT_DATA``, else PyG's default download folder,
    downloading it there if needed). A root that holds the raw files is
    copied to a temporary folder so that Planetoid's ``processed/`` files
    are never written into it. Raises :class:`DatasetNotFound` (with what
    to do) if the raw files are neither there nor downloadable."""
    root = root or os.environ.get(ENV_ROOT)
    if root is None:
        return _download(default_root(), name)
    raw = osp.join(root, name, 'raw')
    missing = _missing_raw(root, name)
    if len(missing) == len(RAW_EXTS):
        raise _not_found(name, f"No raw Planetoid files for '{name}' in "
                         f'{raw}')
    if missing:
        raise _not_found(name, f"Incomplete raw Planetoid files for "
                         f"'{name}' in {raw} (missing: {', '.join(missing)})")
    with tempfile.TemporaryDirectory(prefix='pyg_gat_ext_') as tmp:
        shutil.copytree(raw, osp.join(tmp, name, 'raw'))
        # The dataset is held in memory: the copy can go once it is loaded.
        return Planetoid(tmp, name, transform=T.NormalizeFeatures())


class GAT(torch.nn.Module):
    def __init__(self, conv_cls, in_channels, hidden_channels, out_channels,
                 heads=8, dropout=0.6):
        super().__init__()
        self.dropout = dropout
        self.conv1 = conv_cls(in_channels, hidden_channels, heads=heads,
                              dropout=dropout)
        self.conv2 = conv_cls(hidden_channels * heads, out_channels, heads=1,
                              concat=False, dropout=dropout)

    def forward(self, x, edge_index):
        # pyg_gat_ext's dropout: torch's, with a counter-based mask (most of
        # the step's time with torch's `bernoulli_`), for either layer.
        x = dropout(x, p=self.dropout, training=self.training)
        x = F.elu(self.conv1(x, edge_index))
        x = dropout(x, p=self.dropout, training=self.training)
        return self.conv2(x, edge_index)

    @torch.no_grad()
    def attention(self, x, edge_index):
        r"""The attention weights of both layers in evaluation mode, as
        :obj:`[(edge_index, alpha), (edge_index, alpha)]`."""
        self.eval()
        h, att1 = self.conv1(x, edge_index, return_attention_weights=True)
        _, att2 = self.conv2(F.elu(h), edge_index,
                             return_attention_weights=True)
        return [att1, att2]


def conv_class(impl):
    if impl == 'pyg':
        from torch_geometric.nn import GATConv
    else:
        from pyg_gat_ext import GATConv
    return GATConv


class Result(NamedTuple):
    acc: float  # Test accuracy at the epoch of the lowest validation loss.
    ms_per_epoch: float  # Median time of a training step (forward+backward).
    peak_mib: Optional[float]  # Peak memory of one epoch (train + eval).
    epochs: int  # Epochs run before early stopping.
    model: torch.nn.Module  # With the weights of the lowest validation loss.
    times: Tuple[float, ...]  # Seconds of each training step.


class _Counter:
    # The fallback progress bar without tqdm: one line redrawn on stderr.
    def __init__(self, total, desc, disable):
        self.total, self.desc, self.n, self.postfix = total, desc, 0, ''
        self.disable = disable

    def update(self, n=1):
        self.n += n
        if not self.disable:
            sys.stderr.write(f'\r{self.desc}: {self.n}/{self.total} '
                             f'{self.postfix}')
            sys.stderr.flush()

    def set_postfix_str(self, postfix, refresh=True):
        self.postfix = postfix

    def write(self, msg):
        if not self.disable:
            sys.stderr.write('\r\033[K')  # Clear the bar's line.
        print(msg)

    def close(self):
        if not self.disable:
            sys.stderr.write('\r\033[K')
            sys.stderr.flush()


def progress_bar(total, desc, enabled=True):
    r"""A progress bar over :obj:`total` epochs on stderr: tqdm's if it is
    installed, else a plain counter. It is drawn only when stderr is a
    terminal (tqdm's :obj:`disable=None`), so logs and tests get none."""
    try:
        from tqdm import tqdm
    except ImportError:
        return _Counter(total, desc, not (enabled and sys.stderr.isatty()))
    return tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True,
                disable=None if enabled else True)


class Trainer:
    r"""Trains one model an epoch at a time on its own random stream, so
    that several can train in lockstep (:func:`train`) and still give what
    each gives alone. Early stopping on the validation loss."""
    def __init__(self, data, num_classes, impl='ext', seed=0, patience=100,
                 device='cpu'):
        self.data, self.impl, self.seed = data, impl, seed
        self.patience, self.device = patience, torch.device(device)
        torch.manual_seed(seed)
        model = GAT(conv_class(impl), data.num_features, 8, num_classes)
        self.model = model.to(self.device)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=0.005,
                                          weight_decay=5e-4)
        self.rng = self._get_rng()
        self.epoch, self.bad_epochs, self.times = 0, 0, []
        self.best_val_loss, self.best_test_acc = float('inf'), 0.0
        self.best_state, self.peak_mib = None, None
        self.loss = self.val_loss = self.test_acc = float('nan')

    def _get_rng(self):
        if self.device.type == 'cuda':
            return torch.get_rng_state(), torch.cuda.get_rng_state(
                self.device)
        return torch.get_rng_state(), None

    def _set_rng(self, rng):
        torch.set_rng_state(rng[0])
        if rng[1] is not None:
            torch.cuda.set_rng_state(rng[1], self.device)

    @property
    def stopped(self):
        return self.bad_epochs >= self.patience

    def step(self, measure=False):
        r"""One epoch: a timed training step, then evaluation. With
        :obj:`measure`, records the peak memory of both (resetting the
        allocator's state slows the next steps: measure once)."""
        data, model = self.data, self.model
        self._set_rng(self.rng)
        with peak_memory(self.device) if measure else nullcontext() as mem:
            start = time.perf_counter()
            model.train()
            self.optimizer.zero_grad()
            out = model(data.x, data.edge_index)
            loss = F.cross_entropy(out[data.train_mask],
                                   data.y[data.train_mask])
            loss.backward()
            self.optimizer.step()
            if self.device.type == 'cuda':
                torch.cuda.synchronize(self.device)
            self.times.append(time.perf_counter() - start)

            model.eval()
            with torch.no_grad():
                out = model(data.x, data.edge_index)
        self.rng = self._get_rng()
        if measure:
            self.peak_mib = mem.mib
        self.epoch += 1
        self.loss = loss.item()
        self.val_loss = F.cross_entropy(out[data.val_mask],
                                        data.y[data.val_mask]).item()
        pred = out.argmax(dim=-1)
        test_acc = (pred[data.test_mask] == data.y[data.test_mask]).float()
        self.test_acc = test_acc.mean().item()
        if self.val_loss < self.best_val_loss:
            self.best_val_loss = self.val_loss
            self.best_test_acc = self.test_acc
            self.best_state = copy.deepcopy(model.state_dict())
            self.bad_epochs = 0
        else:
            self.bad_epochs += 1

    def result(self):
        r"""The :class:`Result`, the model restored to the weights of the
        lowest validation loss."""
        if self.best_state is not None:  # None if every loss was NaN.
            self.model.load_state_dict(self.best_state)
        return Result(self.best_test_acc, 1000 * statistics.median(self.times),
                      self.peak_mib, self.epoch, self.model,
                      tuple(self.times))


def train(trainers, epochs=1000, verbose=False, progress=True):
    r"""Trains :obj:`trainers` in lockstep, one epoch of each in turn (the
    order alternating), until each stops early or :obj:`epochs` have run.
    Timings taken this way see the same load on a shared machine. The
    peak memory is measured in the second epoch (the first loads kernels
    and warms caches). Returns their :class:`Result` objects."""
    desc = ', '.join(f'{t.impl} seed {t.seed}' for t in trainers)
    bar = progress_bar(epochs, desc, progress)
    for epoch in range(1, epochs + 1):
        active = [t for t in trainers if not t.stopped]
        if not active:
            break
        for t in active if epoch % 2 else active[::-1]:
            t.step(measure=epoch == min(2, epochs))
        bar.set_postfix_str(' '.join(f'{t.impl} val {t.val_loss:.3f}'
                                     for t in trainers),
                            refresh=False)  # Drawn by update().
        bar.update()
        if verbose and epoch % 50 == 0:
            for t in active:
                bar.write(f'  {t.impl} epoch {epoch:4d}  loss {t.loss:.4f}  '
                          f'val loss {t.val_loss:.4f}  test acc '
                          f'{t.test_acc:.4f}')
    bar.close()
    return [t.result() for t in trainers]


def run(data, num_classes, impl='ext', seed=0, epochs=1000, patience=100,
        device='cpu', verbose=False, progress=True):
    r"""Trains one model and returns its :class:`Result`: the test accuracy
    at the epoch of the lowest validation loss (and the model with those
    weights), the median time of a training step, and the peak memory of
    the second epoch (its training step and evaluation)."""
    trainer = Trainer(data, num_classes, impl, seed, patience, device)
    return train([trainer], epochs, verbose, progress)[0]


def default_node(data):
    r"""A node to draw with :obj:`--plot`: the first test node with 6 to 10
    neighbours (else the first node with any)."""
    degree = torch.bincount(data.edge_index[1], minlength=data.num_nodes)
    for mask in (data.test_mask & (degree >= 6) & (degree <= 10),
                 degree > 0):
        if bool(mask.any()):
            return int(mask.nonzero()[0])
    raise ValueError('the graph has no edges')


def plot(model, data, out_dir, node=None):
    r"""Writes the attention figures of a trained :class:`GAT` as PNG
    files into :obj:`out_dir` and returns their paths: the neighbourhood of
    :obj:`node` with the first layer's heads, and the attention-entropy
    histograms of both layers."""
    from pyg_gat_ext import visualize

    node = default_node(data) if node is None else node
    os.makedirs(out_dir, exist_ok=True)
    (ei1, alpha1), (ei2, alpha2) = model.attention(data.x, data.edge_index)
    n, y = data.num_nodes, data.y.cpu()
    figures = {
        f'attention_node{node}.png': visualize.plot_neighbourhood(
            node, ei1.cpu(), alpha1.cpu(), num_nodes=n, y=y),
        'entropy_conv1.png': visualize.plot_entropy_histograms(
            ei1.cpu(), alpha1.cpu(), num_nodes=n),
        'entropy_conv2.png': visualize.plot_entropy_histograms(
            ei2.cpu(), alpha2.cpu(), num_nodes=n),
    }
    figures['entropy_conv1.png'].suptitle('layer 1: attention entropy per '
                                          'node')
    figures['entropy_conv2.png'].suptitle('layer 2')
    paths = []
    for name, fig in figures.items():
        paths.append(osp.join(out_dir, name))
        fig.savefig(paths[-1], dpi=90)
    return paths


def _mean_std(values):
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return statistics.mean(values), std


def paired_ms(results):
    r"""Per implementation, the time per epoch of each seed over only the
    epochs that all implementations trained (in lockstep, so under the
    same load): the median training step of those epochs."""
    out = {impl: [] for impl in results}
    for runs in zip(*results.values(), strict=True):
        n = min(r.epochs for r in runs)
        for impl, r in zip(results, runs, strict=True):
            out[impl].append(1000 * statistics.median(r.times[:n]))
    return out


def summary_table(results):
    r"""One table row per implementation: test accuracy (mean ± std over
    seeds), time per epoch (:func:`paired_ms`, median over seeds) and peak
    memory (maximum over seeds)."""
    header = (f'{"impl":<5} {"GATConv":<27} {"test accuracy":>15} '
              f'{"ms/epoch":>9} {"peak MiB":>9}')
    lines = [header, '-' * len(header)]
    ms = paired_ms(results)
    for impl, runs in results.items():
        mean, std = _mean_std([r.acc for r in runs])
        mems = [r.peak_mib for r in runs if r.peak_mib is not None]
        mem = f'{max(mems):.1f}' if mems else 'n/a'
        acc = f'{100 * mean:.2f} ± {100 * std:.2f} %'
        lines.append(f'{impl:<5} {IMPLS[impl]:<27} {acc:>15} '
                     f'{statistics.median(ms[impl]):>9.1f} {mem:>9}')
    return '\n'.join(lines)


def main(argv=None):
    r"""Runs the example; returns the test accuracy of each seed, or with
    :obj:`--compare` a dictionary mapping :obj:`'ext'` and :obj:`'pyg'` to
    the :class:`Result` of each seed."""
    parser = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--dataset', default='Cora',
                        choices=['Cora', 'CiteSeer'])
    parser.add_argument('--root', default=None,
                        help='folder holding <dataset>/raw/ Planetoid files '
                        f'(default: ${ENV_ROOT}, else PyG\'s download folder)')
    parser.add_argument('--impl', default='ext', choices=list(IMPLS),
                        help=', '.join(f"'{k}': {v}" for k, v in
                                       IMPLS.items()))
    parser.add_argument('--compare', action='store_true',
                        help='train both implementations on the same seeds '
                        'and print one table (overrides --impl)')
    parser.add_argument('--seeds', type=int, default=1)
    parser.add_argument('--epochs', type=int, default=1000)
    parser.add_argument('--patience', type=int, default=100)
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--plot', metavar='DIR', default=None,
                        help='write attention figures (PNG) of the trained '
                        'model (the first seed) into DIR')
    parser.add_argument('--node', type=int, default=None,
                        help='the node whose neighbourhood --plot draws '
                        '(default: the first test node with 6 to 10 '
                        'neighbours)')
    parser.add_argument('--no-progress', dest='progress',
                        action='store_false',
                        help='no progress bar (there is none anyway when '
                        'stderr is not a terminal)')
    args = parser.parse_args(argv)
    if args.seeds < 1 or args.epochs < 1:
        parser.error('--seeds and --epochs must be at least 1')
    if args.plot is not None:
        try:
            import matplotlib  # noqa: F401
            import networkx  # noqa: F401
        except ImportError as e:
            parser.error(f"--plot needs matplotlib and networkx ({e}): "
                         f"pip install matplotlib networkx (or, from the "
                         f"checkout, pip install '.[viz]')")

    try:
        dataset = load_dataset(args.dataset, args.root)
    except DatasetNotFound as e:
        parser.exit(2, f'{parser.prog}: error: {e}\n')
    data = dataset[0].to(args.device)
    impls = list(IMPLS) if args.compare else [args.impl]
    results = {impl: [] for impl in impls}
    for seed in range(args.seeds):
        # With --compare, both train in lockstep (see `train`).
        trainers = [
            Trainer(data, dataset.num_classes, impl, seed, args.patience,
                    args.device) for impl in impls
        ]
        runs = train(trainers, args.epochs, verbose=args.seeds == 1,
                     progress=args.progress)
        for impl, result in zip(impls, runs, strict=True):
            mem = 'n/a' if result.peak_mib is None else (
                f'{result.peak_mib:.1f} MiB')
            print(f'{impl} seed {seed}: test accuracy '
                  f'{100 * result.acc:.2f} %, {result.epochs} epochs, '
                  f'{result.ms_per_epoch:.1f} ms per epoch, peak memory '
                  f'{mem}')
            results[impl].append(result)

    if args.compare:
        print(f'\n{args.dataset}, {args.seeds} seed(s), {args.device}, '
              f'{torch.get_num_threads()} thread(s):')
        print(summary_table(results))
        ext, pyg = results['ext'], results['pyg']
        ms = paired_ms(results)
        speed = statistics.median(
            p / e for p, e in zip(ms['pyg'], ms['ext'], strict=True))
        line = f'ours is {speed:.2f}x as fast per epoch as PyG'
        if all(r.peak_mib for r in ext + pyg):
            ratio = (max(r.peak_mib for r in ext) /
                     max(r.peak_mib for r in pyg))
            line += f' and needs {ratio:.2f}x its peak memory'
        print(line)
        print('(ms/epoch: median training step over the epochs both trained, '
              'in lockstep; peak memory: of one epoch, training step and '
              'evaluation)')
    else:
        accs = [r.acc for r in results[args.impl]]
        mean, std = _mean_std(accs)
        ms = statistics.median(r.ms_per_epoch for r in results[args.impl])
        print(f'{args.dataset} ({args.impl}): test accuracy '
              f'{100 * mean:.2f} ± {100 * std:.2f} % over {len(accs)} '
              f'seed(s), {ms:.1f} ms per epoch')

    if args.plot is not None:
        model = results[impls[0]][0].model
        for path in plot(model, data, args.plot, args.node):
            print(f'wrote {path}')
    return results if args.compare else [r.acc for r in results[args.impl]]


if __name__ == '__main__':
    main()
