"""The backend protocol: what the batching engine needs from a model, independent of the library behind it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np


@dataclass(frozen=True)
class DecodeOptions:
    """Per-item decoding options (part of the result-cache key)."""

    language: str = "auto"
    use_itn: bool = False
    prompt: str | None = None
    temperature: float = 0.0  # 0: greedy; > 0: sampled where the family's decoder samples (Whisper, GLM-ASR)


@dataclass
class Prepared:
    """One item ready for a forward pass: features (frames x dims) or a waveform, made off the event loop."""

    data: Any  # torch.Tensor; typed loosely so this module does not import torch
    length: int  # frames (or samples): what padding is measured in
    duration_s: float


@dataclass
class Token:
    text: str
    start_s: float  # relative to the item's start
    end_s: float


@dataclass
class ItemResult:
    """What the model made of one item."""

    text: str
    tokens: list[Token] | None = None  # None when the family gives no token times
    language: str | None = None
    emotion: str | None = None
    event: str | None = None


@dataclass
class BatchOutput:
    """What one forward of a batch gives: per-item results, whether every output was finite, and per item the best
    token of each output frame (host ints or a CPU tensor; None for a family without frames) for the precision gate."""

    results: list[ItemResult]
    finite: bool
    frames: list[Any] | None


@dataclass
class ModelInfo:
    name: str
    family: str
    device: str
    precision: str  # in use (after the warm-up check)
    requested_precision: str
    path: str
    precision_fallback_reason: str | None = None  # why fp32 is served instead of the requested precision
    precision_check_failure: str | None = None  # the warm-up check's refusal (also set when the precision is forced)
    precision_forced: bool = False  # served despite a failed check (`force_precision`, for benchmark ceilings)
    precision_agreement: float | None = None  # share of warm-up output frames with fp32's best token
    precision_cer: float | None = None  # character error rate of the reduced precision's warm-up transcripts
    graph_mode: str = "eager"  # how the batched forward runs: "trace" (TorchScript graph) or "eager"
    graph_fallback_reason: str | None = None  # why a requested graph is not used
    runtime: str = "pytorch"  # what runs the forward: "pytorch" or "onnx" (after the warm-up gate)
    requested_runtime: str = "pytorch"
    quantize: str = "none"  # with runtime onnx: "none" or "int8"
    runtime_fallback_reason: str | None = None  # why the requested runtime does not serve
    runtime_agreement: float | None = None  # onnx: share of warm-up frames with PyTorch fp32's best token
    runtime_cer: float | None = None  # onnx: CER of its warm-up transcripts against PyTorch fp32's
    runtime_forced: bool = False  # onnx served despite a failed check (`force_precision`, for benchmark ceilings)
    tf32: bool | None = None  # CUDA: fp32 products on TF32 tensor cores (--tf32); None where it does not apply (CPU)


class Backend(Protocol):
    """A loaded model. `load` and `warm` run once at start; `prepare` runs on worker threads, many at a time;
    `transcribe_batch` runs on the single inference thread of the device."""

    info: ModelInfo
    supports_token_times: bool
    languages: frozenset[str] | None  # accepted `language` values; None: any (ignored)
    max_segment_s: float | None  # the longest item the model takes (Whisper: 30 s); None: no limit of its own

    def load(self) -> None: ...

    def prepare(self, samples: np.ndarray) -> Prepared: ...

    def warm(self, items: Sequence[Prepared]) -> ModelInfo:
        """Run a full batch in fp32 and, if asked, the reduced precision; keep the reduced one only if its outputs
        are finite, its per-frame best tokens agree with fp32's and its transcripts are close (`precision_gate`).
        Returns the info with the precision actually in use."""
        ...

    def transcribe_batch(self, items: Sequence[Prepared], options: Sequence[DecodeOptions]) -> list[ItemResult]: ...

    def detokenize(self, tokens: Sequence[str]) -> str:
        """Join token pieces (from several windows) into text."""
        ...
