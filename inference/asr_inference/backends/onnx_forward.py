"""`--runtime onnx`: the batched SenseVoice forward (or Paraformer's encoder) exported to ONNX, optionally
INT8-quantized, run by ONNX Runtime.

Why: on CPU pods PyTorch eager is the slow runtime for these models (FunASR itself ships `funasr-onnx` for CPU).
What is exported is exactly `graph.SenseVoiceForward` — prompt embeddings, encoder, CTC logits for a padded batch
with dynamic batch and length axes — so features, batching, decoding and token times stay the server's own, and
the per-item exactness rule holds as for the PyTorch forward (padding is masked inside the encoder).

The export (and the quantization) is cached: `<cache dir>/<key>/model[.int8].onnx`, the key a hash of the model's
weights file, the opset, torch's version and this module's export recipe, so a pod restart loads it in ~0.1 s
instead of exporting again. Whether it is served is decided at warm-up by the same gate as a reduced precision
(`precision_gate.judge`: finite outputs, per-frame best-token agreement with the PyTorch fp32 forward, transcript
CER); a graph that fails it is refused and the PyTorch forward serves, with the reason in `/readyz`.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger("asr_inference.onnx")
OPSET = 17


@dataclass(frozen=True)
class Signature:
    """What a graph takes and gives (names, dynamic axes) and its recipe: bump the recipe when what is exported
    changes, and old cache entries are never read again."""

    recipe: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    dynamic_axes: dict[str, dict[int, str]]


SENSEVOICE = Signature(  # graph.SenseVoiceForward: prompt embeddings, encoder, CTC logits
    "sensevoice-forward-v1",
    ("feats", "lengths", "language", "textnorm"),
    ("logits", "lengths_out"),
    {
        "feats": {0: "batch", 1: "frames"},
        "lengths": {0: "batch"},
        "language": {0: "batch"},
        "textnorm": {0: "batch"},
        "logits": {0: "batch", 1: "out_frames"},
        "lengths_out": {0: "batch"},
    },
)
PARAFORMER_ENCODER = Signature(  # funasr's export form of the SAN-M encoder (masks from lengths, not baked)
    "paraformer-encoder-v1",
    ("feats", "lengths"),
    ("encoder_out", "encoder_lens"),
    {
        "feats": {0: "batch", 1: "frames"},
        "lengths": {0: "batch"},
        "encoder_out": {0: "batch", 1: "frames"},
        "encoder_lens": {0: "batch"},
    },
)


def cache_key(weights: Path | None, quantize: str, signature: Signature = SENSEVOICE) -> str:
    """What the exported file depends on: the weights, the recipe, the opset, torch (the exporter) and quantization."""
    digest = hashlib.sha256(f"{signature.recipe}|{OPSET}|{torch.__version__}|{quantize}".encode())
    if weights is not None and weights.is_file():
        with weights.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:24]


def default_cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "asr-platform" / "onnx"


@contextlib.contextmanager
def _written_atomically(path: Path) -> Iterator[str]:
    """A temp name beside `path` to write to; renamed to `path` only if the block succeeds, so a concurrent or
    killed start never leaves a half-written file under the final name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".onnx.part")
    os.close(fd)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def export(
    module: torch.nn.Module, example: tuple[torch.Tensor, ...], path: Path, signature: Signature = SENSEVOICE
) -> None:
    """Export `module` (fp32) with dynamic batch/length axes."""
    with _written_atomically(path) as tmp, torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarnings: the warm-up gate decides whether the graph is right
        torch.onnx.export(
            module,
            example,
            tmp,
            dynamo=False,  # the TorchScript-based exporter: no onnxscript dependency, SenseVoice exports as is
            opset_version=OPSET,
            input_names=list(signature.inputs),
            output_names=list(signature.outputs),
            dynamic_axes=signature.dynamic_axes,
        )


def quantize_int8(source: Path, path: Path) -> None:
    """Dynamic INT8 quantization (weights int8 per channel; activations quantized on the fly): ONNX Runtime's
    recipe for transformer encoders on CPU."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with _written_atomically(path) as tmp:
        quantize_dynamic(str(source), tmp, weight_type=QuantType.QInt8, per_channel=True)


def prepared_graph(
    module: torch.nn.Module,
    example: tuple[torch.Tensor, ...],
    weights: Path | None,
    quantize: str,
    cache_dir: Path,
    signature: Signature = SENSEVOICE,
) -> Path:
    """The ONNX file to serve: from the cache, or exported (and quantized) into it now."""
    entry = cache_dir / cache_key(weights, quantize, signature)
    fp32 = entry / "model.onnx"
    target = entry / "model.int8.onnx" if quantize == "int8" else fp32
    if target.is_file():
        log.info("onnx graph from the cache: %s", target)
        return target
    if not fp32.is_file():
        export(module, example, fp32, signature)
    if quantize == "int8":
        quantize_int8(fp32, target)
    log.info("onnx graph exported to %s", target)
    return target


class OnnxForward:
    """Runs an exported graph with ONNX Runtime; called like the module it was exported from (torch tensors in,
    torch tensors on the module's device out)."""

    def __init__(self, path: Path, threads: int, device: torch.device, signature: Signature = SENSEVOICE) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        providers: list[Any] = ["CPUExecutionProvider"]
        if device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, ("CUDAExecutionProvider", {"device_id": device.index or 0}))
        self.session = ort.InferenceSession(str(path), options, providers=providers)
        self.path, self.signature, self.device = path, signature, device
        self.provider = self.session.get_providers()[0]

    def __call__(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feeds = {name: t.detach().cpu().numpy() for name, t in zip(self.signature.inputs, inputs, strict=True)}
        first, second = self.session.run(list(self.signature.outputs), feeds)  # releases the GIL while it computes
        return torch.from_numpy(first).to(self.device), torch.from_numpy(second).to(self.device)
