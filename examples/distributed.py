"""Trains PyG's GAT model (torch_geometric.nn.models.GAT with v2=False, its
GATConv layers pyg_gat_ext's after pyg_gat_ext.patch(); --impl pyg keeps
PyG's) on NeighborLoader mini-batches with DistributedDataParallel, one
process per CPU core group or GPU:

    torchrun --nproc_per_node 2 examples/distributed.py --root DIR
    torchrun --nproc_per_node 2 examples/distributed.py --dataset synthetic

Each epoch, the training nodes are shuffled the same way on every rank
(seeded by --seed and the epoch) and split into one equal share per rank;
a rank trains on NeighborLoader batches of --batch-size seed nodes from its
share, so a step covers world size x --batch-size seed nodes, and DDP
averages the gradients. Only gradients are communicated. The neighbour
sampling of a batch is seeded by (--seed, epoch, rank, batch) and does not
touch the training's random stream; dropout draws differ between ranks
(torch.manual_seed(seed + rank)).

The training loss and accuracy in the log are all-reduced over the ranks.
Validation and test accuracy are computed full-batch on rank 0 after each
epoch (the other ranks wait) and broadcast. With --checkpoint PATH, rank 0
writes the unwrapped model's state_dict, the optimizer's and the epoch
there after each epoch. At the end, the parameters of all ranks are
compared (they must be identical).

The backend is gloo on CPU and NCCL on CUDA (--device auto takes CUDA if
available; LOCAL_RANK picks the GPU). Run without torchrun, it is one
process (a gloo group of one). Planetoid data is read offline from --root
(default: $PYG_GAT_EXT_DATA, else ../shared/data/Planetoid next to the
checkout, else PyG's download folder); --dataset synthetic trains on a
random graph of --nodes, --edges, --features and --classes instead, whose
labels depend on the features of a node and its neighbours.
"""
# The docstring above is also the text of --help: plain text, no reST.
import argparse
import copy
import hashlib
import importlib.util
import os
import os.path as osp
import time
from typing import Iterator, List, NamedTuple, Optional, Sequence, Tuple

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor
from torch.nn.parallel import DistributedDataParallel

import pyg_gat_ext

HERE = osp.dirname(osp.abspath(__file__))
IMPLS = {
    'ext': 'pyg_gat_ext.GATConv',
    'pyg': 'torch_geometric.nn.GATConv',
}


