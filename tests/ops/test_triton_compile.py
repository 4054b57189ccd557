r"""Ahead-of-time compilation of every Triton kernel for sm_80 (A100) and
sm_90 (H100, H200), without a GPU.

A variant is what a launcher would launch: the test calls the launcher's
``*_launches`` function on small CPU tensors, Triton's own binder specialises
its arguments for the NVIDIA backend (pointer types, 32- or 64-bit integers,
divisibility by 16, integers equal to 1, constexprs) exactly as a launch
would, and ``triton.compile(ASTSource(...), target=GPUTarget('cuda', arch,
32))`` builds the cubin. Registers, stack and local memory (spills) are read
with ``cuobjdump -res-usage`` from the cubin, shared memory from the
compiled kernel's metadata.

By default a quick check is compiled (every kernel at its largest tile
with every flag on, in float32 for sm_90 and in bfloat16 for sm_80: 18
variants, a few seconds per variant on 2 cores);
``PYG_GAT_EXT_TRITON_COMPILE=full`` compiles the full matrix
(:func:`_options`, 2264 variants, a step of ``.ci/run``) and writes
``benchmarks/results/triton_resources.csv``.
Compilation runs in worker processes without ``TRITON_INTERPRET``, which
the test session sets on CPU and under which kernels are not compiled.
"""
import concurrent.futures
import csv
import importlib
import multiprocessing
import os
import os.path as osp
import re
import subprocess
import tempfile
from typing import Any, Dict, List, NamedTuple, Optional, Tuple

import pytest
import torch

triton = pytest.importorskip('triton')
tl = pytest.importorskip('triton.language')

FULL = os.environ.get('PYG_GAT_EXT_TRITON_COMPILE', '') == 'full'
#: Only the ops named here (comma-separated, e.g. ``gatv2_attention,
#: gatv2_attention_backward``) when set: to compile one kernel's matrix
#: alone. The CSV is then not written.
ONLY = tuple(
    op for op in os.environ.get('PYG_GAT_EXT_TRITON_COMPILE_OPS', '').split(
        ',') if op)
CSV = osp.join(osp.dirname(__file__), '..', '..', 'benchmarks', 'results',
               'triton_resources.csv')

ARCHS = (80, 90)
DTYPES = ('float32', 'float16', 'bfloat16', 'float64')

#: Registers per thread at most, the limit the launches give ptxas. With
#: num_warps=4 a program is 128 threads; an SM has 65,536 registers and
#: holds at most 64 warps (2,048 threads) on sm_80 and sm_90. At 128
#: registers 4 programs (16 warps) fit per SM, a quarter of the maximum
#: occupancy, which is what a gather-bound kernel needs at least to keep
#: enough loads in flight; above it, occupancy falls to 3 programs (168
#: registers) and the hard limit is 255.
from pyg_gat_ext.ops.triton._launch import MAX_REGISTERS  # noqa: E402

#: (heads, channels) of the attention kernels, as powers of two: every
#: (BLOCK_E, BLOCK_H, BLOCK_C) that the launcher's _config picks for up to
#: 8 heads of up to 64 channels, and one head of up to 256 channels.
SHAPES = [(h, c) for h in (1, 2, 4, 8) for c in (1, 2, 4, 8, 16, 32, 64)
          ] + [(1, 128), (1, 256)]
#: The largest tile, [8 edges, 8 heads, 64 channels].
LARGEST = (8, 64)
#: The segment softmax's row widths: every BLOCK_W its launcher picks.
WIDTHS = (1, 2, 4, 8, 16, 32, 64)

#: The flags of the attention ops (GAT's and GATv2's alike).
GAT_FLAGS = {
    f'{op}{suffix}': flags
    for op in ('gat_attention', 'gatv2_attention')
    for suffix, flags in (('', ('has_edge', 'remove_self_loops', 'dropout',
                                'return_attention_weights')),
                          ('_backward', ('has_edge', 'has_ga',
                                         'remove_self_loops', 'dropout')))
}
MODULES = {
    'gat_attention': 'gat_attention',
    'gat_attention_backward': 'gat_attention',
    'gatv2_attention': 'gatv2_attention',
    'gatv2_attention_backward': 'gatv2_attention',
    'segment_softmax': 'segment_softmax',
    'segment_softmax_backward': 'segment_softmax',
    'dropout': 'dropout',
}


