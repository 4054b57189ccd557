r"""Reproduces the GAT paper (Velickovic et al., 2018) on Planetoid Cora with
:class:`pyg_gat_ext.GATConv`: two layers (8 heads x 8 hidden units with ELU,
then one output head), dropout 0.6 on the inputs and on the attention, Adam
with lr 0.005 and weight decay 5e-4, early stopping on the validation loss.

Runs offline from a folder holding ``<Name>/raw/`` Planetoid files::

    python examples/cora.py --root ../shared/data/Planetoid

The raw files are copied to a temporary folder first, so nothing is ever
written next to them.
"""
import argparse
import os
import os.path as osp
import shutil
import statistics
import tempfile
import time

import torch
import torch.nn.functional as F
import torch_geometric.transforms as T
from torch_geometric.datasets import Planetoid

ENV_ROOT = 'PYG_GAT_EXT_DATA'


def load_dataset(name, root=None):
    r"""Loads Planetoid :obj:`name` from :obj:`root` (else the environment
    variable ``PYG_GAT_EXT_DATA``, else PyG's default download folder).
    A root that already holds the raw files is copied to a temporary folder
    so that Planetoid's ``processed/`` files are never written into it."""
    root = root or os.environ.get(ENV_ROOT)
    if root is None:
        root = osp.join(osp.expanduser('~'), '.cache', 'pyg', 'Planetoid')
        return Planetoid(root, name, transform=T.NormalizeFeatures())
    raw = osp.join(root, name, 'raw')
    if not osp.isdir(raw):
        raise FileNotFoundError(f"No raw Planetoid files for '{name}' in "
                                f"'{raw}'")
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
        x = F.dropout(x, p=self.dropout, training=self.training)
        x = F.elu(self.conv1(x, edge_index))
        x = F.dropout(x, p=self.dropout, training=self.training)
        return self.conv2(x, edge_index)


def conv_class(impl):
    if impl == 'pyg':
        from torch_geometric.nn import GATConv
    else:
        from pyg_gat_ext import GATConv
    return GATConv


def run(data, num_classes, impl='ext', seed=0, epochs=1000, patience=100,
        device='cpu', verbose=False):
    r"""Trains one model and returns its test accuracy at the epoch of the
    lowest validation loss, and the mean time per training epoch."""
    torch.manual_seed(seed)
    model = GAT(conv_class(impl), data.num_features, 8, num_classes)
    model = model.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.005,
                                 weight_decay=5e-4)
    best_val_loss, best_test_acc, bad_epochs = float('inf'), 0.0, 0
    times = []
    for epoch in range(1, epochs + 1):
        start = time.perf_counter()
        model.train()
        optimizer.zero_grad()
        out = model(data.x, data.edge_index)
        loss = F.cross_entropy(out[data.train_mask], data.y[data.train_mask])
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - start)

        model.eval()
        with torch.no_grad():
            out = model(data.x, data.edge_index)
        val_loss = F.cross_entropy(out[data.val_mask],
                                   data.y[data.val_mask]).item()
        pred = out.argmax(dim=-1)
        test_acc = (pred[data.test_mask] == data.y[data.test_mask]).float()
        test_acc = test_acc.mean().item()
        if val_loss < best_val_loss:
            best_val_loss, best_test_acc, bad_epochs = val_loss, test_acc, 0
        else:
            bad_epochs += 1
        if verbose and epoch % 50 == 0:
            print(f'  epoch {epoch:4d}  loss {loss.item():.4f}  '
                  f'val loss {val_loss:.4f}  test acc {test_acc:.4f}')
        if bad_epochs >= patience:
            break
    return best_test_acc, 1000 * statistics.mean(times)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--dataset', default='Cora',
                        choices=['Cora', 'CiteSeer'])
    parser.add_argument('--root', default=None,
                        help='folder holding <dataset>/raw/ Planetoid files '
                        f'(default: ${ENV_ROOT}, else PyG\'s download folder)')
    parser.add_argument('--impl', default='ext', choices=['ext', 'pyg'],
                        help="'ext': pyg_gat_ext.GATConv, 'pyg': "
                        'torch_geometric.nn.GATConv')
    parser.add_argument('--seeds', type=int, default=1)
    parser.add_argument('--epochs', type=int, default=1000)
    parser.add_argument('--patience', type=int, default=100)
    parser.add_argument('--device', default='cpu')
    args = parser.parse_args(argv)

    dataset = load_dataset(args.dataset, args.root)
    data = dataset[0].to(args.device)
    accs, ms = [], []
    for seed in range(args.seeds):
        acc, epoch_ms = run(data, dataset.num_classes, args.impl, seed,
                            args.epochs, args.patience, args.device,
                            verbose=args.seeds == 1)
        print(f'seed {seed}: test accuracy {100 * acc:.2f} %, '
              f'{epoch_ms:.1f} ms per epoch')
        accs.append(acc)
        ms.append(epoch_ms)
    std = statistics.stdev(accs) if len(accs) > 1 else 0.0
    print(f'{args.dataset} ({args.impl}): test accuracy '
          f'{100 * statistics.mean(accs):.2f} ± {100 * std:.2f} % over '
          f'{len(accs)} seed(s), {statistics.mean(ms):.1f} ms per epoch')
    return accs


if __name__ == '__main__':
    main()
