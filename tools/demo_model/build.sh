#!/usr/bin/env bash
# Build the embedded demo model end to end, offline, on CPU:
#   synth -> prep -> train -> evaluate -> card -> fixtures
#
# Usage: tools/demo_model/build.sh OUT_DIR WORK_DIR
#   OUT_DIR   the model directory to (re)write, e.g. inference/asr_inference/models/demo
#   WORK_DIR  scratch space for the corpus and caches (~1.2 GB), outside git, e.g. /tmp/demo_work
# Environment: PYTHON (default .venv/bin/python), N_TRAIN (8000), N_HELDOUT (450), EPOCHS (18),
#   BUDGET_S (1680: training wall-clock limit in seconds), THREADS (2).
# About 25-30 minutes on 2 CPU cores. Also refreshes tests/data/demo_heldout/ and samples/demo.{wav,txt}.
set -euo pipefail

if [[ $# -ne 2 ]]; then
    sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
fi
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
mkdir -p "$1" "$2"
OUT="$(cd "$1" && pwd)"
WORK="$(cd "$2" && pwd)"
THREADS="${THREADS:-2}"
export OMP_NUM_THREADS="$THREADS"

command -v espeak-ng >/dev/null || { echo "espeak-ng is required (apt-get install espeak-ng)" >&2; exit 1; }
step() { echo "== $(date +%T) $*"; }

step "synthesise corpus -> $WORK"
"$PYTHON" "$HERE/synth.py" "$WORK" --train "${N_TRAIN:-8000}" --heldout "${N_HELDOUT:-450}" --jobs "$THREADS"
step "tokenizer, config, CMVN, feature cache -> $OUT"
"$PYTHON" "$HERE/prep.py" "$WORK" "$OUT"
step "train"
"$PYTHON" "$HERE/train.py" "$WORK" "$OUT" --epochs "${EPOCHS:-18}" --budget-s "${BUDGET_S:-1680}" --threads "$THREADS"
step "evaluate on held-out clips through funasr.AutoModel.generate"
"$PYTHON" "$HERE/evaluate.py" "$WORK" "$OUT" --threads "$THREADS"
step "model card"
"$PYTHON" "$HERE/card.py" "$WORK" "$OUT"
step "test fixtures and README sample"
"$PYTHON" "$HERE/fixtures.py" "$WORK" "$OUT" --repo-root "$ROOT"
step "done: $OUT"