class Variant(NamedTuple):
    op: str  # The launcher: pyg_gat_ext.ops.triton.<module>.<op>_launches.
    launch: int  # Which of its launches.
    dtype: str
    arch: int
    options: Tuple[Tuple[str, Any], ...]  # How the inputs are built.


def _options(op: str) -> List[Tuple[Dict[str, Any], bool]]:
    # The inputs of one op that the mode compiles, as keyword arguments of
    # _inputs, each with whether it is compiled in every (dtype, arch) of
    # the mode (else in float32 for sm_90). The first has every flag on at
    # the largest tile.
    if op in GAT_FLAGS:
        flags = GAT_FLAGS[op]
        on = dict(shape=LARGEST, index='int32', **dict.fromkeys(flags, True))
        chosen = [(on, True)]
        if FULL:
            # Every tile with every flag on, every flag combination at the
            # largest tile, and int64 indices (graphs of 2**31 edges).
            chosen += [({**on, 'shape': s}, True) for s in SHAPES]
            chosen += [({
                **on,
                **{f: bool(k >> b & 1)
                   for b, f in enumerate(flags)}
            }, True) for k in range(2**len(flags))]
            chosen += [({**on, 'shape': s, 'index': 'int64'}, True)
                       for s in (LARGEST, (1, 256))]
        return chosen
    if op.startswith('segment_softmax'):
        chosen = [(dict(width=64, perm=True, rows=4), True)]
        if FULL:
            chosen += [(dict(width=64, perm=p, rows=r), True)
                       for p in (True, False) for r in (4, 1)]
            chosen += [(dict(width=w, perm=True, rows=4), True)
                       for w in WIDTHS]
        return chosen
    return [({}, True)]


def _targets(everywhere: bool) -> List[Tuple[str, int]]:
    # The (dtype, arch) pairs of a variant: all (full matrix), or float32
    # for sm_90 and bfloat16 for sm_80 (quick check); else float32 for
    # sm_90.
    if not everywhere:
        return [('float32', 90)]
    if not FULL:
        return [('float32', 90), ('bfloat16', 80)]
    return [(d, a) for d in DTYPES for a in ARCHS]


def _ops() -> List[str]:
    # The ops of the mode.
    unknown = set(ONLY) - set(MODULES)
    assert not unknown, f'PYG_GAT_EXT_TRITON_COMPILE_OPS: unknown {unknown}'
    return [op for op in MODULES if not ONLY or op in ONLY]


def _variants() -> List[Variant]:
    # Every variant of the mode, one per distinct kernel specialisation.
    variants, seen = [], set()
    for op in _ops():
        for options, everywhere in _options(op):
            for dtype, arch in _targets(everywhere):
                # Under the test session's interpreter the launches' kernels
                # are interpreted functions: names and arguments suffice.
                launches = _launches(op, dtype, **options)
                for k, launch in enumerate(launches):
                    key = (launch.kernel.__name__, arch,
                           _specialisation_key(launch))
                    if key not in seen:
                        seen.add(key)
                        variants.append(
                            Variant(op, k, dtype, arch,
                                    tuple(sorted(options.items()))))
    return variants


def _specialisation_key(launch) -> Tuple:
    # What Triton specialises a launch on, for deduplication: argument
    # dtypes, integer classes, constexprs.
    def arg(a):
        if isinstance(a, torch.Tensor):
            return str(a.dtype)
        if isinstance(a, bool) or not isinstance(a, int):
            return type(a).__name__
        return (a == 1, a % 16 == 0, -2**31 <= a < 2**31)

    return (tuple(arg(a) for a in launch.args),
            tuple((k, str(v)) for k, v in sorted(launch.constexprs.items())))


def _ring(index: torch.dtype, n: int = 5):
    # A ring of n nodes, edge e from node e to e + 1 (mod n), grouped by
    # target (rowptr, col, csr_eid) and by source (colptr, row, csc_eid).
    nodes = torch.arange(n)
    ptr = torch.arange(n + 1)
    into = ((nodes - 1) % n).to(index)  # Node i's edge comes from i - 1.
    return ptr, into, into.clone(), ptr.clone(), ((nodes + 1) % n).to(index)


