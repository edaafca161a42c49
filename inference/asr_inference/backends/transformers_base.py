"""What the transformers families (Whisper, GLM-ASR) share: the load boilerplate, the warm-up precision gate, the
fp32 rerun of a batch whose scores were not finite, and token pieces → text.

Text pieces carry their leading space as "▁" (as sentencepiece's do), so the pipeline's word grouping and
detokenization treat them like SenseVoice's. Byte-level tokens that end inside a UTF-8 character get no text of
their own: their character goes to the token that completes it.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from .. import model_source
from ..config import Settings
from ..cpus import intra_op_threads, usable_cpus
from ..metrics import Metrics
from . import precision_gate
from .base import BatchOutput, DecodeOptions, ItemResult, ModelInfo, Prepared
from .cuda_setup import configure_tf32, resolve_device, select_device

log = logging.getLogger("asr_inference.backend")

SPACE = "\u2581"
_REPLACEMENT = "\ufffd"  # what decoding an incomplete UTF-8 sequence gives
WINDOW_S = 30.0  # the audio encoders' input: 3000 frames of 10 ms


class TransformersBackend:
    """Shared by the transformers families; a subclass loads its model (`_load`), makes features (`prepare`) and
    runs a batch at a precision (`_run`). One inference thread calls it."""

    family = ""
    max_segment_s: float | None = WINDOW_S

    def __init__(self, settings: Settings, metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.metrics = metrics
        self.source = model_source.resolve(settings)
        self.device = resolve_device(settings.device)
        self.precision = "fp32"
        self.languages: frozenset[str] | None = None
        self.supports_token_times = False
        self.info = ModelInfo(
            name=self.source.name,
            family=self.family,
            device=str(self.device),
            precision="fp32",
            requested_precision=settings.precision,
            path=self.source.ref,
        )
        self.model: Any = None
        self.processor: Any = None

    def load(self) -> None:
        select_device(self.device)
        torch.set_num_threads(intra_op_threads(self.device.type, usable_cpus(), self.settings.ncpu))
        kwargs: dict[str, Any] = {}
        if not self.source.local:
            kwargs["revision"] = self.settings.model_revision
        self._load(kwargs)
        self.model.to(self.device).eval()
        self.info.tf32 = configure_tf32(self.device, self.settings.tf32)
        log.info("loaded %s %s on %s", self.family, self.source.ref, self.device)

    def _load(self, kwargs: dict[str, Any]) -> None:
        raise NotImplementedError

    def _run(self, items: Sequence[Prepared], options: Sequence[DecodeOptions], precision: str) -> BatchOutput:
        raise NotImplementedError

    # ------------------------------------------------------------------ per item (worker threads)
    def prepare(self, samples: np.ndarray) -> Prepared:
        """Log-mel features padded to the encoder's 30 s and their mask; `length` = real frames."""
        array = np.asarray(samples, dtype=np.float32)
        duration = len(array) / 16000
        if duration > WINDOW_S + 1e-3:  # the pipeline cuts first; truncating here would drop speech silently
            raise ValueError(f"a {self.family} item holds at most {WINDOW_S:.0f} s of audio, got {duration:.2f} s")
        out = self.processor.feature_extractor(
            array, sampling_rate=16000, return_tensors="pt", return_attention_mask=True
        )
        features, mask = out["input_features"][0], out["attention_mask"][0]
        return Prepared((features, mask), int(mask.sum()), duration)

    # ------------------------------------------------------------------ precision
    def _autocast(self, precision: str) -> contextlib.AbstractContextManager[Any]:
        return precision_gate.autocast(self.device.type, precision)

    def warm(self, items: Sequence[Prepared]) -> ModelInfo:
        options = [DecodeOptions()] * len(items)
        reference = self._run(items, options, "fp32")
        choice = precision_gate.choose(
            self.settings, self.device.type, reference, lambda precision: self._run(items, options, precision)
        )
        self.precision = precision_gate.record(self.info, choice)
        if self.settings.graph_mode == "trace":
            self.info.graph_fallback_reason = f"graph mode covers SenseVoice models; {self.family} runs eagerly"
        if self.settings.runtime == "onnx":
            self.info.runtime_fallback_reason = (
                f"the onnx runtime covers SenseVoice models; {self.family} runs on PyTorch"
            )
        self.info.requested_runtime, self.info.quantize = self.settings.runtime, self.settings.quantize
        return self.info

    # ------------------------------------------------------------------ batch (inference thread)
    def transcribe_batch(self, items: Sequence[Prepared], options: Sequence[DecodeOptions]) -> list[ItemResult]:
        def run(precision: str) -> BatchOutput:
            return self._run(items, options, precision)

        return list(precision_gate.rerun_if_not_finite(run, self.precision, self.metrics, len(items)).results)

    @staticmethod
    def sampling(temperature: float) -> dict[str, Any]:
        """generate's arguments for a request's temperature: greedy at 0 (OpenAI's default), else sampling."""
        return {"do_sample": True, "temperature": temperature} if temperature > 0 else {"do_sample": False}

    @staticmethod
    def scores_finite(scores: Sequence[torch.Tensor] | None) -> bool:
        """Whether every generation step's scores were finite (a NaN/inf logit makes its row's maximum non-finite)."""
        return all(bool(torch.isfinite(s.amax(dim=-1)).all()) for s in scores or ())

    @staticmethod
    def _pieces(ids: list[int], tokenizer: Any) -> list[str]:
        """Each token's share of the decoded text, a leading space as "▁" (the first piece always starts a word:
        an item never continues its neighbour's). A byte-level token that ends inside a UTF-8 character gets "" and
        the character goes to the token that completes it; bytes that never make a character (at most 4 tokens
        later, or at the end) are dropped rather than shown as U+FFFD."""
        pieces: list[str] = []
        anchor = 0  # the first token whose bytes are not yet in a piece
        for k in range(len(ids)):
            text = tokenizer.decode(ids[anchor : k + 1], skip_special_tokens=True, clean_up_tokenization_spaces=False)
            if text.endswith(_REPLACEMENT) and k + 1 < len(ids) and k - anchor < 3:
                pieces.append("")
                continue
            anchor = k + 1
            text = text.replace(_REPLACEMENT, "")
            if text.startswith(" ") or (text and not any(pieces)):
                text = SPACE + text.removeprefix(" ")
            pieces.append(text)
        return pieces

    def detokenize(self, tokens: Sequence[str]) -> str:
        return "".join(tokens).replace(SPACE, " ").strip()
