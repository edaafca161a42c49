"""transformers' own way of running a checkpoint behind a thin HTTP server, as a benchmark peer.

    python -m asr_bench.hf_peer --model DIR --ncpu 2 --host 127.0.0.1 --port 9000

This is how a checkpoint is served without an inference server, one request at a time under a lock, greedy, on the
same model directory, device and thread count as ours: Whisper through `pipeline("automatic-speech-recognition")`
(`pipe(samples)`); GLM-ASR through its model card's recipe (`processor.apply_transcription_request(audio)` →
`model.generate` → decode the new tokens), as the pipeline has no chat-template audio LLMs. Generation settings
come from the checkpoint's `generation_config.json` for both sides.
"""

from __future__ import annotations

import argparse
import contextlib
import json
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

        if ncpu > 0:  # 0: torch's default (all cores), as for our server
            torch.set_num_threads(ncpu)
        self.glm = json.loads((model / "config.json").read_text()).get("model_type") == "glmasr"
        if self.glm:
            from transformers import AutoProcessor, GlmAsrForConditionalGeneration

            self.processor: Any = AutoProcessor.from_pretrained(model)
            loaded: Any = GlmAsrForConditionalGeneration.from_pretrained(model)
            self.model: Any = loaded.to(device).eval()
        else:
            from transformers import pipeline

            self.pipe: Any = pipeline("automatic-speech-recognition", model=str(model), device=device)
        self.lock = threading.Lock()  # one request at a time: what a model behind a plain web handler does

    def transcribe(self, wav: bytes) -> str:
        samples = read_wav(wav)
        with self.lock:
            if self.glm:
                return self._glm(samples)
            out = self.pipe({"raw": samples, "sampling_rate": 16000}, generate_kwargs={"task": "transcribe"})
        return str(out.get("text", "")).strip()

    def _glm(self, samples: Any) -> str:
        import torch

        inputs = self.processor.apply_transcription_request([samples]).to(self.model.device)
        with torch.inference_mode():
            out = self.model.generate(**inputs, do_sample=False)
        new = out[0, inputs["input_ids"].shape[1] :]
        return str(self.processor.tokenizer.decode(new, skip_special_tokens=True)).strip()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m asr_bench.hf_peer", description=__doc__)
    parser.add_argument(
        "--model", type=Path, required=True, help="a transformers ASR model directory (Whisper, GLM-ASR)"
    )
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