def _load_cora():
    # examples/ is no package: the Cora example's data loading, by path.
    spec = importlib.util.spec_from_file_location('_example_cora',
                                                  osp.join(HERE, 'cora.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


cora = _load_cora()


def default_root() -> Optional[str]:
    r"""``$PYG_GAT_EXT_DATA``, else ``../shared/data/Planetoid`` next to
    the checkout if it exists, else :obj:`None` (PyG's download
    folder)."""
    if os.environ.get(cora.ENV_ROOT):
        return os.environ[cora.ENV_ROOT]
    shared = osp.normpath(osp.join(HERE, '..', '..', 'shared', 'data',
                                   'Planetoid'))
    return shared if osp.isdir(shared) else None


class Context(NamedTuple):
    r"""Where this process stands in the job."""
    rank: int
    world_size: int
    device: torch.device
    backend: str
    owns_group: bool  # Whether :func:`init_distributed` created the group.


def init_distributed(device: str = 'auto') -> Context:
    r"""Joins the process group: the one already initialised, else the
    one torchrun describes in the environment (``RANK``, ``WORLD_SIZE``,
    ``MASTER_ADDR``, ``MASTER_PORT``), else a group of one in this process.
    gloo on CPU, NCCL on CUDA, where ``LOCAL_RANK`` picks the GPU."""
    if device == 'auto':
        device = 'cuda' if torch.cuda.is_available() else 'cpu'
    if device not in ('cpu', 'cuda'):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda' (got "
                         f"'{device}')")
    dev = torch.device('cpu')
    if device == 'cuda':
        dev = torch.device('cuda', int(os.environ.get('LOCAL_RANK', '0')))
        torch.cuda.set_device(dev)
    backend = 'nccl' if dev.type == 'cuda' else 'gloo'
    owns = not dist.is_initialized()
    if owns and 'WORLD_SIZE' in os.environ:
        dist.init_process_group(backend)  # env:// from torchrun.
    elif owns:
        dist.init_process_group(backend, store=dist.HashStore(), rank=0,
                                world_size=1)
    return Context(dist.get_rank(), dist.get_world_size(), dev,
                   dist.get_backend(), owns)


def stream_seed(*keys) -> int:
    r"""A 63-bit seed from any tuple of ints and strings, so that the
    streams of (seed, epoch, rank, batch) never collide."""
    digest = hashlib.sha256(repr(keys).encode()).digest()
    return int.from_bytes(digest[:8], 'little') >> 1


def synthetic_data(num_nodes: int, num_edges: int, num_features: int,
                   num_classes: int, seed: int = 0):
    r"""A random graph (uniform sources and targets) with Gaussian features
    and labels a GAT can learn: the class whose random direction the sum of
    a node's and its in-neighbours' features points to most. 60 / 20 / 20
    % of the nodes are training / validation / test nodes."""
    from torch_geometric.data import Data
    g = torch.Generator().manual_seed(seed)
    edge_index = torch.randint(0, num_nodes, (2, num_edges), generator=g)
    x = torch.randn(num_nodes, num_features, generator=g)
    agg = x.index_add(0, edge_index[1], x[edge_index[0]])
    y = (agg @ torch.randn(num_features, num_classes, generator=g)).argmax(1)
    perm = torch.randperm(num_nodes, generator=g)
    masks = [torch.zeros(num_nodes, dtype=torch.bool) for _ in range(3)]
    bounds = [0, int(0.6 * num_nodes), int(0.8 * num_nodes), num_nodes]
    for mask, lo, hi in zip(masks, bounds[:-1], bounds[1:], strict=True):
        mask[perm[lo:hi]] = True
    return Data(x=x, edge_index=edge_index, y=y, train_mask=masks[0],
                val_mask=masks[1], test_mask=masks[2])


def load_data(args) -> Tuple[object, int]:
    r"""The graph and its number of classes: Planetoid :obj:`args.dataset`
    from :obj:`args.root`, or the synthetic graph of :obj:`args`."""
    if args.dataset == 'synthetic':
        data = synthetic_data(args.nodes, args.edges, args.features,
                              args.classes, args.seed)
        return data, args.classes
    dataset = cora.load_dataset(args.dataset, args.root)
    return dataset[0], dataset.num_classes


def build_model(impl: str, in_channels: int, hidden_channels: int,
                out_channels: int, num_layers: int = 2, heads: int = 8,
                dropout: float = 0.5) -> torch.nn.Module:
    r"""PyG's :class:`~torch_geometric.nn.models.GAT` (:obj:`v2=False`)
    with pyg_gat_ext's layers (:obj:`impl='ext'`, after
    :func:`pyg_gat_ext.patch`) or PyG's (:obj:`'pyg'`, after
    :func:`pyg_gat_ext.unpatch`); :obj:`hidden_channels` is the width of
    all heads together, :obj:`dropout` that of the features and the
    attention. Draws the initial weights from torch's generator."""
    if impl == 'ext':
        pyg_gat_ext.patch()
    elif impl == 'pyg':
        pyg_gat_ext.unpatch()
    else:
        raise ValueError(f"impl must be one of {list(IMPLS)} (got '{impl}')")
    from torch_geometric.nn.models import GAT
    model = GAT(in_channels, hidden_channels, num_layers, out_channels,
                dropout=dropout, heads=heads, v2=False)
    ours = all(isinstance(conv, pyg_gat_ext.GATConv) for conv in model.convs)
    if ours != (impl == 'ext'):
        raise RuntimeError(f"GAT(v2=False) built {type(model.convs[0])} for "
                           f"impl '{impl}': GATConv is bound elsewhere")
    return model


def partition(train_idx: Tensor, rank: int, world_size: int, epoch: int,
              seed: int) -> Tensor:
    r"""This rank's share of :obj:`train_idx` in :obj:`epoch`: one shuffle
    drawn alike on every rank, cut into :obj:`world_size` equal shares
    (the last :obj:`len % world_size` nodes of the shuffle sit the epoch
    out), so that every rank runs the same number of equal batches: DDP
    needs one backward per rank per step, and equal batches make the mean
    of the ranks' losses the loss of the global batch."""
    g = torch.Generator().manual_seed(stream_seed(seed, 'shuffle', epoch))
    perm = train_idx[torch.randperm(train_idx.numel(), generator=g)]
    usable = world_size * (perm.numel() // world_size)
    return perm[:usable].tensor_split(world_size)[rank]


def epoch_batches(data, train_idx: Tensor, rank: int, world_size: int,
                  epoch: int, batch_size: int, num_neighbors: Sequence[int],
                  seed: int) -> Iterator:
    r"""The :class:`~torch_geometric.loader.NeighborLoader` batches of this
    rank in :obj:`epoch` (seed nodes first, :obj:`batch.batch_size` of
    them). Each batch is sampled on torch's generator seeded by
    (:obj:`seed`, epoch, rank, batch) and restored afterwards, so the
    batches depend on nothing else (any process can draw any rank's) and
    sampling leaves the training's random stream alone. Sampling runs in
    this process (:obj:`num_workers=0`)."""
    from torch_geometric.loader import NeighborLoader
    share = partition(train_idx, rank, world_size, epoch, seed)
    loader = NeighborLoader(data, num_neighbors=list(num_neighbors),
                            input_nodes=share, batch_size=batch_size,
                            shuffle=False)
    with torch.random.fork_rng(devices=[]):
        it = iter(loader)  # Creating the iterator draws a seed too.
    for i in range(len(loader)):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(stream_seed(seed, 'sample', epoch, rank, i))
            batch = next(it)
        yield batch


class StepResult(NamedTuple):
    loss: float  # Mean over the batches of their mean loss.
    correct: int  # Seed nodes predicted right, over all batches.
    count: int  # Seed nodes, over all batches.


def batch_loss(model: torch.nn.Module, batch) -> Tuple[Tensor, int, int]:
    r"""The mean cross-entropy of :obj:`model` on the seed nodes of
    :obj:`batch`, and how many of them it predicts right, of how many."""
    n = batch.batch_size
    out = model(batch.x, batch.edge_index)[:n]
    y = batch.y[:n]
    correct = int((out.argmax(dim=-1) == y).sum())
    return F.cross_entropy(out, y), correct, n


def train_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer,
               batches: List) -> StepResult:
    r"""One optimizer step on the mean of the losses of :obj:`batches`. A
    DDP rank passes its one batch (DDP allows one forward per backward)
    and DDP averages the gradients over the ranks; one process passing
    every rank's batch of a step takes the same step."""
    optimizer.zero_grad()
    losses, correct, count = [], 0, 0
    for batch in batches:
        loss, c, n = batch_loss(model, batch)
        losses.append(loss)
        correct, count = correct + c, count + n
    loss = torch.stack(losses).mean()
    loss.backward()
    optimizer.step()
    return StepResult(loss.item(), correct, count)


@torch.no_grad()
def evaluate(model: torch.nn.Module, data) -> Tuple[float, float]:
    r"""Full-batch validation and test accuracy of :obj:`model` (on one
    process)."""
    model.eval()
    pred = model(data.x, data.edge_index).argmax(dim=-1)
    accs = [float((pred[m] == data.y[m]).float().mean())
            for m in (data.val_mask, data.test_mask)]
    model.train()
    return accs[0], accs[1]


def parameters_in_sync(model: torch.nn.Module) -> bool:
    r"""Whether every rank holds exactly the same parameters: their
    element-wise maximum and minimum over the ranks agree (two
    all-reduces of the parameters)."""
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    high, low = flat.clone(), flat.clone()
    dist.all_reduce(high, op=dist.ReduceOp.MAX)
    dist.all_reduce(low, op=dist.ReduceOp.MIN)
    return bool(torch.equal(high, low))


def save_checkpoint(path: str, model: torch.nn.Module,
                    optimizer: torch.optim.Optimizer, epoch: int,
                    step: int) -> None:
    r"""Writes the unwrapped model's and the optimizer's state and the
    number of epochs done to :obj:`path` (whole, or not at all)."""
    tmp = f'{path}.tmp{os.getpid()}'
    torch.save({'model': model.state_dict(),
                'optimizer': optimizer.state_dict(), 'epoch': epoch,
                'step': step}, tmp)
    os.replace(tmp, path)


class Training(NamedTuple):
    r"""What a rank trains: the graph (features in the training dtype),
    its training nodes, the model and its optimizer."""
    data: object
    train_idx: Tensor
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer


def make_training(args, device: torch.device) -> Training:
    r"""The graph, model and optimizer of :obj:`args`, the model's initial
    weights drawn from :obj:`torch.manual_seed(args.seed)`: the same in
    every process."""
    dtype = getattr(torch, args.dtype)
    data, num_classes = load_data(args)
    data.x = data.x.to(dtype)
    train_idx = data.train_mask.nonzero().view(-1)
    torch.manual_seed(args.seed)
    model = build_model(args.impl, data.num_features, args.hidden,
                        num_classes, len(args.num_neighbors), args.heads,
                        args.dropout).to(device, dtype)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr,
                                 weight_decay=args.weight_decay)
    return Training(data, train_idx, model, optimizer)


