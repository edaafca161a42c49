"""FunASR's own ONNX runtime (`funasr-onnx`) behind a thin HTTP server, as a benchmark peer.

    python -m asr_bench.onnx_peer --model DIR [--quantize] --ncpu 2 --host 127.0.0.1 --port 9000

`funasr-onnx` has no server: its examples call `SenseVoiceSmall(model_dir)(wav)` one request at a time, so this
serves exactly that behind `peer_http` (decoded under a lock, one at a time). The model it runs is FunASR's own
export (`AutoModel.export(type="onnx", quantize=...)`: `model.onnx` / `model_quant.onnx`), made once into a work
directory next to the model (links to its files, the tokenizer under the name funasr-onnx looks for), so the model
directory itself is never written.
Its ONNX Runtime session gets `--ncpu` intra-op threads, as our server gets torch threads.
"""

from __future__ import annotations

import logging
import re
import threading
from pathlib import Path
from typing import Any

from .peer_http import read_wav, run_onnx_peer

log = logging.getLogger("asr_bench.onnx_peer")
TAGS = re.compile(r"<\|[^|]*\|>")  # SenseVoice's language/emotion/event/itn tags, as funasr-server strips them
TOKENIZER_NAME = "chn_jpn_yue_eng_ko_spectok.bpe.model"  # the file name funasr_onnx.SenseVoiceSmall opens


def work_dir(model: Path, quantize: bool) -> Path:
    """A directory funasr-onnx can load: links to the model's files and FunASR's export of it (made once)."""
    out = model.parent / f"{model.name}.funasr-onnx"
    target = out / ("model_quant.onnx" if quantize else "model.onnx")
    if target.is_file():
        return out
    out.mkdir(exist_ok=True)
    for f in model.iterdir():
        link = out / f.name
        if f.is_file() and not link.exists():
            link.symlink_to(f.resolve())
    tokenizer = out / TOKENIZER_NAME
    if not tokenizer.exists() and (model / "bpe.model").is_file():
        tokenizer.symlink_to((model / "bpe.model").resolve())
    import torch
    from funasr import AutoModel

    original = torch.onnx.export

    def torchscript_export(*args: Any, **kwargs: Any) -> Any:
        # torch >= 2.9 defaults to the dynamo exporter, which needs onnxscript; funasr's export was written for
        # the TorchScript one (the one our --runtime onnx uses too)
        kwargs.setdefault("dynamo", False)
        return original(*args, **kwargs)

    torch.onnx.export = torchscript_export
    try:
        automodel = AutoModel(model=str(out), disable_update=True, device="cpu")
        exported = automodel.export(type="onnx", quantize=quantize)
    finally:
        torch.onnx.export = original
    log.info("funasr exported %s", exported)
    if not target.is_file():
        raise RuntimeError(f"funasr's export did not write {target} (it returned {exported!r})")
    return out


class Peer:
    def __init__(self, model: Path, quantize: bool, ncpu: int) -> None:
        from funasr_onnx import SenseVoiceSmall

        self.model = SenseVoiceSmall(str(work_dir(model, quantize)), quantize=quantize, intra_op_num_threads=ncpu)
        self.lock = threading.Lock()  # one request at a time, as funasr-onnx's own examples run it

    def transcribe(self, wav: bytes) -> str:
        samples = read_wav(wav)
        with self.lock:
            result: Any = self.model(samples, language="auto", textnorm="woitn")
        return TAGS.sub("", str(result[0])).strip() if result else ""


def main(argv: list[str] | None = None) -> None:
    run_onnx_peer("python -m asr_bench.onnx_peer", __doc__, Peer, argv)


if __name__ == "__main__":
    main()
