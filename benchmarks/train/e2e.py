r"""End-to-end training benchmarks: what a PyG user's training code gets
from pyg_gat_ext, eager and under torch.compile, against PyG's GATConv with
the same weights, in one run.

Workloads:
  cora       the GAT paper's Cora model (examples/cora.py: 2 layers, 8 heads
             x 8 with ELU, then 1 output head; input, hidden and attention
             dropout 0.6; Adam lr 0.005, weight decay 5e-4), full batch
  minibatch  the same 2-layer model (8 heads x 8, dropout 0.6, Adam) on
             NeighborLoader mini-batches (num_neighbors [10, 10], 1024 seed
             nodes, loss on the seeds) of a random graph (200k nodes, 3.2M
             edges, 128 features, 16 classes); the batches are sampled
             before timing and each step takes the next (a new edge_index)
  gat_model  PyG's own torch_geometric.nn.models.GAT(128, 64, num_layers=2,
             out_channels=16, heads=8, v2=False, dropout=0.6) on the same
             mini-batches, built after pyg_gat_ext.patch(dropout=True) for
             ours and after unpatch() for PyG's

Phases: train (forward, loss, backward, optimizer step) and infer (eval
mode, no_grad forward). Providers: pyg (PyG's GATConv, torch's dropout),
pyg_compile (the same under torch.compile; dynamic=True for mini-batches),
ours (pyg_gat_ext.GATConv and pyg_gat_ext.nn.functional.dropout: what
patch(dropout=True) gives), ours_compile. Every step of a provider runs
with torch.nn.functional.dropout bound as for that provider (patched for
ours, torch's for PyG). Before timing, each workload checks that ours and
PyG give the same outputs in eval mode (atol 1e-5), and raises if not.

The providers run interleaved (rep 1 of each, then rep 2, ...), after
--warmup untimed calls each; compile_s is the time of those warm-up calls
(for the compile providers, the compilation; for eager ones, the first
calls' overhead), graph_breaks the graph breaks torch.compile met while
compiling, compiles_timed the number of graphs compiled during the timed
reps (0 unless torch.compile recompiles; else the status says so, and
--where status=ok leaves the row out of the plot). Times are the median and
the minimum over the reps; peak memory is that of one more step
(pyg_gat_ext.memory.peak_memory: the growth of the peak RSS on CPU). A
provider that fails (e.g. torch.compile) gets an error row and the others
go on; one that passes torch._dynamo's recompile limit (8 graphs per
function, e.g. when every mini-batch size recompiles) fails rather than
running eagerly under its name.

    python benchmarks/train/e2e.py --csv benchmarks/results/train_cpu.csv
    python benchmarks/train/e2e.py --quick --csv /tmp/smoke.csv
    python benchmarks/train/e2e.py --workloads cora --providers pyg ours \
        --profile

The speed-up over PyG as grouped bars, one panel per phase:

    python benchmarks/plot.py benchmarks/results/train_cpu.csv \
        --where status=ok --x workload --y speedup_vs_pyg \
        --lines provider --panels phase --out docs/_static/train_cpu.png \
        --title "GAT training and inference on CPU: speed-up over PyG"

Cora's raw Planetoid files are read from --root (default:
$PYG_GAT_EXT_DATA, else ../shared/data/Planetoid next to the checkout if
it is there, else PyG's download folder), copied to a temporary folder
first (examples/cora.py's load_dataset).
"""
# The docstring above is also the text of --help: plain text, no reST.
import argparse
import gc
import importlib.util
import os
import os.path as osp
import platform
import statistics
import sys
import time
import traceback
from typing import NamedTuple, Optional, Union

import torch
import torch.nn.functional as F
import torch_geometric
from torch import Tensor

import pyg_gat_ext
from pyg_gat_ext.memory import peak_memory
from pyg_gat_ext.nn import functional
from pyg_gat_ext.ops import kernel_backend

ROOT = osp.join(osp.dirname(osp.abspath(__file__)), '..', '..')


