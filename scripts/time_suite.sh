#!/usr/bin/env bash
# Times the test suite as CI and a new contributor meet it, and lists its slowest tests:
#
#   bash scripts/time_suite.sh cold [LOG]   # an empty compilation cache (a fresh machine)
#   bash scripts/time_suite.sh warm [LOG]   # the cache an earlier run of this script left
#
# Prints the wall time, the CPU and the twelve slowest tests; LOG (default
# /tmp/lnexp-suite-MODE.log) keeps pytest's whole output, every test's duration included.
# Time on an idle machine: pause any training first (kill -STOP, then kill -CONT).
set -euo pipefail
for arg in "$@"; do
  if [[ $arg == -h || $arg == --help ]]; then
    sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'
    exit 0
  fi
done
mode=${1:-}
if [[ $mode != cold && $mode != warm ]]; then
  echo "error: the mode is 'cold' or 'warm', not '$mode' (see --help)." >&2
  exit 2
fi
log=${2:-/tmp/lnexp-suite-$mode.log}
cache=${TMPDIR:-/tmp}/lnexp-suite-timing-jax-cache
[[ $mode == cold ]] && rm -rf "$cache"
cd "$(dirname "$0")/.."
start=$(date +%s.%N)
status=0
JAX_COMPILATION_CACHE_DIR=$cache python -m pytest -q -p no:cacheprovider --durations=0 \
  >"$log" 2>&1 || status=$?
end=$(date +%s.%N)
cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //' || true)
echo "$mode: $(python -c "print(f'{$end - $start:.1f}')") s on $(nproc) cores of ${cpu:-an unknown CPU}; pytest exit status $status"
tail -n 1 "$log"
grep -E '^[0-9.]+s (setup|call|teardown) ' "$log" | head -n 12
exit "$status"
