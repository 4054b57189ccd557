#!/usr/bin/env bash
# Validates pyg-gat-ext on a GPU machine in one command of at most 10 minutes:
# the CUDA cases of the test suite, one layer against PyG at large sizes, and
# full-batch training on a graph sized so that PyG's layer runs out of memory.
# Each stage runs under its own timeout; a stage that fails or times out does
# not stop the others. Run from the repository root (the package need not be
# installed):
#
#     OUT=<dir> bash benchmarks/gpu/validate.sh          # on a GPU machine
#     OUT=<dir> bash benchmarks/gpu/validate.sh --small  # anywhere, minutes
#
# Writes into $OUT (at most 6 files, no subfolders): validate.log (everything
# printed), tests.log, tests.xml (JUnit), layer.csv, train_large.csv and
# summary.txt. Exits 0 when every stage passed.
set -u

usage() {
  sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'
  cat <<'EOF'

Options:
  --small   shrink every size (N=20k, E=200k; products 24k/620k; tiny
            training); without a GPU, run on CPU: Triton tests under
            TRITON_INTERPRET=1 (a small selection), benchmarks --device cpu.
  -h, --help
Environment: OUT (output folder; a new /tmp folder if unset),
  VALIDATE_WORKERS (pytest-xdist workers on CUDA, default 8),
  PYTHON (default python3).
EOF
}

SMALL=0
for arg in "$@"; do
  case "$arg" in
    --small) SMALL=1 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "unknown option: $arg" >&2; usage >&2; exit 2 ;;
  esac
done

START=$(date +%s)
PYTHON=${PYTHON:-python3}
OUT=${OUT:-$(mktemp -d /tmp/validate.XXXXXX)}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
# Scratch files stay out of $OUT (only a few files come back from it).
SCRATCH=$(mktemp -d /tmp/validate_scratch.XXXXXX)
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
export PYTHONDONTWRITEBYTECODE=1
exec > >(tee "$OUT/validate.log") 2>&1
TEE_PID=$!
# On exit: remove the scratch folder, let tee write the log to its end.
trap 'rm -rf "$SCRATCH"; exec >&- 2>&-; wait "$TEE_PID"' EXIT

# The whole script stops by itself before 10 minutes: each stage's budget is
# also capped by what is left of DEADLINE seconds since the start.
DEADLINE=${VALIDATE_DEADLINE:-560}
STATUS_FILE=$SCRATCH/status
: > "$STATUS_FILE"

elapsed() { echo $(( $(date +%s) - START )); }

# run_stage NAME SECONDS LOG COMMAND...: runs COMMAND under `timeout`
# (SIGINT first, so that Python flushes its output and pytest writes its
# report, then SIGKILL 10 s later), its output into LOG (- for stdout), and
# records ok / failed (exit N) / timed out.
run_stage() {
  local name=$1 budget=$2 log=$3
  shift 3
  local left=$(( DEADLINE - $(elapsed) - 10 ))
  if (( left < budget )); then budget=$left; fi
  if (( budget < 5 )); then
    echo "== $name: skipped (no time left)"
    echo "$name skipped (no time left)" >> "$STATUS_FILE"
    return 0
  fi
  echo "== $name (timeout ${budget} s, at $(elapsed) s): $*"
  local t0=$(date +%s)
  if [[ $log == - ]]; then
    timeout --signal=INT --kill-after=10 "$budget" "$@"
  else
    timeout --signal=INT --kill-after=10 "$budget" "$@" > "$log" 2>&1
  fi
  local rc=$? status
  case $rc in
    0) status=ok ;;
    124|137) status="timed out after ${budget} s" ;;
    *) status="failed (exit $rc)" ;;
  esac
  echo "== $name: $status in $(( $(date +%s) - t0 )) s"
  echo "$name $status" >> "$STATUS_FILE"
}

HAS_CUDA=$("$PYTHON" -c 'import torch; print(int(torch.cuda.is_available()))' \
  2>/dev/null || echo 0)
if (( HAS_CUDA )); then
  DEVICE=cuda
  # The Triton kernels must be compiled, not interpreted, on the GPU
  # (tests/conftest.py sets TRITON_INTERPRET=1 only without a GPU).
  unset TRITON_INTERPRET