def fit(args, ctx: Context) -> dict:
    r"""Trains as :func:`main` describes; returns the per-step losses of
    this rank (:obj:`'losses'`), the last validation and test accuracy,
    the epochs and steps run, the training steps per second (after the
    first step, the batches' sampling included) and the unwrapped
    model."""
    data, train_idx, model, optimizer = make_training(args, ctx.device)
    ddp = DistributedDataParallel(
        model, device_ids=[ctx.device] if ctx.device.type == 'cuda' else None)
    torch.manual_seed(args.seed + ctx.rank)  # Dropout draws differ per rank.
    # A shallow copy: `Data.to` moves in place, and the loaders sample from
    # the CPU graph.
    eval_data = copy.copy(data).to(ctx.device) if ctx.rank == 0 else None

    losses, times, step = [], [], 0  # Per step: loss, seconds.
    val_acc = test_acc = float('nan')
    epoch = 0
    ddp.train()
    while epoch < args.epochs and step != args.max_steps:
        totals = torch.zeros(3, dtype=torch.float64)  # loss x n, right, n.
        tick = start = time.perf_counter()
        for batch in epoch_batches(data, train_idx, ctx.rank,
                                   ctx.world_size, epoch, args.batch_size,
                                   args.num_neighbors, args.seed):
            result = train_step(ddp, optimizer, [batch.to(ctx.device)])
            losses.append(result.loss)
            totals += torch.tensor(
                [result.loss * result.count, result.correct, result.count],
                dtype=torch.float64)
            # The step's time, its batch's sampling included (`loss.item()`
            # waited for the device).
            now = time.perf_counter()
            times.append(now - tick)
            tick = now
            step += 1
            if step == args.max_steps:  # The same step on every rank.
                break
        seconds = tick - start
        epoch += 1
        totals = totals.to(ctx.device)  # NCCL reduces CUDA tensors only.
        dist.all_reduce(totals)
        accs = torch.full((2, ), float('nan'), dtype=torch.float64)
        if ctx.rank == 0:
            accs = torch.tensor(evaluate(model, eval_data),
                                dtype=torch.float64)
            if args.checkpoint:
                save_checkpoint(args.checkpoint, model, optimizer, epoch,
                                step)
        accs = accs.to(ctx.device)
        dist.broadcast(accs, src=0)
        val_acc, test_acc = accs.tolist()
        if ctx.rank == 0:
            loss, correct, count = totals.cpu().tolist()
            print(f'epoch {epoch:3d}  step {step:5d}  loss '
                  f'{loss / max(count, 1):.4f}  train acc '
                  f'{correct / max(count, 1):.4f}  val acc {val_acc:.4f}  '
                  f'test acc {test_acc:.4f}  ({seconds:.1f} s)', flush=True)

    in_sync = parameters_in_sync(model)
    if not in_sync:
        raise RuntimeError('the ranks ended with different parameters')
    # After the first step, which loads kernels and allocates DDP's buckets.
    steps_per_s = float('nan')
    if len(times) > 1:
        steps_per_s = (len(times) - 1) / sum(times[1:])
    if ctx.rank == 0:
        seeds = ctx.world_size * args.batch_size * steps_per_s
        print(f'{ctx.world_size} process(es) x {torch.get_num_threads()} '
              f'thread(s), {args.impl}: {step} steps, {steps_per_s:.2f} '
              f'steps/s after the first, {seeds:.0f} seed nodes/s; '
              f'parameters identical on '
              f'all {ctx.world_size} rank(s)', flush=True)
    return dict(losses=losses, val_acc=val_acc, test_acc=test_acc,
                epochs=epoch, steps=step, steps_per_s=steps_per_s,
                model=model)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--dataset', default='Cora',
                   choices=['Cora', 'CiteSeer', 'synthetic'])
    p.add_argument('--root', default=None,
                   help='folder holding <dataset>/raw/ Planetoid files '
                   f'(default: ${cora.ENV_ROOT}, else '
                   '../shared/data/Planetoid next to the checkout, else '
                   "PyG's download folder)")
    p.add_argument('--nodes', type=int, default=10000,
                   help='synthetic graph: nodes (default: 10000)')
    p.add_argument('--edges', type=int, default=100000,
                   help='synthetic graph: edges (default: 100000)')
    p.add_argument('--features', type=int, default=64,
                   help='synthetic graph: features (default: 64)')
    p.add_argument('--classes', type=int, default=8,
                   help='synthetic graph: classes (default: 8)')
    p.add_argument('--impl', default='ext', choices=list(IMPLS),
                   help=', '.join(f"'{k}': {v}" for k, v in IMPLS.items()))
    p.add_argument('--device', default='auto',
                   choices=['auto', 'cpu', 'cuda'])
    p.add_argument('--epochs', type=int, default=10)
    p.add_argument('--max-steps', type=int, default=None,
                   help='stop after this many steps (default: none)')
    p.add_argument('--batch-size', type=int, default=256,
                   help='seed nodes per batch and rank (default: 256)')
    p.add_argument('--num-neighbors', type=int, nargs='+', default=[10, 10],
                   help='neighbours sampled per layer; also the number of '
                   'layers (default: 10 10)')
    p.add_argument('--hidden', type=int, default=64,
                   help='hidden width, all heads together (default: 64)')
    p.add_argument('--heads', type=int, default=8)
    p.add_argument('--dropout', type=float, default=0.5,
                   help='feature and attention dropout (default: 0.5)')
    p.add_argument('--lr', type=float, default=0.005)
    p.add_argument('--weight-decay', type=float, default=5e-4)
    p.add_argument('--dtype', default='float32',
                   choices=['float32', 'float64'])
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--checkpoint', metavar='PATH', default=None,
                   help='rank 0 writes the model, optimizer and epoch here '
                   'after each epoch')
    return p


def main(argv=None) -> dict:
    r"""Runs the example in this process (one rank of the job); returns
    what :func:`fit` returns."""
    p = parser()
    args = p.parse_args(argv)
    if args.epochs < 1 or args.batch_size < 1 or (
            args.max_steps is not None and args.max_steps < 1):
        p.error('--epochs, --batch-size and --max-steps must be at least 1')
    if args.dataset != 'synthetic' and args.root is None:
        args.root = default_root()
    ctx = init_distributed(args.device)
    try:
        return fit(args, ctx)
    except cora.DatasetNotFound as e:
        p.exit(2, f'{p.prog}: error: {e}\n')
    finally:
        if ctx.owns_group:
            dist.destroy_process_group()


if __name__ == '__main__':
    main()
