#!/usr/bin/env bash
# The command-line fuzzer (tests/test_fuzz.py) with many examples per test, before a release:
#
#   bash scripts/fuzz.sh [EXAMPLES]     # default 2000 per test; CI runs 25
#
# Derandomized like CI's run, so a failure found here is found again by the same command.
set -euo pipefail
if [[ ${1:-} == -h || ${1:-} == --help ]]; then
  sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//'
  exit 0
fi
examples=${1:-2000}
if ! [[ $examples =~ ^[1-9][0-9]*$ ]]; then
  echo "error: EXAMPLES is a positive number of examples per test, not '$examples' (see --help)." >&2
  exit 2
fi
cd "$(dirname "$0")/.."
LNEXP_FUZZ_EXAMPLES=$examples exec python -m pytest -q tests/test_fuzz.py
