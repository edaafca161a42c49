#!/usr/bin/env bash
# Wheels for tools/gpu_check.sh on the device machine, whose image has PyTorch, numpy, transformers, httpx,
# aiohttp, matplotlib ... but not funasr or the server's web stack, and no network: fetched here into .wheels/ for
# CPython 3.12 (that image's), the versions this checkout's .venv runs. Pure-Python sdists (antlr4, the aliyun SDK)
# are built into wheels here. Carry `.wheels` in the device call; gpu_check.sh installs it. Left out to stay under
# the 64 MiB a call carries (with the tree): jieba (19 MB; funasr's punctuation model only), umap-learn and
# pynndescent (speaker clustering), crcmod (a C extension built for this Python; oss2 falls back without it).
#   tools/gpu_wheels.sh        -> .wheels/ (.gitignore'd), its size on the last line (the carry limit is 64 MiB)
set -euo pipefail
cd "$(dirname "$0")/.."
py=.venv/bin/python
mkdir -p .wheels
packages=(
  # the server
  funasr kaldi-native-fbank sentencepiece fastapi starlette uvicorn httptools uvloop watchfiles websockets
  python-multipart python-dotenv pydantic pydantic-core pydantic-settings annotated-types typing-inspection
  soundfile soxr silero-vad
  # what funasr imports
  hydra-core omegaconf antlr4-python3-runtime jaconv jamo kaldiio torch-complex rapidfuzz librosa audioread
  pooch soxr tensorboardX modelscope oss2 pycryptodome aliyun-python-sdk-core aliyun-python-sdk-kms decorator
)
platforms=()
for n in 17 24 27 28 31 34; do platforms+=(--platform "manylinux_2_${n}_x86_64"); done
platforms+=(--platform manylinux2014_x86_64 --platform linux_x86_64 --platform any)
for pkg in $(printf '%s\n' "${packages[@]}" | sort -u); do
  version="$("$py" -c "import importlib.metadata as m; print(m.version('$pkg'))")"
  "$py" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${platforms[@]}" -d .wheels "$pkg==$version" 2>/dev/null \
    || "$py" -m pip wheel -q --no-deps -w .wheels "$pkg==$version"  # a pure-Python sdist
done
du -sh .wheels
