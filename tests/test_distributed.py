r"""examples/distributed.py under DistributedDataParallel: 2 CPU processes
(gloo, loopback) train like one process taking both ranks' batches; the
torchrun launch and the single-process run; and, in each rank, the C++
kernels load from the cache without a rebuild, the graph cache is the
process's own and hits on a repeated graph, and attention dropout draws
differ between ranks unless seeded alike.

Every multi-process part runs under a timeout, so a hang fails the test."""
import faulthandler
import gc
import importlib.util
import io
import os
import os.path as osp
import subprocess
import sys
import time

import pytest
import torch

import pyg_gat_ext

EXAMPLE = osp.join(osp.dirname(__file__), '..', 'examples', 'distributed.py')
CPU = torch.device('cpu')
#: Seconds a group of processes may take before the test fails (a few
#: seconds each here; the bound only turns a hang into a failure).
TIMEOUT = 180
#: The environment variable naming the folder of the ranks' stack dumps.
STACKS = 'PYG_GAT_EXT_TEST_STACKS'

#: A small synthetic run: 600 training nodes, so 300 per rank in 10 batches
#: of 32 (the last of 12), identical in size on both ranks. float64 and no
#: dropout, so that the comparison with one process is exact up to
#: rounding.
ARGV = [
    '--dataset', 'synthetic', '--nodes', '1000', '--edges', '5000',
    '--features', '8', '--classes', '3', '--hidden', '8', '--heads', '2',
    '--batch-size', '32', '--num-neighbors', '5', '5', '--dropout', '0',
    '--dtype', 'float64', '--lr', '0.05', '--epochs', '100', '--device',
    'cpu'
]
STEPS = 40


def _example():
    spec = importlib.util.spec_from_file_location('_example_distributed',
                                                  EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def patch_state():
    r"""Restores PyG's names as they were: the example patches them."""
    was = pyg_gat_ext.is_patched()
    yield
    if was:
        pyg_gat_ext.patch()
    else:
        pyg_gat_ext.unpatch()


@pytest.fixture
def child_env(monkeypatch):
    r"""The environment child processes inherit: one thread each, this
    test's pyg_gat_ext first on the path, gloo on the loopback device."""
    package_root = osp.dirname(osp.dirname(pyg_gat_ext.__file__))
    path = os.environ.get('PYTHONPATH')
    monkeypatch.setenv('PYTHONPATH', package_root +
                       (os.pathsep + path if path else ''))
    monkeypatch.setenv('OMP_NUM_THREADS', '1')
    monkeypatch.setenv('GLOO_SOCKET_IFNAME', 'lo')
    return os.environ


@pytest.fixture
def spawn_env(child_env, monkeypatch, tmp_path):
    r"""And, for :func:`_spawn`'s ranks, a loopback rendezvous on a store
    this process holds, as torchrun's agent does: the store binds a free
    port and keeps it, so no other process can take the port between its
    choice and the ranks' connecting (as choosing a free port and releasing
    it allowed). Each rank writes its threads' stacks to ``rank<r>.stack``
    if it is still running shortly before the timeout."""
    import torch.distributed as dist
    store = dist.TCPStore('127.0.0.1', 0, is_master=True,
                          wait_for_workers=False)
    monkeypatch.setenv('MASTER_ADDR', '127.0.0.1')
    monkeypatch.setenv('MASTER_PORT', str(store.port))
    monkeypatch.setenv('TORCHELASTIC_USE_AGENT_STORE', 'True')
    stacks = tmp_path / 'stacks'
    stacks.mkdir()
    monkeypatch.setenv(STACKS, str(stacks))
    yield child_env
    del store


def _spawn(fn, *args, nprocs=2):
    r"""Runs :obj:`fn(rank, nprocs, *args)` in :obj:`nprocs` fresh
    processes; fails if they take longer than :data:`TIMEOUT`, with the
    stacks the hung ranks wrote."""
    import torch.multiprocessing as mp
    context = mp.spawn(fn, args=(nprocs, ) + args, nprocs=nprocs,
                       join=False)
    deadline = time.monotonic() + TIMEOUT
    while not context.join(timeout=1):
        if time.monotonic() > deadline:
            for p in context.processes:
                p.kill()
            stacks = os.environ[STACKS]
            dumps = ''.join(f'\n--- {name}\n' +
                            open(osp.join(stacks, name)).read()
                            for name in sorted(os.listdir(stacks)))
            pytest.fail(f'the {nprocs} ranks did not finish in {TIMEOUT} s;'
                        f' their stacks:{dumps}')


def _join_group(rank, world_size):
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(world_size))
    torch.set_num_threads(1)
    stack = open(osp.join(os.environ[STACKS], f'rank{rank}.stack'), 'w')
    faulthandler.dump_traceback_later(TIMEOUT - 20, file=stack)