else
  DEVICE=cpu
  export TRITON_INTERPRET=1
  if (( ! SMALL )); then
    echo "warning: no GPU; running on CPU (use --small for a quick run)"
  fi
fi
echo "validate.sh: device=$DEVICE small=$SMALL out=$OUT"

# 1. Environment.
if command -v nvidia-smi > /dev/null; then timeout 10 nvidia-smi -L; fi
cat > "$SCRATCH/env.py" <<'EOF'
import os
import platform
import sys

import torch
import torch_geometric

print(f'python {sys.version.split()[0]} | {platform.machine()} | '
      f'{os.cpu_count()} CPUs')
print(f'torch {torch.__version__} (CUDA {torch.version.cuda}) | '
      f'torch_geometric {torch_geometric.__version__}')
try:
    import triton
    print(f'triton {triton.__version__}')
except ImportError as e:
    print(f'triton: not importable ({e})')
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print(f'GPU: {torch.cuda.get_device_name()} | sm_{p.major}{p.minor} | '
          f'{p.total_memory / 2**30:.0f} GiB')
else:
    print('GPU: none')
from pyg_gat_ext.ops import kernel_backend  # noqa: E402

# On the GPU, not the CPU: that would build the C++ kernels, unused there.
device = torch.device('cuda' if torch.cuda.is_available() else 'cpu')
print(f'ops on {device}: {kernel_backend(device)}')
print(f"TRITON_INTERPRET={os.environ.get('TRITON_INTERPRET')}")
EOF
run_stage env 30 - "$PYTHON" "$SCRATCH/env.py"

# 2. Tests. Devices are a fixture parametrised 'cpu' / 'cuda' (tests/
# conftest.py DEVICES), so `-k cuda` selects exactly the CUDA cases: the
# parity suite on both layer paths and every dtype, the op kernels, the
# integration and property tests, the CUDA peak-memory test. The ahead-of-
# time compile test (tests/ops/test_triton_compile.py) is CPU-side and slow:
# left out.
TEST_FILES=(tests/nn tests/ops tests/test_memory.py
            --ignore=tests/ops/test_triton_compile.py)
if [[ $DEVICE == cuda ]]; then
  SELECT=(-k cuda)
  # A Triton kernel that cannot run is a failure here, not a skip.
  export PYG_GAT_EXT_REQUIRE_KERNELS=1
  if "$PYTHON" -c 'import pytest_timeout' 2>/dev/null; then
    SELECT+=(--timeout=120)
  fi
  if "$PYTHON" -c 'import xdist' 2>/dev/null; then
    SELECT+=(-n "${VALIDATE_WORKERS:-8}")
  fi
else
  # The CPU stand-in: Triton kernels under the interpreter, a light subset.
  SELECT=(-k 'cpu and triton and not gradcheck and not fuzz'
          tests/ops/test_segment_softmax.py tests/ops/test_dropout.py
          tests/ops/test_gat_attention.py tests/nn/test_gat_conv_parity.py)
  TEST_FILES=()
fi
run_stage tests 220 "$OUT/tests.log" "$PYTHON" -m pytest -p no:cacheprovider \
  -q -rfE --junitxml="$OUT/tests.xml" "${TEST_FILES[@]}" "${SELECT[@]}"
tail -n 15 "$OUT/tests.log"

# 3. One layer against PyG: (nodes, edges, in channels, HEADSxCHANNELS:GRAPH,
# budget in s). ogbn-products: 2,449,029 nodes, 61,859,140 edges, 100
# features.
if (( SMALL )); then
  LAYER_RUNS=('20000 200000 128 8x8:uniform 90'
              '20000 200000 128 4x64:power_law 90'
              '24490 618591 100 8x32:power_law 90')
else
  LAYER_RUNS=('2000000 50000000 128 8x8:uniform 60'
              '2000000 50000000 128 4x64:power_law 70'
              '2449029 61859140 100 8x32:power_law 80')
fi
i=0
for spec in "${LAYER_RUNS[@]}"; do
  read -r nodes edges in_channels config budget <<< "$spec"
  i=$((i + 1))
  run_stage "layer:$config:${nodes}x${edges}" "$budget" - \
    "$PYTHON" benchmarks/nn/gat_conv.py --device "$DEVICE" \
    --nodes "$nodes" --edges "$edges" --in-channels "$in_channels" \
    --configs "$config" --csv "$SCRATCH/layer_$i.csv"