def _load_script(folder, name):
    # examples/ and benchmarks/ are no packages: import a script by path.
    path = osp.join(ROOT, folder, f'{name}.py')
    spec = importlib.util.spec_from_file_location(f'_script_{name}', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


cora = _load_script('examples', 'cora')

WORKLOADS = ['cora', 'minibatch', 'gat_model']
PHASES = ['train', 'infer']
PROVIDERS = ['pyg', 'pyg_compile', 'ours', 'ours_compile']
#: Default repetitions per workload (--reps overrides them all).
REPS = {'cora': 20, 'minibatch': 10, 'gat_model': 10}
#: Tolerance of the eval-mode check of ours against PyG.
ATOL = 1e-5


class Batch(NamedTuple):
    x: Tensor
    edge_index: Tensor
    y: Tensor
    target: Union[Tensor, slice]  # The nodes of the loss: a mask or seeds.


class GAT(cora.GAT):
    r"""The Cora example's model (:obj:`conv_cls` layers, 8 heads x 8 with
    ELU, then one output head; attention dropout in both layers) with the
    input and hidden dropout passed in as :obj:`dropout_fn`: torch's for
    PyG, ours for pyg_gat_ext (the example uses ours for either)."""
    def __init__(self, conv_cls, dropout_fn, in_channels, hidden_channels,
                 out_channels, heads=8, dropout=0.6):
        super().__init__(conv_cls, in_channels, hidden_channels,
                         out_channels, heads, dropout)
        self.dropout_fn = dropout_fn

    def forward(self, x, edge_index):
        x = self.dropout_fn(x, p=self.dropout, training=self.training)
        x = F.elu(self.conv1(x, edge_index))
        x = self.dropout_fn(x, p=self.dropout, training=self.training)
        return self.conv2(x, edge_index)


def is_ours(provider):
    return provider.startswith('ours')


def set_dropout_state(ours):
    r"""Binds torch's dropout and PyG's GATConv names as :obj:`ours` needs:
    :func:`pyg_gat_ext.patch` with :obj:`dropout=True`, else
    :func:`pyg_gat_ext.unpatch`. PyG's GATConv calls
    ``torch.nn.functional.dropout`` on its attention weights, and PyG's
    models through :class:`torch.nn.Dropout`: a step must run in its
    provider's state."""
    if ours:
        pyg_gat_ext.patch(dropout=True)
    else:
        pyg_gat_ext.unpatch()
    expected = functional.dropout if ours else functional.torch_dropout
    if torch.nn.functional.dropout is not expected:
        raise RuntimeError(
            f'torch.nn.functional.dropout is {torch.nn.functional.dropout} '
            f'(expected {expected}): it was bound elsewhere')


def conv_class(ours):
    if ours:
        return pyg_gat_ext.GATConv
    return pyg_gat_ext.monkey_patch._pyg_class('GATConv')


def model_factory(workload, in_channels, num_classes):
    r"""A function building the workload's model for ours or PyG (in the
    matching patch state) and its optimizer."""
    def build(ours):
        set_dropout_state(ours)
        if workload == 'gat_model':
            from torch_geometric.nn.models import GAT as PyGGAT
            model = PyGGAT(in_channels, 64, num_layers=2,
                           out_channels=num_classes, heads=8, v2=False,
                           dropout=0.6)
            kinds = {type(m) for m in model.convs}
            if kinds != {conv_class(ours)}:
                raise RuntimeError(f'GAT(v2=False) built {kinds} in the '
                                   f'{"patched" if ours else "unpatched"} '
                                   f'state')
        else:
            dropout_fn = (functional.dropout
                          if ours else functional.torch_dropout)
            model = GAT(conv_class(ours), dropout_fn, in_channels, 8,
                        num_classes)
        return model

    def optimizer(model):
        if workload == 'cora':
            return torch.optim.Adam(model.parameters(), lr=0.005,
                                    weight_decay=5e-4)
        return torch.optim.Adam(model.parameters(), lr=0.005)

    return build, optimizer


def synthetic_graph(num_nodes, num_edges, num_features, num_classes,
                    seed=0):
    r"""A random graph (uniform sources and targets), features and
    labels."""
    from torch_geometric.data import Data
    g = torch.Generator().manual_seed(seed)
    edge_index = torch.randint(0, num_nodes, (2, num_edges), generator=g)
    x = torch.randn(num_nodes, num_features, generator=g)
    y = torch.randint(0, num_classes, (num_nodes, ), generator=g)
    return Data(x=x, edge_index=edge_index, y=y)


def sample_batches(data, batch_size, num_batches, num_neighbors, device,
                   seed=0):
    r"""The first :obj:`num_batches` mini-batches of a shuffled
    :class:`~torch_geometric.loader.NeighborLoader` epoch (cycling through
    the epoch if it has fewer), sampled ahead of timing."""
    from torch_geometric.loader import NeighborLoader
    loader = NeighborLoader(data, num_neighbors=num_neighbors,
                            batch_size=batch_size, shuffle=True)
    torch.manual_seed(seed)
    start = time.perf_counter()
    batches = []
    while len(batches) < num_batches:
        for b in loader:
            batches.append(Batch(b.x.to(device), b.edge_index.to(device),
                                 b.y.to(device), slice(0, b.batch_size)))
            if len(batches) == num_batches:
                break
    print(f'sampled {num_batches} mini-batches of {batch_size} seeds from '
          f'{data.num_nodes} nodes, {data.num_edges} edges in '
          f'{time.perf_counter() - start:.1f} s (untimed)', flush=True)
    return batches


def make_step(model, optimizer, phase):
    r"""One step on a :class:`Batch`: the training step or the no_grad
    eval-mode forward. Returns the output."""
    if phase == 'train':
        def step(b):
            model.train()
            optimizer.zero_grad(set_to_none=True)
            out = model(b.x, b.edge_index)
            loss = F.cross_entropy(out[b.target], b.y[b.target])
            loss.backward()
            optimizer.step()
            return out
    else:
        def step(b):
            model.eval()
            with torch.no_grad():
                return model(b.x, b.edge_index)
    return step


def check_outputs(pyg_model, ours_model, batch, atol=ATOL):
    r"""Raises :class:`AssertionError` unless the two models give the same
    eval-mode outputs on :obj:`batch` (the models must share weights).
    Returns the largest absolute difference."""
    outs = []
    for model, ours in ((pyg_model, False), (ours_model, True)):
        set_dropout_state(ours)
        model.eval()
        with torch.no_grad():
            outs.append(model(batch.x, batch.edge_index))
    torch.testing.assert_close(outs[1], outs[0], atol=atol, rtol=1e-5,
                               msg=lambda m: f'ours and PyG differ in eval '
                               f'mode with the same weights: {m}')
    return float((outs[1] - outs[0]).abs().max())


def _sync(device):
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def _compiled_graphs():
    from torch._dynamo.utils import counters
    return counters['stats']['unique_graphs']


def _graph_breaks():
    from torch._dynamo.utils import counters
    return sum(counters['graph_break'].values())


def _error(e):
    lines = str(e).strip().splitlines() or ['']
    return f'error: {type(e).__name__}: {lines[0][:200]}'


class Provider:
    r"""One provider's model, optimizer and state in a workload."""
    def __init__(self, name, model, optimizer):
        self.name, self.model, self.optimizer = name, model, optimizer
        self.ours = is_ours(name)
        self.error: Optional[str] = None

    def step_fn(self, phase):
        return make_step(self.model, self.optimizer, phase)


def build_providers(workload, providers, in_channels, num_classes, device,
                    check_batch):
    r"""The providers' models, all with the weights of PyG's model, after
    :func:`check_outputs` of eager ours against eager PyG."""
    build, optimizer = model_factory(workload, in_channels, num_classes)
    torch.manual_seed(0)
    state = build(False).state_dict()
    eager = {}
    for kind in ('pyg', 'ours'):
        model = build(kind == 'ours')
        model.load_state_dict(state)
        eager[kind] = model.to(device)
    diff = check_outputs(eager['pyg'], eager['ours'], check_batch)
    print(f'{workload}: ours matches PyG in eval mode (max abs diff '
          f'{diff:.1e})', flush=True)
    out = {}
    for name in providers:
        kind = 'ours' if is_ours(name) else 'pyg'
        model = build(kind == 'ours')
        model.load_state_dict(state)
        model = model.to(device)
        if name.endswith('_compile'):
            # Mini-batches change size every step: dynamic shapes, as PyG's
            # torch.compile guide recommends.
            model = torch.compile(model,
                                  dynamic=True if workload != 'cora' else None)
        out[name] = Provider(name, model, optimizer(model))
    return out, eager


def run_phase(workload, phase, providers, batches, warmup, reps, device,
              reference, profile=False):
    r"""Warm-up, then the interleaved timed reps of every provider; returns
    one row per provider. :obj:`reference` is eager PyG's eval-mode output
    on :obj:`batches[0]`."""
    rows = {}
    steps = {}
    for p in providers.values():
        row = rows[p.name] = dict(workload=workload, phase=phase,
                                  provider=p.name, status='ok')
        steps[p.name] = p.step_fn(phase)
        try:
            set_dropout_state(p.ours)
            breaks = _graph_breaks()
            start = time.perf_counter()
            for i in range(warmup):
                out = steps[p.name](batches[i])
                if i == 0 and phase == 'infer':
                    row['max_abs_diff'] = float(
                        (out - reference).abs().max())
            _sync(device)
            row['compile_s'] = round(time.perf_counter() - start, 2)
            if p.name.endswith('_compile'):
                row['graph_breaks'] = _graph_breaks() - breaks
        except Exception as e:  # Keep the others going; say why.
            p.error = row['status'] = _error(e)
            print(f'{workload} {phase} {p.name}: {p.error}', file=sys.stderr)
            traceback.print_exc(limit=3)
            del steps[p.name]
    times = {name: [] for name in steps}
    compiles = {name: 0 for name in steps}
    for r in range(reps):
        batch = batches[warmup + r]
        for name in list(steps):
            p = providers[name]
            set_dropout_state(p.ours)
            graphs = _compiled_graphs()
            try:
                start = time.perf_counter()
                steps[name](batch)
                _sync(device)
                times[name].append(1e3 * (time.perf_counter() - start))
            except Exception as e:
                p.error = rows[name]['status'] = (
                    f'{_error(e)} (rep {r + 1}, after {compiles[name]} '
                    f'recompiles in the timed reps)')
                print(f'{workload} {phase} {name}: {p.error}',
                      file=sys.stderr)
                del steps[name]
                continue
            compiles[name] += _compiled_graphs() - graphs
    for name, step in steps.items():
        row = rows[name]
        set_dropout_state(providers[name].ours)
        gc.collect()
        with peak_memory(device) as mem:
            step(batches[-1])
            _sync(device)
        row.update(median_ms=round(statistics.median(times[name]), 3),
                   min_ms=round(min(times[name]), 3), reps=reps,
                   warmup=warmup, compiles_timed=compiles[name],
                   peak_mib=None if mem.mib is None else round(mem.mib, 1))
        if compiles[name]:  # Its times include compilation.
            row['status'] = f'recompiled {compiles[name]} times while timed'
        if profile:
            print_profile(f'{workload} {phase} {name}', step, batches[-1])
    for base in ('pyg', 'pyg_compile'):
        ref = rows.get(base, {}).get('median_ms')
        for row in rows.values():
            if ref and row.get('median_ms'):
                row[f'speedup_vs_{base}'] = round(ref / row['median_ms'], 2)
    pyg_gat_ext.unpatch()
    return list(rows.values())


def run_workload(workload, phases, providers, batches, in_channels,
                 num_classes, warmup, reps, device, profile=False):
    r"""Checks ours against PyG, then runs each phase (inference first:
    every provider still has the shared weights, so its first output is
    compared with PyG's, :obj:`max_abs_diff`). Returns the rows."""
    # Compiled code is cached per code object (GATConv.forward, ...), not
    # per model: drop the last workload's, so that no function reaches
    # torch._dynamo's recompile limit and silently runs eagerly.
    torch._dynamo.reset()
    providers, eager = build_providers(workload, providers, in_channels,
                                       num_classes, device, batches[0])
    set_dropout_state(False)
    eager['pyg'].eval()
    with torch.no_grad():
        reference = eager['pyg'](batches[0].x, batches[0].edge_index)
    rows = []
    for phase in sorted(phases, key=PHASES[::-1].index):
        rows += run_phase(workload, phase, providers, batches, warmup, reps,
                          device, reference, profile)
    return rows


def batch_sizes(batches):
    r"""The mean numbers of nodes and edges of the mini-batches."""
    return dict(
        batch_nodes=round(statistics.mean(b.x.size(0) for b in batches)),
        batch_edges=round(statistics.mean(b.edge_index.size(1)
                                          for b in batches)))


def print_profile(title, step, batch, row_limit=15):
    r"""Prints the top ops of one step by self CPU time."""
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step(batch)
    print(f'\n--- profile: {title} (one step) ---')
    print(prof.key_averages().table(sort_by='self_cpu_time_total',
                                    row_limit=row_limit))


def default_root():
    r"""$PYG_GAT_EXT_DATA, else ../shared/data/Planetoid next to the
    checkout if it holds Cora, else :obj:`None` (the example's default:
    PyG's download folder)."""
    if os.environ.get(cora.ENV_ROOT):
        return os.environ[cora.ENV_ROOT]
    shared = osp.normpath(osp.join(ROOT, '..', 'shared', 'data',
                                   'Planetoid'))
    return shared if osp.isdir(osp.join(shared, 'Cora', 'raw')) else None


def format_table(rows):
    cols = [('workload', 9, 's'), ('phase', 5, 's'), ('provider', 12, 's'),
            ('median_ms', 10, '.2f'), ('min_ms', 10, '.2f'),
            ('compile_s', 9, '.2f'), ('peak_mib', 8, '.1f'),
            ('speedup_vs_pyg', 8, '.2f'), ('speedup_vs_pyg_compile', 8,
                                           '.2f')]
    heads = ['workload', 'phase', 'provider', 'median ms', 'min ms',
             'warmup s', 'peak MiB', 'vs pyg', 'vs comp.']
    line = ' '.join(f'{h:<{w}}' if f == 's' else f'{h:>{w}}'
                    for h, (_, w, f) in zip(heads, cols, strict=True))
    lines = [line, '-' * len(line)]
    for row in rows:
        cells = []
        for key, width, fmt in cols:
            v = row.get(key)
            if fmt == 's':
                cells.append(f'{v:<{width}}')
            elif v is None:
                cells.append(f'{"-":>{width}}')
            else:
                cells.append(f'{v:>{width}{fmt}}')
        text = ' '.join(cells)
        if row['status'] != 'ok':
            text = ' '.join(cells[:3]) + ' ' + row['status']
        lines.append(text)
    return '\n'.join(lines)


def main(argv=None):
    r"""Runs the benchmark; returns the rows (also written to
    :obj:`--csv`)."""
    parser = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--workloads', nargs='+', default=WORKLOADS,
                        choices=WORKLOADS)
    parser.add_argument('--phases', nargs='+', default=PHASES,
                        choices=PHASES)
    parser.add_argument('--providers', nargs='+', default=PROVIDERS,
                        choices=PROVIDERS)
    parser.add_argument('--reps', type=int, default=None,
                        help='timed steps per provider (default: '
                        + ', '.join(f'{k} {v}' for k, v in REPS.items())
                        + '; 2 with --quick)')
    parser.add_argument('--warmup', type=int, default=None,
                        help='untimed calls first (default: 3; 1 with '
                        '--quick)')
    parser.add_argument('--nodes', type=int, default=None,
                        help='mini-batch graph nodes (default: 200000; '
                        '2000 with --quick)')
    parser.add_argument('--edges', type=int, default=None,
                        help='mini-batch graph edges (default: 3200000; '
                        '20000 with --quick)')
    parser.add_argument('--batch-size', type=int, default=None,
                        help='seed nodes per mini-batch (default: 1024; 64 '
                        'with --quick)')
    parser.add_argument('--features', type=int, default=128)
    parser.add_argument('--classes', type=int, default=16)
    parser.add_argument('--num-neighbors', type=int, nargs='+',
                        default=[10, 10])
    parser.add_argument('--root', default=None,
                        help='folder holding Cora/raw/ Planetoid files '
                        f'(default: ${cora.ENV_ROOT}, else '
                        '../shared/data/Planetoid, else PyG\'s download '
                        'folder)')
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--quick', action='store_true',
                        help='tiny sizes, 2 reps, 1 warm-up: a smoke test')
    parser.add_argument('--profile', action='store_true',
                        help='print a torch.profiler table of one step per '
                        'provider (top ops by self CPU time)')
    parser.add_argument('--csv', default='benchmarks/results/train_cpu.csv',
                        help="the CSV to write ('' for none; default: "
                        '%(default)s)')
    args = parser.parse_args(argv)
    quick = args.quick
    warmup = args.warmup if args.warmup is not None else (1 if quick else 3)
    nodes = args.nodes or (2000 if quick else 200_000)
    edges = args.edges or (20_000 if quick else 3_200_000)
    batch_size = args.batch_size or (64 if quick else 1024)
    if warmup < 1 or (args.reps is not None and args.reps < 1):
        parser.error('--warmup and --reps must be at least 1')
    device = torch.device(args.device)

    def reps_of(workload):
        return args.reps or (2 if quick else REPS[workload])

    cora_data = None
    if 'cora' in args.workloads:
        try:
            dataset = cora.load_dataset('Cora', args.root or default_root())
        except cora.DatasetNotFound as e:
            parser.exit(2, f'{parser.prog}: error: {e}\n')
        cora_data = (dataset[0].to(device), dataset.num_features,
                     dataset.num_classes)

    info = dict(machine=platform.processor() or platform.machine(),
                threads=torch.get_num_threads(), torch=torch.__version__,
                torch_geometric=torch_geometric.__version__,
                backend=kernel_backend(device), device=str(device))
    print(f'{info["machine"]} | {info["threads"]} threads | torch '
          f'{info["torch"]} | PyG {info["torch_geometric"]} | ops on '
          f'{device}: {info["backend"]}', flush=True)

    mini = None
    rows = []
    # A function past torch._dynamo's recompile limit would silently run
    # eagerly under a compile provider's name: make it that provider's error.
    fail_on_limit = torch._dynamo.config.fail_on_recompile_limit_hit
    torch._dynamo.config.fail_on_recompile_limit_hit = True
    try:
        for workload in args.workloads:
            reps = reps_of(workload)
            if workload == 'cora':
                data, in_channels, num_classes = cora_data
                batches = [Batch(data.x, data.edge_index, data.y,
                                 data.train_mask)] * (warmup + reps + 1)
                sizes = dict(nodes=data.num_nodes, edges=data.num_edges)
            else:
                if mini is None or len(mini) < warmup + reps + 1:
                    mini = sample_batches(
                        synthetic_graph(nodes, edges, args.features,
                                        args.classes), batch_size,
                        warmup + reps + 1, args.num_neighbors, device)
                batches = mini[:warmup + reps + 1]
                in_channels, num_classes = args.features, args.classes
                sizes = dict(nodes=nodes, edges=edges, batch_size=batch_size,
                             **batch_sizes(batches))
            new = run_workload(workload, args.phases, args.providers,
                               batches, in_channels, num_classes, warmup,
                               reps, device, args.profile)
            rows += [{**row, **sizes, **info} for row in new]
    finally:  # Even after a failed check: torch's dropout again.
        pyg_gat_ext.unpatch()
        torch._dynamo.config.fail_on_recompile_limit_hit = fail_on_limit

    print()
    print(format_table(rows))
    if args.csv:
        first = ['workload', 'phase', 'provider', 'status', 'median_ms',
                 'min_ms', 'reps', 'warmup', 'compile_s', 'compiles_timed',
                 'graph_breaks', 'peak_mib', 'speedup_vs_pyg',
                 'speedup_vs_pyg_compile', 'max_abs_diff']
        _load_script(osp.join('benchmarks', 'nn'), 'gat_conv').write_csv(
            args.csv, rows, first)
        print(f'wrote {args.csv}')
    return rows


if __name__ == '__main__':
    main()