def _train_rank(rank, world_size, argv, out_dir):
    _join_group(rank, world_size)
    result = _example().main(argv)
    torch.save({'losses': result['losses'],
                'state': result['model'].state_dict()},
               osp.join(out_dir, f'rank{rank}.pt'))


def test_two_ranks_train_like_one_process(tmp_path, spawn_env, patch_state):
    argv = ARGV + ['--max-steps', str(STEPS)]
    _spawn(_train_rank, argv, str(tmp_path))
    ranks = [torch.load(tmp_path / f'rank{r}.pt') for r in range(2)]

    # DDP's all-reduce gives both ranks the same averaged gradients, hence
    # bit-identical parameters.
    for name, value in ranks[0]['state'].items():
        assert torch.equal(value, ranks[1]['state'][name]), name

    # The global batch's loss (the mean of the ranks' equal halves) falls.
    losses = torch.tensor([r['losses'] for r in ranks],
                          dtype=torch.float64).mean(dim=0)
    assert losses.numel() == STEPS
    first, last = losses[:10].mean(), losses[-10:].mean()
    assert last < 0.9 * first, losses

    # One process taking both ranks' batches of each step, the loss the
    # mean over the two: the same steps (the batches are drawn as the
    # ranks drew them, from the seed, epoch, rank and batch).
    ex = _example()
    args = ex.parser().parse_args(argv)
    data, train_idx, model, optimizer = ex.make_training(args, CPU)
    step, epoch, single = 0, 0, []
    while step < STEPS:
        per_rank = [
            ex.epoch_batches(data, train_idx, rank, 2, epoch,
                             args.batch_size, args.num_neighbors, args.seed)
            for rank in range(2)
        ]
        for batches in zip(*per_rank, strict=True):
            single.append(ex.train_step(model, optimizer, list(batches)).loss)
            step += 1
            if step == STEPS:
                break
        epoch += 1
    # (The parameters agreed to the last bit when this was written.)
    torch.testing.assert_close(torch.tensor(single, dtype=torch.float64),
                               losses, atol=1e-6, rtol=1e-6)
    for name, value in model.state_dict().items():
        torch.testing.assert_close(value, ranks[0]['state'][name],
                                   atol=1e-6, rtol=1e-6, msg=name)


def test_torchrun_launch_writes_one_checkpoint(tmp_path, child_env):
    # The launch the docs give, on the loopback: rank 0 logs and writes the
    # checkpoint; the example checks that the ranks' parameters agree.
    checkpoint = tmp_path / 'gat.pt'
    cmd = [
        sys.executable, '-m', 'torch.distributed.run', '--standalone',
        '--nproc_per_node', '2', EXAMPLE, *ARGV, '--dtype', 'float32',
        '--dropout', '0.5', '--epochs', '3', '--max-steps', '15',
        '--checkpoint', str(checkpoint)
    ]
    child = subprocess.run(cmd, capture_output=True, text=True,
                           timeout=TIMEOUT, cwd=tmp_path)
    assert child.returncode == 0, child.stdout + child.stderr
    lines = child.stdout.splitlines()
    assert [line.split()[:2] for line in lines[:2]] == [['epoch', '1'],
                                                         ['epoch', '2']]
    assert len(lines) == 3  # Rank 0 alone prints.
    assert 'parameters identical on all 2 rank(s)' in lines[2]
    saved = torch.load(checkpoint)
    assert sorted(saved) == ['epoch', 'model', 'optimizer', 'step']
    assert saved['epoch'] == 2 and saved['step'] == 15  # 10 + 5 steps.
    assert 'convs.0.att_src' in saved['model']  # The unwrapped model's.
    assert os.listdir(tmp_path) == ['gat.pt']  # No temporary file left.


def test_single_process_without_torchrun(tmp_path, monkeypatch,
                                         patch_state, capsys):
    # No torchrun: a gloo group of one in this process, gone afterwards.
    for name in ('RANK', 'WORLD_SIZE', 'LOCAL_RANK'):
        monkeypatch.delenv(name, raising=False)
    ex = _example()
    result = ex.main(ARGV + ['--max-steps', '3', '--checkpoint',
                             str(tmp_path / 'gat.pt')])
    assert len(result['losses']) == 3 and result['epochs'] == 1
    assert isinstance(result['model'].convs[0], pyg_gat_ext.GATConv)
    assert 0.0 <= result['val_acc'] <= 1.0
    assert not torch.distributed.is_initialized()
    assert torch.load(tmp_path / 'gat.pt')['step'] == 3
    assert 'identical on all 1 rank(s)' in capsys.readouterr().out


