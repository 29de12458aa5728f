#!/usr/bin/env bash
# Figure 6 again at the protocol the batch-128 ablation chose (issue 26), for every method whose
# choice changed: each method at its best single choice (results/fig6_ablation/ablation.md),
# 3 seeds, 64 epochs. Resumable: re-run the same command; finished runs are skipped.
#
#   scripts/fig6_protocol.sh WORKDIR MNIST_DIR [BATCH_SIZES] [ABLATION_DIR]   # default 128,4
#
# Seeds 0 and 1 at batch 128 are the ablation's own runs (the same configs; runs are
# deterministic): with ABLATION_DIR (e.g. results/fig6_ablation) their config.json and
# metrics.jsonl are copied into WORKDIR where it lacks them (when BATCH_SIZES holds 128), and
# only seed 2 trains there (a finished run is skipped without comparing its config).
# Report and verdicts: python scripts/compare.py --workdir WORKDIR --report --claims
set -euo pipefail
for arg in "$@"; do
  if [[ $arg == -h || $arg == --help ]]; then
    sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'
    exit 0
  fi
done
if (( $# < 2 || $# > 4 )); then
  echo "error: expected WORKDIR MNIST_DIR [BATCH_SIZES] [ABLATION_DIR], got $# arguments" \
    "(see --help)." >&2
  exit 2
fi
workdir=$1 data=$2 sizes=${3:-128,4} ablation=${4:-}
# Each method's cell in the ablation: model.norm, then its one choice.
choices=("layer optimizer.learning_rate=1e-3" "batch optimizer.learning_rate=1e-4"
  "none model.kernel_init=glorot_uniform")
if [[ -n $ablation && ,$sizes, == *,128,* ]]; then
  for pair in "${choices[@]}"; do  # Every cell checked before anything is copied.
    read -r norm choice <<<"$pair"
    for seed in 0 1; do
      from="$ablation/model.norm=$norm,$choice/seed=$seed"
      if [[ ! -f $from/metrics.jsonl || ! -f $from/config.json ]]; then
        echo "error: $from has no config.json and metrics.jsonl: ABLATION_DIR must be the" \
          "ablation's grid (scripts/fig6_ablation.sh) or its export, results/fig6_ablation." >&2
        exit 2
      fi
    done
  done
  for pair in "${choices[@]}"; do
    read -r norm choice <<<"$pair"
    for seed in 0 1; do
      from="$ablation/model.norm=$norm,$choice/seed=$seed"
      to="$workdir/model.norm=$norm,batch_size=128/seed=$seed"
      if [[ ! -e $to ]]; then
        mkdir -p "$to" && cp "$from/config.json" "$from/metrics.jsonl" "$to/"
      fi
    done
  done
fi
grid() {
  python scripts/compare.py --config configs/pimnist.py --workdir "$workdir" --seeds 3 \
    --config.data.dir="$data" "$@" --grid batch_size="$sizes"
}
for pair in "${choices[@]}"; do
  read -r norm choice <<<"$pair"
  grid --grid model.norm="$norm" --config."$choice"
done