done
# One CSV of all rows (a run cut short by its timeout keeps the rows it
# finished: gat_conv.py rewrites its CSV after every row).
"$PYTHON" - "$OUT/layer.csv" "$SCRATCH" <<'EOF'
import csv
import glob
import os.path as osp
import sys

rows = []
for path in sorted(glob.glob(osp.join(sys.argv[2], 'layer_*.csv'))):
    with open(path, newline='') as f:
        rows += list(csv.DictReader(f))
if not rows:
    sys.exit()
fields = list(dict.fromkeys(k for row in rows for k in row))
with open(sys.argv[1], 'w', newline='') as f:
    writer = csv.DictWriter(f, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)
EOF

# 4. Full-batch training on the default graph of the device (on CUDA: 2M
# nodes, 100M edges, where PyG's layer runs out of memory), each
# implementation in its own process with its own time limit.
if (( SMALL )); then
  TRAIN_ARGS=(--nodes 20000 --edges 200000 --epochs 2 --timeout 40)
else
  TRAIN_ARGS=(--timeout 42)
fi
run_stage train_large 90 - "$PYTHON" benchmarks/nn/train_large.py \
  --device "$DEVICE" "${TRAIN_ARGS[@]}" --csv "$OUT/train_large.csv"

# 5. Summary.
"$PYTHON" - "$OUT" "$STATUS_FILE" "$(elapsed)" <<'EOF' | tee "$OUT/summary.txt"
import csv
import os.path as osp
import sys
import xml.etree.ElementTree as ET

out, status_file, seconds = sys.argv[1:]
print(f'== summary ({seconds} s)')

path = osp.join(out, 'tests.xml')
if osp.exists(path):
    counts = dict(tests=0, failures=0, errors=0, skipped=0)
    for suite in ET.parse(path).getroot().iter('testsuite'):
        for key in counts:
            counts[key] += int(suite.get(key, 0))
    passed = counts['tests'] - counts['failures'] - counts['errors'] \
        - counts['skipped']
    print(f"tests: {passed} passed, {counts['failures']} failed, "
          f"{counts['errors']} errors, {counts['skipped']} skipped "
          f"(of {counts['tests']})")
else:
    print('tests: no tests.xml')

path = osp.join(out, 'layer.csv')
rows = []
if osp.exists(path):
    with open(path, newline='') as f:
        rows = list(csv.DictReader(f))
print(f'layer: {len(rows)} rows (speed-up and memory ratio: PyG / ours; '
      f'fraction of the bandwidth bound: bound / fused kernel time)')
for r in rows:
    print(f"  {r['heads']}x{r['channels']} {r['graph']:<9} "
          f"N={r['nodes']} E={r['edges']} {r['mode']:<16} "
          f"ours {r['ours_ms']} ms {r['ours_peak_mib']} MiB | "
          f"pyg {r['pyg_ms']} ms {r['pyg_peak_mib']} MiB | "
          f"speed-up {r.get('speedup') or '-'} "
          f"memory {r.get('memory_ratio') or '-'} "
          f"bound {r.get('fraction_of_bound') or '-'}")

path = osp.join(out, 'train_large.csv')
if osp.exists(path):
    with open(path, newline='') as f:
        train = list(csv.DictReader(f))
    print('train_large:', ', '.join(r.get('nodes') or '' for r in train[:1]),
          'nodes,', ', '.join(r.get('edges') or '' for r in train[:1]),
          'edges')
    for r in train:
        print(f"  {r['impl']:<4} {r['status'][:60]:<15} "
              f"{r.get('ms_per_epoch') or '-'} ms/epoch, "
              f"peak {r.get('peak_mib') or '-'} MiB")
else:
    print('train_large: no train_large.csv')

print('stages:')
with open(status_file) as f:
    for line in f:
        print('  ' + line.rstrip())
EOF

if grep -qv ' ok$' "$STATUS_FILE"; then
  echo "validate.sh: some stages did not pass (see above)"
  exit 1
fi
echo "validate.sh: every stage passed"
