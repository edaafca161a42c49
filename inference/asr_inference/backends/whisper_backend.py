"""Whisper through transformers: batched greedy `generate` over items from many requests.

Whisper's encoder takes exactly 30 s of log-mel frames, so every item is padded to 30 s (`max_segment_s`: longer
audio is cut by the pipeline's VAD segments or windows first) and a batch is a plain stack: no length padding can
change an item's result. The encoder runs once per batch; an item without a language gets the model's most likely
language token from one decoder step on its encoder output (transformers' `generate` would run the encoder a
second time to detect it: 2x the work of a short clip); then the decoder runs greedy over the whole batch, each
item with its own language, one `generate` per distinct prompt and temperature (it takes one of each per call;
temperature 0, the default, is greedy).

Token times come from the cross-attention (`return_token_timestamps`, DTW over the model's `alignment_heads`) when
the checkpoint names those heads, as released checkpoints do; then windows overlap and words carry times.
Shared with GLM-ASR (`transformers_base`): the warm-up gate, the fp32 rerun, token pieces → text.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from ..errors import ModelLoadError
from .base import BatchOutput, DecodeOptions, ItemResult, Prepared, Token
from .transformers_base import TransformersBackend

PROMPT_TOKENS = 223  # OpenAI Whisper keeps the last n_text_ctx // 2 - 1 tokens of a prompt


class WhisperBackend(TransformersBackend):
    """A Whisper checkpoint (transformers layout) served in batches. One inference thread calls it."""

    family = "whisper"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._lang_by_id: dict[int, str] = {}
        self._first_special = 0

    def _load(self, kwargs: dict[str, Any]) -> None:
        from transformers import WhisperForConditionalGeneration, WhisperProcessor

        try:
            self.processor = WhisperProcessor.from_pretrained(self.source.ref, **kwargs)
            self.model = WhisperForConditionalGeneration.from_pretrained(self.source.ref, **kwargs)
        except Exception as exc:
            raise ModelLoadError(f"transformers could not load Whisper from {self.source.ref!r}: {exc}") from exc
        generation = self.model.generation_config
        lang_to_id = getattr(generation, "lang_to_id", None) or {}
        self._lang_by_id = {i: t.strip("<|>") for t, i in lang_to_id.items()}
        self.languages = frozenset({"auto", *self._lang_by_id.values()}) if lang_to_id else frozenset({"auto"})
        self.supports_token_times = bool(getattr(generation, "alignment_heads", None))
        # released vocabularies put every special and timestamp token after the text tokens (<|endoftext|> first)
        self._first_special = int(self.processor.tokenizer.convert_tokens_to_ids("<|endoftext|>"))

    # ------------------------------------------------------------------ batch (inference thread)
    def _run(self, items: Sequence[Prepared], options: Sequence[DecodeOptions], precision: str) -> BatchOutput:
        """The encoder once for the whole batch; the language of every `auto` item from one decoder step on its
        encoder output (generate would run the encoder a second time to detect it); then one generate per prompt and
        temperature (generate takes each once per call), each item with its language."""
        results: list[ItemResult | None] = [None] * len(items)
        with torch.inference_mode(), self._autocast(precision):
            encoded = self._encode(items)
            languages = self._languages(encoded, options)
            finite = bool(torch.isfinite(encoded.amax(dim=-1)).all())
            groups: dict[tuple[str | None, float], list[int]] = {}
            for i, o in enumerate(options):
                groups.setdefault((o.prompt, o.temperature), []).append(i)
            for (prompt, temperature), idx in groups.items():
                rows = torch.tensor(idx, device=encoded.device)
                mask = torch.stack([items[i].data[1] for i in idx]).to(self.device)
                selected = encoded.index_select(0, rows)
                out = self._generate(selected, mask, [languages[i] for i in idx], prompt, temperature)
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
        self, encoded: torch.Tensor, mask: torch.Tensor, languages: list[str], prompt: str | None, temperature: float
    ) -> tuple[torch.Tensor, torch.Tensor | None, bool]:
        from transformers.modeling_outputs import BaseModelOutput

        kwargs: dict[str, Any] = {
            "encoder_outputs": BaseModelOutput(last_hidden_state=encoded),
            "attention_mask": mask,
            "task": "transcribe",
            "return_dict_in_generate": True,
            "output_scores": True,  # the finiteness check reads each step's scores
            **self.sampling(temperature),
        }
        if self._lang_by_id and "auto" not in languages:
            kwargs["language"] = languages
        if prompt and (ids := self._prompt_ids(prompt)):
            kwargs["prompt_ids"] = torch.tensor(ids, device=self.device)
        if self.supports_token_times:
            kwargs["return_token_timestamps"] = True
        out = self.model.generate(**kwargs)
        times = out.get("token_timestamps")
        return out["sequences"].cpu(), times.cpu() if times is not None else None, self.scores_finite(out.get("scores"))

    def _prompt_ids(self, prompt: str) -> list[int]:
        """`<|startofprev|>` + the prompt's text tokens, at most its last PROMPT_TOKENS, as OpenAI's Whisper keeps
        them. Text that spells a special token (`<|endoftext|>`, a timestamp) is text here: the tokenizer's own
        `get_prompt_ids` raises on it, which would fail every request batched with this one."""
        tokenizer = self.processor.tokenizer
        text = [t for t in tokenizer.encode(" " + prompt.strip(), add_special_tokens=False, split_special_tokens=True)
                if t < self._first_special]  # fmt: skip
        if not text:
            return []
        return [int(tokenizer.convert_tokens_to_ids("<|startofprev|>")), *text[-PROMPT_TOKENS:]]

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
