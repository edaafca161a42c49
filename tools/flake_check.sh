#!/usr/bin/env bash
# Run pytest on the given tests N times in a row while a CPU burner keeps every core busy; stop at the first failure.
#   tools/flake_check.sh 20 tests/playground/test_playground_browser.py
# A test that waits for a proxy of the state it asserts, or sleeps a guessed time, fails here long before CI.
# Burner: stress-ng when installed (apt-get install stress-ng), else one busy Python loop per core.
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:?usage: tools/flake_check.sh RUNS PYTEST_ARGS...}"
shift
cores="$(nproc)"
if command -v stress-ng >/dev/null; then
  stress-ng --cpu "$cores" --quiet &
else
  for _ in $(seq "$cores"); do python3 -c 'while 1: pass' & done
fi
trap 'kill $(jobs -p) 2>/dev/null || true' EXIT
passed=0
for i in $(seq "$runs"); do
  if ! .venv/bin/python -m pytest -q -p no:cacheprovider "$@" >"/tmp/flake_check.$i.log" 2>&1; then
    echo "flake_check: run $i of $runs FAILED (passed $passed before it) — /tmp/flake_check.$i.log" >&2
    tail -n 30 "/tmp/flake_check.$i.log" >&2
    exit 1
  fi
  passed=$((passed + 1))
  echo "flake_check: run $i of $runs passed ($(tail -n 1 "/tmp/flake_check.$i.log"))"
done
echo "flake_check: $passed of $runs runs passed under $cores busy cores"
