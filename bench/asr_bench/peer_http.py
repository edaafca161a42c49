"""The thin HTTP server every Python-API peer of `asr-bench` runs behind (funasr-onnx, sherpa-onnx, transformers):
`POST /v1/audio/transcriptions` (multipart `file`, a 16-kHz WAV) → `{"text"}`, `GET /health` once loaded. The
peer's `transcribe(wav)` runs on a worker thread; the peer decides its own concurrency (a lock: one at a time)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import numpy as np
import soundfile as sf
from aiohttp import web


class Transcribes(Protocol):
    def transcribe(self, wav: bytes) -> str: ...


def read_wav(wav: bytes) -> np.ndarray:
    """16-kHz mono float32 samples of a WAV upload (the benchmark's clips are 16 kHz)."""
    samples, rate = sf.read(io.BytesIO(wav), dtype="float32")
    if samples.ndim == 2:
        samples = samples.mean(axis=1)
    if rate != 16000:
        raise ValueError(f"send 16-kHz audio (got {rate} Hz)")
    return np.ascontiguousarray(samples)


def _bad_request(message: str) -> web.Response:
    return web.json_response({"error": {"message": message, "type": "invalid_request_error"}}, status=400)


def app(peer: Transcribes) -> web.Application:
    async def health(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def transcriptions(request: web.Request) -> web.Response:
        wav = b""
        if not request.content_type.startswith("multipart/"):
            return _bad_request("send multipart/form-data with a `file` part")
        async for part in await request.multipart():
            if getattr(part, "name", None) == "file":
                wav = await part.read()  # type: ignore[union-attr]
        if not wav:
            return _bad_request("no `file` part")
        text = await asyncio.get_running_loop().run_in_executor(None, peer.transcribe, wav)
        return web.json_response({"text": text})

    application = web.Application(client_max_size=64 << 20)
    application.add_routes([web.get("/health", health), web.post("/v1/audio/transcriptions", transcriptions)])
    return application


def run_onnx_peer(
    prog: str, description: str | None, make_peer: Callable[[Path, bool, int], Transcribes], argv: list[str] | None
) -> None:
    """The command line of a peer that runs a SenseVoice model directory on ONNX Runtime (funasr-onnx, sherpa-onnx):
    `--model DIR [--quantize] --ncpu N --host H --port P`; `make_peer(model, quantize, ncpu)` loads it."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--model", type=Path, required=True, help="a SenseVoice model directory")
    parser.add_argument("--quantize", action="store_true", help="the INT8 graph instead of the fp32 one")
    parser.add_argument("--ncpu", type=int, default=2, help="ONNX Runtime intra-op threads")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("OMP_NUM_THREADS", str(args.ncpu))
    peer = make_peer(args.model.resolve(), args.quantize, args.ncpu)
    with contextlib.suppress(KeyboardInterrupt):
        web.run_app(app(peer), host=args.host, port=args.port, print=None)