def _inputs(op: str, dtype: str, shape=None, index='int32', has_edge=False,
            has_ga=False, remove_self_loops=False, dropout=False,
            return_attention_weights=False, width=1, perm=False, rows=1,
            seed=(0x9E3779B9, 12345)) -> Tuple:
    # The op's schema arguments, as small CPU tensors.
    dt = getattr(torch, dtype)
    acc = torch.float64 if dt == torch.float64 else torch.float32
    seed = torch.tensor(seed)
    if op in GAT_FLAGS:
        heads, channels = shape
        rowptr, col, csr_eid, colptr, row = _ring(getattr(torch, index))
        n = rowptr.numel() - 1
        csc_eid = torch.arange(n).to(col.dtype)
        x = torch.randn(n, heads, channels, dtype=dt)
        if op.startswith('gatv2'):
            # x_src, x_dst, att, edge_x.
            inputs = (x, torch.randn_like(x), torch.randn(heads, channels,
                                                          dtype=dt))
            edge = torch.randn(2 * n, heads, channels, dtype=dt)
        else:
            # x, a_src, a_dst, edge_score.
            inputs = (x, *torch.randn(2, n, heads, dtype=dt))
            edge = torch.randn(2 * n, heads, dtype=dt)
        inputs += (edge if has_edge else None, )
        p = 0.5 if dropout else 0.0
        graph = (rowptr, col, csr_eid, colptr, row, csc_eid, n,
                 remove_self_loops, 0.2, p, seed)
        if not op.endswith('_backward'):
            return inputs + graph + (return_attention_weights, )
        ga = torch.randn(2 * n, heads, dtype=dt) if has_ga else None
        lse = torch.randn(n, heads, dtype=acc)
        return (torch.randn_like(x), ga) + inputs + (lse, ) + graph
    if op.startswith('segment_softmax'):
        segments = 4096 if rows == 4 else 8  # The launcher's ROWS choice.
        src = torch.randn(segments, width, dtype=dt)
        ptr = torch.arange(segments + 1)
        order = torch.randperm(segments) if perm else None
        grouping = (None, ptr, order, segments, 0)
        if op == 'segment_softmax':
            return (src, ) + grouping
        return (src, torch.randn_like(src)) + grouping
    return (torch.randn(3000, dtype=dt), 0.5, seed)


def _launches(op: str, dtype: str, **options) -> List:
    module = importlib.import_module(f'pyg_gat_ext.ops.triton.{MODULES[op]}')
    launches, _ = getattr(module, f'{op}_launches')(*_inputs(
        op, dtype, **options))
    return launches


def _flags(constexprs: Dict[str, Any]) -> str:
    return ' '.join(f'{k}={int(v)}' for k, v in constexprs.items()
                    if isinstance(v, bool) or k == 'ROWS')


def _blocks(constexprs: Dict[str, Any]) -> str:
    return ' '.join(f'{k}={v}' for k, v in constexprs.items()
                    if k.startswith('BLOCK'))


# ---------------------------------------------------------------------------
# In the worker processes (no TRITON_INTERPRET: the kernels are compiled).


def _init_worker() -> None:
    assert 'TRITON_INTERPRET' not in os.environ
    # Triton 3.9's default, made explicit (it warns when unset).
    os.environ.setdefault('TRITON_DEFAULT_FP_FUSION', '1')


def _bind(launch, arch: int):
    # Triton's own specialisation of a launch for `arch`, as JITFunction.run
    # computes it: (options, signature, constexprs, attrs).
    from triton.backends.compiler import GPUTarget
    from triton.compiler import make_backend
    from triton.runtime.jit import create_function_from_signature
    target = GPUTarget('cuda', arch, 32)
    backend = make_backend(target)
    kernel = launch.kernel
    binder = create_function_from_signature(kernel.signature, kernel.params,
                                            backend)
    bound, specialization, options = binder(*launch.args, **launch.kwargs)
    packed = kernel._pack_args(backend, launch.kwargs, bound,
                               specialization, options)
    return target, packed


def _compile(launch, arch: int):
    from triton.compiler import ASTSource
    target, (options, signature, constexprs, attrs) = _bind(launch, arch)
    source = ASTSource(launch.kernel, signature, constexprs, attrs)
    return triton.compile(source, target=target, options=options.__dict__)


