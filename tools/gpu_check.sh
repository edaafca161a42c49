#!/usr/bin/env bash
# The GPU run in one command (tools/gpu_check.py says what it measures): on a machine with one GPU,
#   tools/gpu_check.sh [--out DIR] [--device cuda:N]      -> DIR/gpu_check.json + gpu_check.txt
#   tools/gpu_check.sh --cpu-smoke                        -> the same steps on this CPU (tests run it)
# Python: this checkout's .venv when there is one; else the machine's python3 with this repo's packages on
# PYTHONPATH and, where the machine cannot install (no network), wheels carried in .wheels/ (installed to /tmp/site).
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ -x .venv/bin/python ]]; then
  py=.venv/bin/python
else
  py=python3
  if [[ -d .wheels ]]; then
    "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .wheels/*.whl
    export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
  fi
  export PYTHONPATH="$PWD/inference:$PWD/bench${PYTHONPATH:+:$PYTHONPATH}"
  # asr-serve without an installed entry point
  mkdir -p /tmp/gpu-check-bin
  printf '#!/bin/sh\nexec %s -m asr_inference "$@"\n' "$(command -v "$py")" >/tmp/gpu-check-bin/asr-serve
  chmod +x /tmp/gpu-check-bin/asr-serve
  export PATH="/tmp/gpu-check-bin:$PATH"
fi
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 MODELSCOPE_OFFLINE=1 PYTHONUNBUFFERED=1
exec "$py" tools/gpu_check.py "$@"
