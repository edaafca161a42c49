#!/usr/bin/env bash
# Regenerates inference/asr_inference/assets/warmup.wav: the speech clip the server warms up with (espeak-ng + sox).
set -euo pipefail
out=${1:-inference/asr_inference/assets/warmup.wav}
tmp=$(mktemp --suffix=.wav)
espeak-ng -v en-us -s 160 -w "$tmp" "hello world, one two three four five, stop, go, yes, no"
sox "$tmp" -r 16000 -c 1 -b 16 "$out"
rm -f "$tmp"
