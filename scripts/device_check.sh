#!/usr/bin/env bash
# The accelerator check: one prepared script, at most 8 minutes on one GPU.
#
#   bash scripts/device_check.sh                 # on a GPU machine, from the repository root
#   bash scripts/device_check.sh --dry-run       # every step but the GPU install, on the CPU
#   bash scripts/device_check.sh --dry-run --quick --out /tmp/check   # what the test runs
#
# Steps (each failure stops the script with a non-zero status and a line naming the step):
#   1. install   pip install -e ".[cuda12]" (--cuda 13: the CUDA 13 build), unless JAX's GPU
#                build is already there (then lnexp alone, or nothing with --no-install);
#                skipped with --dry-run
#   2. devices   print JAX's devices into OUT/devices.txt; fails unless a GPU is present
#                (--dry-run: the CPU is fine)
#   3. tests     pytest on what an accelerator changes: the norms in bfloat16/float16, the
#                cells, one short training of every experiment's :tiny config in bfloat16 and
#                float16 (loss falling, metrics finite, float32 checkpoints), float16's loss
#                scaling, float32 runs unchanged (tests/test_precision.py, tests/test_cells.py)
#   4. devices   one device against all of them (tests/test_devices.py); skipped, and said so,
#      1-vs-N    with one device (--dry-run: on 2 forced CPU devices)
#   5. bench     scripts/bench.py --sections pimnist,recurrent,transformer,draw into OUT/bench.json
#                and OUT/bench.md; fails if a row errored or a section timed nothing
#
# --dry-run times the bench sections at small sizes (the CPU would take many minutes at the
# GPU's). --quick (for tests/test_device_check.py, under a minute on 2 CPU cores): a handful of
# the tests of step 3, no step 4, and only the recurrent bench section at its smallest sizes.
# Everything is logged to OUT/device_check.log (OUT defaults to results/device).
set -euo pipefail

usage() {
    sed -n '2,/^set -euo/p' "$0" | grep '^#' | sed 's/^# \{0,1\}//'
    echo "Options: --dry-run --quick --out DIR --cuda 12|13 --wheels DIR --no-install --python PY"
}

DRY_RUN=0
QUICK=0
NO_INSTALL=0
OUT="results/device"
CUDA=12
WHEELS=""
PY="${PYTHON:-python3}"
while [[ $# -gt 0 ]]; do
    case "$1" in
        --dry-run) DRY_RUN=1 ;;
        --quick) QUICK=1 ;;
        --no-install) NO_INSTALL=1 ;;
        --out) OUT="$2"; shift ;;
        --cuda) CUDA="$2"; shift ;;
        --wheels) WHEELS="$2"; shift ;;
        --python) PY="$2"; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "device_check: unknown option $1" >&2; usage >&2; exit 2 ;;
    esac
    shift
done
if [[ "$CUDA" != 12 && "$CUDA" != 13 ]]; then
    echo "device_check: --cuda takes 12 or 13, got $CUDA" >&2
    exit 2
fi

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
LOG="$OUT/device_check.log"
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"  # lnexp importable even uninstalled.
export PYTHONUNBUFFERED=1
if [[ $DRY_RUN == 1 ]]; then
    export JAX_PLATFORMS=cpu
fi

STEP=""
START=$SECONDS
step() {
    STEP="$1"
    echo
    echo "=== device_check step: $STEP ($((SECONDS - START)) s)"
}
fail() {
    echo "device_check: FAILED at step '$STEP': $*" >&2
    STEP=""
    exit 1
}
on_exit() {
    local status=$?
    if [[ $status != 0 && -n "$STEP" ]]; then
        echo "device_check: FAILED at step '$STEP' (exit status $status)" >&2
    fi
}