def _res_usage(cubin: bytes, name: str) -> Dict[str, int]:
    # REG, STACK, SHARED and LOCAL of function `name` in a cubin.
    from triton import knobs
    with tempfile.NamedTemporaryFile(suffix='.cubin') as f:
        f.write(cubin)
        f.flush()
        text = subprocess.run(
            [knobs.nvidia.cuobjdump.path, '-res-usage', f.name],
            check=True, capture_output=True, text=True).stdout
    match = re.search(rf'Function {re.escape(name)}:\s*\n\s*(.*)', text)
    assert match is not None, text
    return {k: int(v) for k, v in re.findall(r'(\w+):(\d+)', match[1])}


def _compile_variant(variant: Variant) -> Dict[str, Any]:
    launch = _launches(variant.op, variant.dtype,
                       **dict(variant.options))[variant.launch]
    name = launch.kernel.__name__
    row = dict(kernel=name, arch=f'sm_{variant.arch}', dtype=variant.dtype,
               index=dict(variant.options).get('index', ''),
               flags=_flags(launch.constexprs),
               blocks=_blocks(launch.constexprs), error='')
    try:
        compiled = _compile(launch, variant.arch)
    except Exception as e:  # Reported by the test, with the variant.
        return dict(row, error=f'{type(e).__name__}: {e}'[:2000])
    usage = _res_usage(compiled.asm['cubin'], name)
    return dict(row, num_warps=compiled.metadata.num_warps,
                registers=usage['REG'], stack=usage['STACK'],
                local=usage['LOCAL'], shared=compiled.metadata.shared)


def _copy(x_ptr, y_ptr):
    # A kernel that any working backend compiles (jitted in the worker).
    tl.store(y_ptr, tl.load(x_ptr))


def _probe_backend() -> Optional[str]:
    # Why the NVIDIA backend cannot compile here (no ptxas, no cuobjdump,
    # a Triton without the internals this test binds with), or None.
    from pyg_gat_ext.ops.triton._launch import Launch
    x = torch.zeros(1)
    try:
        compiled = _compile(Launch(triton.jit(_copy), (1, ), (x, x), {}), 90)
        _res_usage(compiled.asm['cubin'], '_copy')
    except Exception as e:
        return f'{type(e).__name__}: {e}'
    return None


def _seed_specialisations() -> Dict[str, int]:
    # The number of distinct specialisations of each seeded kernel over
    # seeds whose words are 1, divisible by 16, 32-bit and 64-bit.
    found: Dict[str, set] = {}
    for seed in ((1, 16), (5, 2**31 + 5), (2**32 - 1, 0)):
        for op, options in (('gat_attention', {}),
                            ('gat_attention_backward', {}),
                            ('gatv2_attention', {}),
                            ('gatv2_attention_backward', {}), ('dropout', {})):
            if op in GAT_FLAGS:
                options = dict(shape=(2, 8), dropout=True)
            for launch in _launches(op, 'float32', seed=seed, **options):
                _, (_, signature, _, attrs) = _bind(launch, 90)
                found.setdefault(launch.kernel.__name__, set()).add(
                    repr((signature, attrs)))
    return {name: len(specs) for name, specs in found.items()}


def _ptxas_log() -> Tuple[str, Dict[str, int]]:
    # Triton's own ptxas log (-v) of one variant compiled afresh, and what
    # cuobjdump reads from the same cubin.
    import contextlib
    import io

    from triton import knobs
    launch = _launches('gat_attention', 'float32', shape=LARGEST,
                       has_edge=True, dropout=True)[0]
    out = io.StringIO()
    with tempfile.TemporaryDirectory() as cache:
        knobs.cache.dir, knobs.nvidia.dump_ptxas_log = cache, True
        with contextlib.redirect_stdout(out):
            compiled = _compile(launch, 90)
    return out.getvalue(), _res_usage(compiled.asm['cubin'], '_gat_fwd')


# ---------------------------------------------------------------------------
# The tests.

#: The kernels of every op's launches.
KERNELS = {
    'gat_attention': ('_gat_fwd', ),
    'gat_attention_backward': ('_gat_bwd_dst', '_gat_bwd_src'),
    'gatv2_attention': ('_gatv2_fwd', ),
    'gatv2_attention_backward': ('_gatv2_bwd_dst', '_gatv2_bwd_src'),
    'segment_softmax': ('_segment_softmax_fwd', ),
    'segment_softmax_backward': ('_segment_softmax_bwd', ),
    'dropout': ('_dropout_fwd', ),
}
COLUMNS = ('kernel', 'arch', 'dtype', 'index', 'flags', 'blocks',
           'num_warps', 'registers', 'local', 'stack', 'shared')


