#!/usr/bin/env bash
# Figure 6 again at the protocol the batch-128 ablation chose (issue 26), for every method whose
# choice changed: each method at its best single choice (results/fig6_ablation/ablation.md),
# 3 seeds, 64 epochs. Resumable: re-run the same command; finished runs are skipped.
#
#   scripts/fig6_protocol.sh WORKDIR MNIST_DIR [BATCH_SIZES]   # default 128,4
#
# Seeds 0 and 1 at batch 128 are the ablation's own runs: copy them into WORKDIR first
# (docs/studies/fig6.md shows how) and only seed 2 trains. Report and verdicts:
#   python scripts/compare.py --workdir WORKDIR --report --claims
set -euo pipefail
for arg in "$@"; do
  if [[ $arg == -h || $arg == --help ]]; then
    sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'
    exit 0
  fi
done
if (( $# < 2 || $# > 3 )); then
  echo "error: expected WORKDIR MNIST_DIR [BATCH_SIZES], got $# arguments (see --help)." >&2
  exit 2
fi
workdir=$1 data=$2 sizes=${3:-128,4}
grid() {
  python scripts/compare.py --config configs/pimnist.py --workdir "$workdir" --seeds 3 \
    --config.data.dir="$data" "$@" --grid batch_size="$sizes"
}
# Layer norm: Adam 1e-3 (the ablation's N(0, 0.01^2) init is the same lever: under layer norm a
# smaller initial scale only makes Adam's steps larger relative to the weights).
grid --grid model.norm=layer --config.optimizer.learning_rate=1e-3
# Batch norm: Adam 1e-4.
grid --grid model.norm=batch --config.optimizer.learning_rate=1e-4
# The baseline: Glorot-uniform weights.
grid --grid model.norm=none --config.model.kernel_init=glorot_uniform