main() {
trap on_exit EXIT
echo "device_check: dry-run=$DRY_RUN quick=$QUICK out=$OUT python=$PY ($("$PY" --version 2>&1))"

# 1. The GPU build of JAX.
step install
if [[ $DRY_RUN == 1 ]]; then
    echo "--dry-run: nothing installed"
elif [[ $NO_INSTALL == 1 ]]; then
    echo "--no-install: nothing installed"
else
    PIP=("$PY" -m pip install)
    if [[ -n "$WHEELS" ]]; then
        PIP+=(--no-index --find-links "$WHEELS")
    fi
    if "$PY" -c "import jax, sys; sys.exit(jax.default_backend() != 'gpu')" 2>/dev/null; then
        echo "JAX's GPU build is already installed: installing lnexp and its experiments"
        "${PIP[@]}" -e ".[experiments,test]" ||
            fail "pip install -e \".[experiments,test]\" failed (offline? pass --wheels DIR or --no-install)"
    else
        "${PIP[@]}" -e ".[experiments,test,cuda$CUDA]" ||
            fail "pip install -e \".[experiments,test,cuda$CUDA]\" failed"
    fi
fi
"$PY" -c "import lnexp.training, lnexp.bench, pytest" ||
    fail "lnexp or its dependencies do not import (install them, or drop --no-install)"

# 2. The devices.
step devices
"$PY" - "$OUT/devices.txt" "$DRY_RUN" <<'EOF' || fail "JAX found no GPU (its backend is not 'gpu')"
import sys

import jax

lines = [
    f"jax {jax.__version__}, backend {jax.default_backend()}, {jax.device_count()} devices",
    *(f"  {d.id}: {d.device_kind} ({d.platform})" for d in jax.devices()),
]
print("\n".join(lines))
with open(sys.argv[1], "w") as f:
    f.write("\n".join(lines) + "\n")
if sys.argv[2] != "1" and jax.default_backend() != "gpu":
    sys.exit(1)
EOF
NUM_DEVICES="$("$PY" -c "import jax; print(jax.device_count())")"

# 3. The tests that matter on an accelerator.
step tests
PYTEST=("$PY" -m pytest -q -n 0 -p no:cacheprovider -rs --junitxml="$OUT/pytest.xml")
if [[ $QUICK == 1 ]]; then
    "${PYTEST[@]}" tests/test_precision.py -k \
        "normalizers_in_low or zero_variance or loss_scale_lowers or overflowing_step_is_skipped" ||
        fail "pytest (quick) failed"
else
    "${PYTEST[@]}" tests/test_precision.py tests/test_cells.py || fail "pytest failed"
fi

# 4. One device against all of them.
step "1-vs-N devices"
if [[ $QUICK == 1 ]]; then
    echo "--quick: skipped"
elif [[ $DRY_RUN == 1 ]]; then
    XLA_FLAGS="--xla_force_host_platform_device_count=2 ${XLA_FLAGS:-}" \
        "$PY" -m pytest -q -n 0 -p no:cacheprovider tests/test_devices.py ||
        fail "1 vs 2 forced CPU devices differ"
elif [[ $NUM_DEVICES -lt 2 ]]; then
    echo "1 device: the 1-vs-N comparison needs several; skipped"
else
    "$PY" -m pytest -q -n 0 -p no:cacheprovider tests/test_devices.py ||
        fail "1 vs $NUM_DEVICES devices differ"
fi

# 5. The benchmarks.
step bench
# PyTorch's rows run on the CPU, and torch.compile's take minutes there: left out.
BENCH=("$PY" scripts/bench.py --out="$OUT/bench.json" --markdown="$OUT/bench.md"
    --notorch_compile)
SMALL=(--batch=2 --hidden=4 --input=3 --steps=2 --repeats=1 --warmup=0 --unrolls=1)
if [[ $QUICK == 1 ]]; then
    SECTIONS=recurrent
elif [[ $DRY_RUN == 1 ]]; then  # The CPU would take many minutes at the GPU's sizes.
    SECTIONS=pimnist,recurrent,transformer,draw
    SMALL+=(--pimnist_norms=none,layer --pimnist_batches=8 --pimnist_examples=16
        --pimnist_repeats=1 --transformer_config=configs/transformer.py:tiny
        --transformer_steps=2 --transformer_repeats=1 --draw_glimpses=2 --draw_steps=1
        --draw_repeats=1)
else
    SECTIONS=pimnist,recurrent,transformer,draw
    SMALL=()
fi
"${BENCH[@]}" --sections=$SECTIONS ${SMALL[@]+"${SMALL[@]}"} >/dev/null ||
    fail "scripts/bench.py failed"
"$PY" - "$OUT/bench.json" "$SECTIONS" <<'EOF' || fail "a benchmark row failed (see above)"
import json
import sys

results = json.load(open(sys.argv[1]))
problems = []
for name in sys.argv[2].split(","):
    rows = results["sections"].get(name, {}).get("rows", [])
    problems += [f"{name}: {r['name']}: {r['error']}" for r in rows if r.get("error")]
    if not any("median_ms" in r for r in rows):
        problems.append(f"{name}: no row was timed")
print("\n".join(problems) or f"bench: every section timed ({sys.argv[2]})")
sys.exit(1 if problems else 0)
EOF
cat "$OUT/bench.md"

STEP=""
echo
echo "device_check: passed in $((SECONDS - START)) s; results in $OUT"
}

main 2>&1 | tee "$LOG"
