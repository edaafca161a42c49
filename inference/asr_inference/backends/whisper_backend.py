"""Whisper through transformers: batched greedy `generate` over items from many requests.

Whisper's encoder takes exactly 30 s of log-mel frames, so every item is padded to 30 s (`max_segment_s`: longer
audio is cut by the pipeline's VAD segments or windows first) and a batch is a plain stack: no length padding can
change an item's result. The encoder runs once per batch; an item without a language gets the model's most likely
language token from one decoder step on its encoder output (transformers' `generate` would run the encoder a
second time to detect it: 2x the work of a short clip); then the decoder runs greedy over the whole batch, each
item with its own language, one `generate` per distinct prompt (it takes one per call).

Token times come from the cross-attention (`return_token_timestamps`, DTW over the model's `alignment_heads`) when
the checkpoint names those heads, as released checkpoints do; then windows overlap and words carry times.
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
from ..errors import ModelLoadError
from ..metrics import Metrics
from . import precision_gate
from .base import BatchOutput, DecodeOptions, ItemResult, ModelInfo, Prepared, Token
from .cuda_setup import configure_tf32, resolve_device, select_device

log = logging.getLogger("asr_inference.backend")

WINDOW_S = 30.0  # Whisper's encoder input: 3000 frames of 10 ms
SPACE = "\u2581"
_REPLACEMENT = "\ufffd"  # what decoding an incomplete UTF-8 sequence gives


class WhisperBackend:
    """A Whisper checkpoint (transformers layout) served in batches. One inference thread calls it."""

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
            family="whisper",
            device=str(self.device),
            precision="fp32",
            requested_precision=settings.precision,
            path=self.source.ref,
        )
        self.model: Any = None
        self.processor: Any = None
        self._lang_by_id: dict[int, str] = {}
        self._first_special = 0

    # ------------------------------------------------------------------ load
    def load(self) -> None:
        from transformers import WhisperForConditionalGeneration, WhisperProcessor

        select_device(self.device)
        torch.set_num_threads(intra_op_threads(self.device.type, usable_cpus(), self.settings.ncpu))
        kwargs: dict[str, Any] = {}
        if not self.source.local:
            kwargs["revision"] = self.settings.model_revision
        try:
            self.processor = WhisperProcessor.from_pretrained(self.source.ref, **kwargs)
            self.model = WhisperForConditionalGeneration.from_pretrained(self.source.ref, **kwargs)
        except Exception as exc:
            raise ModelLoadError(f"transformers could not load Whisper from {self.source.ref!r}: {exc}") from exc
        self.model.to(self.device).eval()
        generation = self.model.generation_config
        lang_to_id = getattr(generation, "lang_to_id", None) or {}
        self._lang_by_id = {i: t.strip("<|>") for t, i in lang_to_id.items()}
        self.languages = frozenset({"auto", *self._lang_by_id.values()}) if lang_to_id else frozenset({"auto"})
        self.supports_token_times = bool(getattr(generation, "alignment_heads", None))
        tokenizer = self.processor.tokenizer
        # released vocabularies put every special and timestamp token after the text tokens (<|endoftext|> first)
        self._first_special = int(tokenizer.convert_tokens_to_ids("<|endoftext|>"))
        self.info.tf32 = configure_tf32(self.device, self.settings.tf32)
        log.info("loaded Whisper %s on %s (token times %s)", self.source.ref, self.device, self.supports_token_times)

    # ------------------------------------------------------------------ per item (worker threads)
    def prepare(self, samples: np.ndarray) -> Prepared:
        array = np.asarray(samples, dtype=np.float32)
        duration = len(array) / 16000
        if duration > WINDOW_S + 1e-3:  # the pipeline cuts first; truncating here would drop speech silently
            raise ValueError(f"a Whisper item holds at most {WINDOW_S:.0f} s of audio, got {duration:.2f} s")
        out = self.processor.feature_extractor(
            array, sampling_rate=16000, return_tensors="pt", return_attention_mask=True
        )
        features, mask = out["input_features"][0], out["attention_mask"][0]
        return Prepared((features, mask), int(mask.sum()), duration)

    # ------------------------------------------------------------------ precision
    def _autocast(self, precision: str) -> contextlib.AbstractContextManager[Any]:
        if precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.float16 if precision == "fp16" else torch.bfloat16
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    def warm(self, items: Sequence[Prepared]) -> ModelInfo:
        requested = self.settings.precision
        options = [DecodeOptions()] * len(items)
        reference = self._run(items, options, "fp32")
        candidate, reason = requested, None
        if requested == "fp16" and self.device.type == "cpu":
            candidate, reason = "fp32", "fp16 is not supported on CPU (only bf16 is reduced there)"
        if candidate != "fp32":
            try:
                reduced = self._run(items, options, candidate)
                verdict = precision_gate.judge(
                    candidate,
                    finite=reduced.finite,
                    reference_texts=[r.text for r in reference.results],
                    candidate_texts=[r.text for r in reduced.results],
                    reference_frames=reference.frames,
                    candidate_frames=reduced.frames,
                    min_agreement=self.settings.precision_min_agreement,
                    max_cer=self.settings.precision_max_cer,
                )
                reason = verdict.reason
                self.info.precision_agreement, self.info.precision_cer = verdict.agreement, verdict.cer
            except Exception as exc:  # a dtype error in some op is a failed check, not a failed start
                reason = f"{candidate} generate raised {type(exc).__name__}: {exc}"
            if reason is not None and self.settings.force_precision:
                log.warning("precision %s fails the warm-up check but is forced: %s", candidate, reason)
                self.info.precision_forced = True
            elif reason is not None:
                candidate = "fp32"
                log.warning("precision %s requested; serving fp32: %s", requested, reason)
        self.precision = self.info.precision = candidate
        self.info.precision_fallback_reason = reason if candidate == "fp32" else None
        self.info.precision_check_failure = reason
        if self.settings.graph_mode == "trace":
            self.info.graph_fallback_reason = "graph mode covers SenseVoice models; Whisper runs eagerly"
        if self.settings.runtime == "onnx":
            self.info.runtime_fallback_reason = "the onnx runtime covers SenseVoice models; Whisper runs on PyTorch"
        self.info.requested_runtime, self.info.quantize = self.settings.runtime, self.settings.quantize
        return self.info

    # ------------------------------------------------------------------ batch (inference thread)
    def transcribe_batch(self, items: Sequence[Prepared], options: Sequence[DecodeOptions]) -> list[ItemResult]:
        out = self._run(items, options, self.precision)
        if not out.finite and self.precision != "fp32":
            log.warning("%s scores of a batch of %d were not finite; rerunning it in fp32", self.precision, len(items))
            if self.metrics is not None:
                self.metrics.fp32_reruns_total.inc()
            out = self._run(items, options, "fp32")
        return out.results

    def _run(self, items: Sequence[Prepared], options: Sequence[DecodeOptions], precision: str) -> BatchOutput:
        """The encoder once for the whole batch; the language of every `auto` item from one decoder step on its
        encoder output (generate would run the encoder a second time to detect it); then one generate per prompt
        (generate takes a prompt once per call), each item with its language."""
        results: list[ItemResult | None] = [None] * len(items)
        with torch.inference_mode(), self._autocast(precision):
            encoded = self._encode(items)
            languages = self._languages(encoded, options)
            finite = bool(torch.isfinite(encoded.amax(dim=-1)).all())
            groups: dict[str | None, list[int]] = {}
            for i, o in enumerate(options):
                groups.setdefault(o.prompt, []).append(i)
            for prompt, idx in groups.items():
                rows = torch.tensor(idx, device=encoded.device)
                mask = torch.stack([items[i].data[1] for i in idx]).to(self.device)
                out = self._generate(encoded.index_select(0, rows), mask, [languages[i] for i in idx], prompt)
                sequences, times, group_finite = out
                finite = finite and group_finite
                for row, i in enumerate(idx):
                    ids = sequences[row].tolist()
                    results[i] = self._result(ids, times[row].tolist() if times is not None else None)
        # no per-frame agreement for the gate: one changed token shifts every later step of a decoder, so the
        # transcripts' CER is the measure (as for Fun-ASR-Nano)
        return BatchOutput([r if r is not None else ItemResult("") for r in results], finite, None)

    def _encode(self, items: Sequence[Prepared]) -> torch.Tensor:
        features = torch.stack([it.data[0] for it in items]).to(self.device)
        if self.model.dtype != torch.float32:
            features = features.to(self.model.dtype)
        return self.model.model.encoder(features).last_hidden_state

    def _languages(self, encoded: torch.Tensor, options: Sequence[DecodeOptions]) -> list[str]:
        """Each item's language: the one asked for, else the model's most likely language token."""
        from transformers.modeling_outputs import BaseModelOutput

        languages = [o.language for o in options]
        auto = [i for i, lang in enumerate(languages) if lang == "auto"]
        if auto and self._lang_by_id:
            rows = encoded.index_select(0, torch.tensor(auto, device=encoded.device))
            detected = self.model.detect_language(encoder_outputs=BaseModelOutput(last_hidden_state=rows))
            for i, token in zip(auto, detected.tolist(), strict=True):
                languages[i] = self._lang_by_id[int(token)]
        return languages

    def _generate(
        self, encoded: torch.Tensor, mask: torch.Tensor, languages: list[str], prompt: str | None
    ) -> tuple[torch.Tensor, torch.Tensor | None, bool]:
        from transformers.modeling_outputs import BaseModelOutput

        kwargs: dict[str, Any] = {
            "encoder_outputs": BaseModelOutput(last_hidden_state=encoded),
            "attention_mask": mask,
            "task": "transcribe",
            "return_dict_in_generate": True,
            "output_scores": True,  # the finiteness check reads each step's scores
            "do_sample": False,
        }
        if self._lang_by_id and "auto" not in languages:
            kwargs["language"] = languages
        if prompt:
            ids = self.processor.tokenizer.get_prompt_ids(prompt, return_tensors="pt")
            kwargs["prompt_ids"] = torch.as_tensor(ids).to(self.device)
        if self.supports_token_times:
            kwargs["return_token_timestamps"] = True
        out = self.model.generate(**kwargs)
        scores = out.get("scores") or ()
        finite = all(bool(torch.isfinite(s.amax(dim=-1)).all()) for s in scores)
        times = out.get("token_timestamps")
        return out["sequences"].cpu(), times.cpu() if times is not None else None, finite

    # ------------------------------------------------------------------ text
    def _result(self, ids: list[int], times: list[float] | None) -> ItemResult:
        """An item's generated ids (decoder prompt included) → text, language and token times."""
        tokenizer = self.processor.tokenizer
        sot = self.model.generation_config.decoder_start_token_id
        start = len(ids) - 1 - ids[::-1].index(sot) if sot in ids else 0  # after a prompt: the last <|sot|>
        language = self._lang_by_id.get(ids[start + 1]) if start + 1 < len(ids) else None
        positions = [p for p in range(start + 1, len(ids)) if ids[p] < self._first_special]
        text_ids = [ids[p] for p in positions]
        pieces = self._pieces(text_ids, tokenizer)
        tokens: list[Token] | None = None
        if times is not None:
            # a token's time is where it starts; it ends where the next one starts (the last: at the next step)
            ends = (
                [*(times[p] for p in positions[1:]), times[min(positions[-1] + 1, len(times) - 1)]] if positions else []
            )
            tokens, begin = [], None
            for p, piece, end in zip(positions, pieces, ends, strict=True):
                begin = float(times[p]) if begin is None else begin  # a character split over tokens: its first
                if piece:
                    tokens.append(Token(piece, begin, max(begin, float(end))))
                    begin = None
        return ItemResult(text=self.detokenize(pieces), tokens=tokens, language=language)

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
