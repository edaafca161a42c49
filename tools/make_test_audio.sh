#!/usr/bin/env bash
# Regenerates tests/data/speech/: small real-speech clips for the tests (espeak-ng + sox; mp3 via ffmpeg).
# Needs: apt-get install -y espeak-ng sox; ffmpeg on PATH or the imageio-ffmpeg wheel (.venv).
set -euo pipefail
out=${1:-tests/data/speech}
mkdir -p "$out"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
say() {  # name voice speed text
  espeak-ng -v "$2" -s "$3" -w "$tmp/$1.wav" "$4"
  sox "$tmp/$1.wav" -r 16000 -c 1 -b 16 "$out/$1.wav"
}
say short_hello en-us 170 "hello"
say digits_a en-us 160 "one two three"
say digits_b en-gb 150 "seven eight nine zero"
say command_c en-us+f3 140 "stop go yes no"
say sentence_d en-gb+m3 175 "hello world, four five six, stop"
say sentence_e en-us 130 "the quick brown fox jumps over the lazy dog"
say longer_f en-us+f2 150 "one two three four five six seven eight nine ten, hello world, yes no stop go, one more time"
# other containers / rates / channels of the same speech
sox "$out/sentence_d.wav" -r 44100 -c 2 -b 16 "$out/sentence_d_44k_stereo.wav"
sox "$out/digits_b.wav" -r 22050 "$out/digits_b_22k.flac"
sox "$out/command_c.wav" -r 48000 "$out/command_c_48k.ogg"
ffmpeg=$(command -v ffmpeg || .venv/bin/python -c 'import imageio_ffmpeg; print(imageio_ffmpeg.get_ffmpeg_exe())')
"$ffmpeg" -loglevel error -y -i "$out/digits_a.wav" -codec:a libmp3lame -b:a 48k "$out/digits_a.mp3"
"$ffmpeg" -loglevel error -y -i "$out/digits_a.wav" -c:a aac -b:a 48k "$out/digits_a.m4a"
ls -la "$out"
