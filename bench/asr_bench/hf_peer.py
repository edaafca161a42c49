"""transformers' own `pipeline("automatic-speech-recognition")` behind a thin HTTP server, as a benchmark peer.

    python -m asr_bench.hf_peer --model DIR --ncpu 2 --host 127.0.0.1 --port 9000

This is how a Whisper checkpoint is served without an inference server: the pipeline called once per request
(`pipe(samples)`), one request at a time under a lock, greedy, on the same model directory, device and thread
count as ours. Generation settings come from the checkpoint's `generation_config.json` for both sides.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import threading
from pathlib import Path
from typing import Any

from aiohttp import web

from .peer_http import app, read_wav

log = logging.getLogger("asr_bench.hf_peer")


class Peer:
    def __init__(self, model: Path, ncpu: int, device: str = "cpu") -> None:
        import torch
        from transformers import pipeline

        if ncpu > 0:  # 0: torch's default (all cores), as for our server
            torch.set_num_threads(ncpu)
        self.pipe: Any = pipeline("automatic-speech-recognition", model=str(model), device=device)
        self.lock = threading.Lock()  # one request at a time: what a pipeline behind a plain web handler does

    def transcribe(self, wav: bytes) -> str:
        samples = read_wav(wav)
        with self.lock:
            out = self.pipe({"raw": samples, "sampling_rate": 16000}, generate_kwargs={"task": "transcribe"})
        return str(out.get("text", "")).strip()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m asr_bench.hf_peer", description=__doc__)
    parser.add_argument("--model", type=Path, required=True, help="a transformers ASR model directory (Whisper)")
    parser.add_argument("--ncpu", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("OMP_NUM_THREADS", str(args.ncpu))
    device = "cuda" if args.device == "auto" and _cuda() else ("cpu" if args.device == "auto" else args.device)
    peer = Peer(args.model.resolve(), args.ncpu, device)
    with contextlib.suppress(KeyboardInterrupt):
        web.run_app(app(peer), host=args.host, port=args.port, print=None)


def _cuda() -> bool:
    import torch

    return bool(torch.cuda.is_available())


if __name__ == "__main__":
    main()