@pytest.fixture(scope='module')
def pool():
    if 'nvidia' not in getattr(triton.backends, 'backends', {}):
        pytest.skip("triton has no 'nvidia' backend")
    workers = max(1, min(8, len(os.sched_getaffinity(0))))
    # The workers must import triton without TRITON_INTERPRET (triton.jit
    # reads it when its own library is defined); they inherit the
    # environment whenever they start.
    with pytest.MonkeyPatch.context() as env, \
            concurrent.futures.ProcessPoolExecutor(
                workers, mp_context=multiprocessing.get_context('spawn'),
                initializer=_init_worker) as executor:
        env.delenv('TRITON_INTERPRET', raising=False)
        reason = executor.submit(_probe_backend).result()
        if reason is not None:
            pytest.skip(f'the NVIDIA backend cannot compile here: {reason}')
        yield executor


@pytest.fixture(scope='module')
def rows(pool):
    results = list(pool.map(_compile_variant, _variants()))
    if FULL and not ONLY:
        with open(CSV, 'w', newline='') as f:
            writer = csv.DictWriter(f, COLUMNS, extrasaction='ignore')
            writer.writeheader()
            writer.writerows(r for r in results if not r['error'])
    return results


def _describe(r: Dict[str, Any]) -> str:
    return ' '.join(str(r[k]) for k in ('kernel', 'arch', 'dtype', 'index',
                                         'flags', 'blocks'))


def test_every_variant_compiles(rows):
    failed = [f"{_describe(r)}: {r['error']}" for r in rows if r['error']]
    assert not failed, '\n'.join(failed)


def test_no_variant_spills(rows):
    spilled = [
        f"{_describe(r)}: {r['local']} bytes local, {r['stack']} stack"
        for r in rows if not r['error'] and (r['local'] or r['stack'])
    ]
    assert not spilled, '\n'.join(spilled)


def test_registers_within_occupancy_bound(rows):
    assert all(r['num_warps'] == 4 for r in rows if not r['error'])
    over = [
        f"{_describe(r)}: {r['registers']} registers" for r in rows
        if not r['error'] and r['registers'] > MAX_REGISTERS
    ]
    assert not over, '\n'.join(over)


def test_every_kernel_dtype_arch_and_flag_is_covered(rows):
    assert set(KERNELS) == set(MODULES)
    kernels = [k for op in _ops() for k in KERNELS[op]]
    seen = {(r['kernel'], r['dtype'], r['arch']) for r in rows}
    assert seen == {(k, d, f'sm_{a}')
                    for k in kernels for d, a in _targets(True)}
    for kernel in kernels:
        values: Dict[str, set] = {}
        for r in rows:
            if r['kernel'] == kernel:
                for flag in r['flags'].split():
                    name, value = flag.split('=')
                    values.setdefault(name, set()).add(value)
        for name, seen_values in values.items():
            # The quick check compiles every flag on (ROWS=4) only.
            expected = ({'1', '4'} if name == 'ROWS' else {'0', '1'}) if FULL \
                else ({'4'} if name == 'ROWS' else {'1'})
            assert seen_values == expected, (kernel, name, seen_values)


def test_seed_does_not_specialise(pool):
    # A new dropout seed every step must not compile a new kernel.
    counts = pool.submit(_seed_specialisations).result()
    assert counts == {
        '_gat_fwd': 1,
        '_gat_bwd_dst': 1,
        '_gat_bwd_src': 1,
        '_gatv2_fwd': 1,
        '_gatv2_bwd_dst': 1,
        '_gatv2_bwd_src': 1,
        '_dropout_fwd': 1
    }


def test_cuobjdump_agrees_with_ptxas(pool):
    log, usage = pool.submit(_ptxas_log).result()
    registers = re.search(r'Used (\d+) registers', log)
    spills = re.search(r'(\d+) bytes spill stores', log)
    assert registers is not None and spills is not None, log
    assert int(registers[1]) == usage['REG']
    assert int(spills[1]) == 0 and usage['LOCAL'] == 0
