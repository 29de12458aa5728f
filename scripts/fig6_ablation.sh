#!/usr/bin/env bash
# Figure 6's ablation at batch 128 (issue 26): each choice alone against today's protocol
# (Adam 3e-4 constant, He-normal init, [0, 1] pixels, LN epsilon 1e-5, Adam epsilon 1e-8),
# 2 seeds, 64 epochs. Resumable: re-run the same command; finished runs are skipped.
#
#   scripts/fig6_ablation.sh WORKDIR MNIST_DIR choices   # LN and the baseline: the other choices
#   scripts/fig6_ablation.sh WORKDIR MNIST_DIR rates     # all four methods: Adam's rate
#
# Report (validation error over the last 16 epochs; test error beside it):
#   python -m lnexp.studies.pimnist.ablation --workdir WORKDIR
set -euo pipefail
if [[ ${1:-} == -h || ${1:-} == --help ]]; then
  sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'
  exit 0
fi
if (( $# != 3 )); then
  echo "error: expected WORKDIR MNIST_DIR choices|rates, got $# arguments (see --help)." >&2
  exit 2
fi
workdir=$1 data=$2 part=$3
grid() {
  python scripts/compare.py --config configs/pimnist.py --workdir "$workdir" --seeds 2 \
    --config.data.dir="$data" --metric valid_error --metrics train_nll,valid_error "$@"
}
case $part in
  choices)
    grid --grid model.norm=layer,none --grid optimizer.schedule=cosine
    grid --grid model.norm=layer,none --grid model.kernel_init=glorot_uniform
    grid --grid model.norm=layer,none --grid data.input_scaling=standardize
    grid --grid model.norm=layer,none --grid model.kernel_init=normal_0.01
    grid --grid model.norm=layer --grid model.epsilon=1e-3
    grid --grid model.norm=layer,none --grid optimizer.eps=1e-4
    ;;
  rates)
    grid --grid model.norm=layer,none --grid optimizer.learning_rate=3e-5,1e-4,3e-4,1e-3,3e-3
    grid --grid model.norm=batch,weight --grid optimizer.learning_rate=3e-5,1e-4,3e-4,1e-3,3e-3
    ;;
  *) echo "error: the part is 'choices' or 'rates', not '$part'." >&2; exit 2 ;;
esac
