r"""Exports the inputs of the peer run (benchmarks/peers/run.py) as plain
tensors, so that a process in another environment (DGL's, with its own
torch) runs the very same workloads:

  layer_<H>x<C>_<graph>  benchmarks/nn/gat_conv.py's graph (edge_index, x),
                         made by its make_graph in its order, and the layer's
                         state_dict (its make_layers: seed 0)
  cora                   Cora (x, edge_index, y, train mask) loaded as
                         benchmarks/train/e2e.py and examples/cora.py load
                         it, and the paper model's initial weights
  minibatch              e2e.py's pre-sampled mini-batches (x, edge_index,
                         y, batch_size each) and the model's weights

Each goes into <out>/<workload>.pt with, for the parity check, our
model's eval-mode output on one small input ('check': x, edge_index,
out); <out>/meta.json says what each workload is (sizes, reps, phases,
optimizer).

    python benchmarks/peers/export.py --out /tmp/peers --quick
"""
# The docstring above is also the text of --help: plain text, no reST.
import argparse
import importlib.util
import json
import os
import os.path as osp

import torch

import pyg_gat_ext

ROOT = osp.join(osp.dirname(osp.abspath(__file__)), '..', '..')


def _load_e2e():
    # benchmarks/ is no package: e2e.py by path, then the others through
    # its _load_script.
    path = osp.join(ROOT, 'benchmarks', 'train', 'e2e.py')
    spec = importlib.util.spec_from_file_location('_script_e2e', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


e2e = _load_e2e()
gat_conv = e2e._load_script(osp.join('benchmarks', 'nn'), 'gat_conv')

#: The workloads' sizes: the defaults of gat_conv.py (layer) and of e2e.py
#: (cora, minibatch), and with --quick e2e.py's --quick sizes. run.py
#: passes them to both scripts explicitly.
SIZES = {
    'layer': dict(nodes=100_000, edges=1_600_000, in_channels=128, reps=5,
                  configs=['8x8:uniform', '4x64:power_law'],
                  modes=['forward', 'forward+backward']),
    'cora': dict(warmup=3, reps=e2e.REPS['cora']),
    'minibatch': dict(warmup=3, reps=e2e.REPS['minibatch'], nodes=200_000,
                      edges=3_200_000, batch_size=1024, features=128,
                      classes=16, num_neighbors=[10, 10]),
}
QUICK = {
    'layer': dict(nodes=2000, edges=20_000, reps=2),
    'cora': dict(warmup=1, reps=2),
    'minibatch': dict(warmup=1, reps=2, nodes=2000, edges=20_000,
                      batch_size=64),
}
#: The parity check's graph for the layers (small, seed 1).
CHECK_NODES, CHECK_EDGES = 500, 8000


def sizes(quick=False):
    r"""The workloads' sizes, as :obj:`SIZES` (with :obj:`QUICK` on top)."""
    return {k: {**v, **(QUICK[k] if quick else {})} for k, v in SIZES.items()}


def layer_name(config):
    shape, kind = config.split(':')
    return f'layer_{shape}_{kind}'


def export_layers(out, cfg):
    r"""gat_conv.py's graphs, features and layer weights, drawn in its
    order: per config make_graph (seeded), x from torch's random state,
    make_layers (which seeds 0). So x is gat_conv.py's from the second
    config on; the first config's comes there from an unseeded process
    (random per process in recent torch), here from seed 0: the same
    distribution, other values."""
    torch.manual_seed(0)
    meta = {}
    device = torch.device('cpu')
    for config in cfg['configs']:
        shape, kind = config.split(':')
        heads, channels = (int(v) for v in shape.split('x'))
        edge_index = gat_conv.make_graph(kind, cfg['nodes'], cfg['edges'],
                                         device)
        x = torch.randn(cfg['nodes'], cfg['in_channels'])
        layers = gat_conv.make_layers(cfg['in_channels'], heads, channels,
                                      device, torch.float32)
        g = torch.Generator().manual_seed(1)
        check_x = torch.randn(CHECK_NODES, cfg['in_channels'], generator=g)
        check_ei = gat_conv.make_graph(kind, CHECK_NODES, CHECK_EDGES,
                                       device, seed=1)
        with torch.no_grad():
            check_out = layers['ours'].eval()(check_x, check_ei)
        name = layer_name(config)
        torch.save(dict(edge_index=edge_index, x=x,
                        state_dict=layers['pyg'].state_dict(),
                        check=dict(x=check_x, edge_index=check_ei,
                                   out=check_out)),
                   osp.join(out, f'{name}.pt'))
        meta[name] = dict(kind='layer', phases=cfg['modes'], reps=cfg['reps'],
                          nodes=cfg['nodes'], edges=cfg['edges'],
                          in_channels=cfg['in_channels'], heads=heads,
                          channels=channels, graph=kind, config=config)
    return meta


def export_model(out, workload, batches, in_channels, num_classes, cfg):
    r"""e2e.py's model of :obj:`workload` (PyG's weights, seed 0, as its
    build_providers), the batches as plain tensors, and our model's
    eval-mode output on the first batch."""
    build, optimizer = e2e.model_factory(workload, in_channels, num_classes)
    try:
        torch.manual_seed(0)
        model = build(False)
        state = model.state_dict()
        ours = build(True)  # patch(dropout=True): undone below.
        ours.load_state_dict(state)
        with torch.no_grad():
            check_out = ours.eval()(batches[0].x, batches[0].edge_index)
    finally:
        pyg_gat_ext.unpatch()
    opt = optimizer(model).defaults

    def target(b):  # A mask (Cora), else the seeds' count.
        return b.target.stop if isinstance(b.target, slice) else b.target

    plain = [dict(x=b.x, edge_index=b.edge_index, y=b.y, target=target(b))
             for b in batches]
    torch.save(dict(batches=plain, state_dict=state,
                    check=dict(x=batches[0].x,
                               edge_index=batches[0].edge_index,
                               out=check_out)),
               osp.join(out, f'{workload}.pt'))
    return dict(kind='model', phases=['infer', 'train'], **cfg,
                dropout=model.dropout, lr=opt['lr'],
                weight_decay=opt['weight_decay'],
                graph_per_step=len(batches) > 1)


def export(out, quick=False, root=None):
    r"""Writes every workload into :obj:`out` and returns the metadata
    (also written as :obj:`out/meta.json`)."""
    os.makedirs(out, exist_ok=True)
    cfg = sizes(quick)
    meta = export_layers(out, cfg['layer'])

    dataset = e2e.cora.load_dataset('Cora', root or e2e.default_root())
    data = dataset[0]
    batch = e2e.Batch(data.x, data.edge_index, data.y, data.train_mask)
    meta['cora'] = export_model(
        out, 'cora', [batch], dataset.num_features, dataset.num_classes,
        dict(cfg['cora'], nodes=data.num_nodes, edges=data.num_edges,
             root=root))

    mb = cfg['minibatch']
    batches = e2e.sample_batches(
        e2e.synthetic_graph(mb['nodes'], mb['edges'], mb['features'],
                            mb['classes']), mb['batch_size'],
        mb['warmup'] + mb['reps'] + 1, mb['num_neighbors'],
        torch.device('cpu'))
    meta['minibatch'] = export_model(out, 'minibatch', batches,
                                     mb['features'], mb['classes'], mb)
    with open(osp.join(out, 'meta.json'), 'w') as f:
        json.dump(meta, f, indent=1)
    return meta


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--out', required=True)
    parser.add_argument('--root', default=None,
                        help='folder holding Cora/raw/ (default: as '
                        'e2e.py: $PYG_GAT_EXT_DATA, else '
                        '../shared/data/Planetoid); copied to a temporary '
                        'folder first')
    parser.add_argument('--quick', action='store_true',
                        help='tiny sizes: a smoke test')
    args = parser.parse_args(argv)
    meta = export(args.out, args.quick, args.root)
    print(f'wrote {", ".join(meta)} to {args.out}')


if __name__ == '__main__':
    main()
