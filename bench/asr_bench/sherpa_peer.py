"""sherpa-onnx's offline SenseVoice recognizer behind a thin HTTP server, as a benchmark peer.

    python -m asr_bench.sherpa_peer --model DIR [--quantize] --ncpu 2 --host 127.0.0.1 --port 9000

sherpa-onnx runs its own features (kaldi-native-fbank, LFR, CMVN from the model's metadata), ONNX Runtime and CTC
decoding in C++. It needs the model as one ONNX file in its SenseVoice signature — x (N, T, 560), x_length,
language, text_norm (N,) int32 -> logits (N, 4 + T, vocab) — with the metadata its loader reads (LFR window, CMVN
as neg_mean / inv_stddev, the language and ITN query ids, vocab size) and a tokens.txt. This writes both, once,
into a work directory beside the model (`DIR.sherpa-onnx`), from the model's own weights through our SenseVoice
forward (the same module our `--runtime onnx` exports); `--quantize` adds ONNX Runtime's dynamic INT8 of it.
Requests are decoded one at a time, as sherpa-onnx's own Python examples decode files.
"""

from __future__ import annotations

import logging
import re
import threading
from pathlib import Path
from typing import Any

from .peer_http import read_wav, run_onnx_peer

log = logging.getLogger("asr_bench.sherpa_peer")
TAGS = re.compile(r"<\|[^|]*\|>")
LANGUAGES = ("auto", "zh", "en", "ja", "ko", "yue")


def _signature(forward: Any) -> Any:
    import torch

    class SherpaSignature(torch.nn.Module):
        """Our SenseVoice forward in sherpa-onnx's input and output signature."""

        def __init__(self) -> None:
            super().__init__()
            self.inner = forward

        def forward(self, x: Any, x_length: Any, language: Any, text_norm: Any) -> Any:
            logits, _ = self.inner(x, x_length, language.long()[:, None], text_norm.long()[:, None])
            return logits

    return SherpaSignature().eval()


def _metadata(model: Any, frontend: Any) -> dict[str, str]:
    cmvn = frontend.cmvn  # funasr's am.mvn: row 0 the negated means (AddShift), row 1 the inverse stddevs (Rescale)
    meta = {
        "model_type": "sense_voice_ctc",
        "comment": "exported by asr-bench for the sherpa-onnx peer",
        "vocab_size": str(model.ctc.ctc_lo.out_features),
        "blank_id": str(model.blank_id),
        "lfr_window_size": str(frontend.lfr_m),
        "lfr_window_shift": str(frontend.lfr_n),
        "normalize_samples": "0",  # samples scaled to 16-bit range before fbank, as funasr does
        "with_itn": str(model.textnorm_dict["withitn"]),
        "without_itn": str(model.textnorm_dict["woitn"]),
        "neg_mean": ",".join(f"{v:.8g}" for v in cmvn[0].tolist()),
        "inv_stddev": ",".join(f"{v:.8g}" for v in cmvn[1].tolist()),
    }
    for lang in LANGUAGES:
        meta[f"lang_{lang}"] = str(model.lid_dict.get(lang, 0))
    return meta


def work_dir(model_dir: Path, quantize: bool) -> Path:
    """`DIR.sherpa-onnx` with model.onnx (or model.int8.onnx) and tokens.txt, made once."""
    out = model_dir.parent / f"{model_dir.name}.sherpa-onnx"
    target = out / ("model.int8.onnx" if quantize else "model.onnx")
    if target.is_file() and (out / "tokens.txt").is_file():
        return out
    out.mkdir(exist_ok=True)
    fp32 = out / "model.onnx"
    if not fp32.is_file():
        _export(model_dir, fp32, out / "tokens.txt")
    if quantize:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        quantize_dynamic(str(fp32), str(target), weight_type=QuantType.QInt8, per_channel=True)
        _add_metadata(target, _read_metadata(fp32))
    return out


def _export(model_dir: Path, path: Path, tokens: Path) -> None:
    import torch
    from asr_inference.backends.funasr_backend import FunASRBackend
    from asr_inference.backends.graph import SenseVoiceForward
    from asr_inference.config import Settings

    backend = FunASRBackend(Settings(model=str(model_dir), device="cpu"))
    backend.load()
    if backend.family != "sensevoice":
        raise SystemExit(f"the sherpa-onnx peer serves SenseVoice models, not {backend.family}")
    model = backend.model
    module = _signature(SenseVoiceForward(model).eval())
    dims = int(backend.frontend.n_mels) * int(backend.frontend.lfr_m)
    example = (torch.randn(2, 50, dims), torch.tensor([50, 30], dtype=torch.int32),
               torch.tensor([0, 0], dtype=torch.int32), torch.tensor([15, 15], dtype=torch.int32))  # fmt: skip
    with torch.no_grad():
        torch.onnx.export(
            module, example, str(path), dynamo=False, opset_version=17,
            input_names=["x", "x_length", "language", "text_norm"], output_names=["logits"],
            dynamic_axes={"x": {0: "N", 1: "T"}, "x_length": {0: "N"}, "language": {0: "N"}, "text_norm": {0: "N"},
                          "logits": {0: "N", 1: "T_out"}},
        )  # fmt: skip
    _add_metadata(path, _metadata(model, backend.frontend))
    sp = backend.tokenizer.sp
    tokens.write_text("".join(f"{sp.IdToPiece(i)} {i}\n" for i in range(sp.GetPieceSize())), encoding="utf-8")
    log.info("exported %s for sherpa-onnx", path)


def _read_metadata(path: Path) -> dict[str, str]:
    import onnx

    return {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}


def _add_metadata(path: Path, meta: dict[str, str]) -> None:
    import onnx

    graph = onnx.load(str(path))
    del graph.metadata_props[:]
    for key, value in meta.items():
        graph.metadata_props.add(key=key, value=value)
    onnx.save(graph, str(path))


class Peer:
    def __init__(self, model: Path, quantize: bool, ncpu: int) -> None:
        import sherpa_onnx

        out = work_dir(model, quantize)
        self.recognizer = sherpa_onnx.OfflineRecognizer.from_sense_voice(
            model=str(out / ("model.int8.onnx" if quantize else "model.onnx")),
            tokens=str(out / "tokens.txt"),
            num_threads=ncpu,
            use_itn=False,
            language="auto",
        )
        self.lock = threading.Lock()  # one request at a time, as sherpa-onnx's examples decode files

    def transcribe(self, wav: bytes) -> str:
        samples = read_wav(wav)
        with self.lock:
            stream = self.recognizer.create_stream()
            stream.accept_waveform(16000, samples)
            self.recognizer.decode_stream(stream)
            text = str(stream.result.text)
        return TAGS.sub("", text).replace("\u2581", " ").strip()


def main(argv: list[str] | None = None) -> None:
    run_onnx_peer("python -m asr_bench.sherpa_peer", __doc__, Peer, argv)


if __name__ == "__main__":
    main()