def _layer_rank(rank, world_size, library, before, out_dir):
    _join_group(rank, world_size)
    # Whatever the loader says while loading the kernels, and whether it
    # calls the build at all.
    import torch.utils.cpp_extension
    builds = []
    real_build = torch.utils.cpp_extension.load
    torch.utils.cpp_extension.load = lambda *a, **k: (builds.append(1),
                                                      real_build(*a, **k))[1]
    stderr, sys.stderr = sys.stderr, io.StringIO()
    try:
        existed = osp.exists(library)
        backend = pyg_gat_ext.ops.kernel_backend(CPU)
        said = sys.stderr.getvalue()
    finally:
        sys.stderr = stderr
    st = os.stat(library)

    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from pyg_gat_ext.ops import attention, cached_gat_graph
    ex = _example()
    ex.init_distributed('cpu')  # The group torch.multiprocessing set up.
    g = torch.Generator().manual_seed(0)  # The same graph on every rank.
    x = torch.randn(50, 8, generator=g)
    edge_index = torch.randint(0, 50, (2, 300), generator=g)

    # The graph cache is this process's: empty at first, one entry for the
    # two layers' one edge_index, and the second forward takes it (the
    # same grouping object) instead of grouping again.
    torch.manual_seed(0)
    model = ex.build_model('ext', 8, 8, 3, num_layers=2, heads=2,
                           dropout=0.5)
    ddp = DistributedDataParallel(model)
    sizes = [len(attention.graph_cache)]
    ddp(x, edge_index).sum().backward()
    sizes.append(len(attention.graph_cache))
    graph = cached_gat_graph(edge_index, 50, 50)
    ddp(x, edge_index).sum().backward()
    sizes.append(len(attention.graph_cache))
    hit = cached_gat_graph(edge_index, 50, 50) is graph

    # Attention dropout in training mode: per-rank seeds (the example's
    # default, seed + rank) draw different masks, equal seeds equal ones.
    conv = model.convs[0]
    alphas = []
    for seed in (100 + rank, 100):
        torch.manual_seed(seed)
        _, (_, alpha) = conv(x, edge_index, return_attention_weights=True)
        gathered = [torch.empty_like(alpha) for _ in range(world_size)]
        dist.all_gather(gathered, alpha.detach().contiguous())
        alphas.append(gathered)
    torch.save({'existed': existed, 'backend': backend, 'said': said,
                'builds': len(builds), 'stat': (st.st_ino, st.st_mtime_ns),
                'before': before, 'sizes': sizes, 'hit': hit,
                'alphas': alphas}, osp.join(out_dir, f'rank{rank}.pt'))
    # DDP's reducer goes before its process group: destroyed the other way
    # round, its destructor at this function's return hung both ranks (the
    # stacks of a CI run showed them past the last line, in no Python
    # frame).
    del ddp
    gc.collect()
    dist.destroy_process_group()


def test_kernels_graph_cache_and_dropout_per_rank(tmp_path, spawn_env):
    from pyg_gat_ext.ops import _cpp
    from tests.conftest import backend_or_skip
    backend_or_skip('cpp', CPU)  # Builds here if needed: at most once.
    library = osp.join(_cpp.cache_dir(), f'{_cpp.NAME}.so')
    st = os.stat(library)
    _spawn(_layer_rank, library, (st.st_ino, st.st_mtime_ns), str(tmp_path))
    for rank in range(2):
        r = torch.load(tmp_path / f'rank{rank}.pt')
        # Loaded from the cache: no build called, no compile message, the
        # library file untouched.
        assert r['existed'] and r['backend'] == 'cpp'
        assert r['builds'] == 0 and 'compiling' not in r['said'], r['said']
        assert r['stat'] == r['before']
        assert r['sizes'] == [0, 1, 1] and r['hit']
        (mine, other), (same, same_other) = r['alphas']
        # Dropout zeroes some weights; the masks differ between the ranks
        # seeded apart and agree between the ranks seeded alike.
        assert bool((mine == 0).any())
        assert not torch.equal(mine, other)
        assert torch.equal(same, same_other)
