"""GLM-ASR (transformers' `glmasr`: GLM-ASR-Nano-2512) through transformers: batched greedy `generate` over items
from many requests.

GLM-ASR is an audio LLM: a Whisper-style encoder (128 mel bins, 30-s input, rotary positions) whose frames are
merged 4 by 4 and projected into a Llama text model, which reads a chat-formatted request — `<|user|>`, the audio
placeholders, the instruction, `<|assistant|>` — and writes the transcript. Each item is one 30-s window (the
pipeline cuts longer audio first), padded to 30 s as the encoder always sees it (no mask inside the encoder), so a
batch is a plain stack for the encoder; the text side is left-padded with an attention mask, exact per item.
The request text comes from the checkpoint's own processor (its chat template; `prompt` replaces the default
instruction, per item), with the audio placeholder repeated once per audio token, as the processor does.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ..errors import ModelLoadError
from .base import BatchOutput, DecodeOptions, ItemResult, Prepared
from .transformers_base import TransformersBackend

PROMPT_TOKENS = 224  # as Whisper's prompts: an instruction, not a document


class GlmAsrBackend(TransformersBackend):
    """A GLM-ASR checkpoint (transformers layout) served in batches. One inference thread calls it."""

    family = "glm-asr"

    def _load(self, kwargs: dict[str, Any]) -> None:
        from transformers import AutoProcessor, GlmAsrForConditionalGeneration

        try:
            self.processor = AutoProcessor.from_pretrained(self.source.ref, **kwargs)
            self.model = GlmAsrForConditionalGeneration.from_pretrained(self.source.ref, **kwargs)
        except Exception as exc:
            raise ModelLoadError(f"transformers could not load GLM-ASR from {self.source.ref!r}: {exc}") from exc
        self.languages = None  # no language option: any `language` is accepted and the model writes what it hears
        self._special = frozenset(int(i) for i in self.processor.tokenizer.all_special_ids)
        # the chat template rendered once per prompt, not per item of every batch (bounded: prompts come from clients)
        self._request_text = functools.lru_cache(maxsize=64)(self._render_request)

    def _render_request(self, prompt: str | None) -> str:
        """The processor's chat-formatted request for one item with this prompt (None: the default instruction),
        with one audio placeholder. The prompt is text: a special token spelled in it (`<|pad|>`, the audio
        placeholder, would not match the audio's length and fail every request batched with this one) is dropped,
        and it keeps at most its last PROMPT_TOKENS tokens."""
        if prompt is not None:
            tokenizer = self.processor.tokenizer
            ids = tokenizer.encode(prompt, add_special_tokens=False, split_special_tokens=True)[-PROMPT_TOKENS:]
            prompt = tokenizer.decode(ids, skip_special_tokens=True)
            for special in (*tokenizer.all_special_tokens, *tokenizer.added_tokens_encoder):  # <|pad|> is "added"
                prompt = prompt.replace(special, "")
            prompt = prompt.strip() or None
        texts = self.processor.apply_transcription_request(
            audio=[np.zeros(16, dtype=np.float32)],
            prompt=[prompt],
            tokenize=False,  # audio not read: tokenize=False
        )
        return str(texts[0])

    # ------------------------------------------------------------------ per item (worker threads)
    def prepare(self, samples: np.ndarray) -> Prepared:
        """The shared features, plus the number of audio tokens the item's request text holds."""
        item = super().prepare(samples)
        tokens = int(self.processor._get_audio_token_length(item.data[1].sum()[None])[0])
        return Prepared((*item.data, tokens), item.length, item.duration_s)

    # ------------------------------------------------------------------ batch (inference thread)
    def _request_ids(self, items: Sequence[Prepared], options: Sequence[DecodeOptions]) -> dict[str, torch.Tensor]:
        """The chat-formatted requests, left-padded: the processor's template with each item's prompt, the audio
        placeholder expanded to the item's audio token count."""
        processor = self.processor
        token = processor.audio_token
        expanded = [
            self._request_text(o.prompt or None).replace(token, token * it.data[2], 1)
            for o, it in zip(options, items, strict=True)
        ]
        encoded = processor.tokenizer(expanded, padding=True, padding_side="left", return_tensors="pt")
        return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}

    def _run(self, items: Sequence[Prepared], options: Sequence[DecodeOptions], precision: str) -> BatchOutput:
        results: list[ItemResult] = [ItemResult("")] * len(items)
        finite = True
        groups: dict[float, list[int]] = {}  # generate samples (or not) per call: one call per temperature
        for i, o in enumerate(options):
            groups.setdefault(o.temperature, []).append(i)
        for temperature, idx in groups.items():
            texts, group_finite = self._generate([items[i] for i in idx], [options[i] for i in idx], precision,
                                                 temperature)  # fmt: skip
            finite = finite and group_finite
            for i, text in zip(idx, texts, strict=True):
                results[i] = ItemResult(text=text)
        # CER, not per-frame agreement, for the gate: a changed token shifts every later step of a decoder
        return BatchOutput(results, finite, None)

    def _generate(
        self, items: Sequence[Prepared], options: Sequence[DecodeOptions], precision: str, temperature: float
    ) -> tuple[list[str], bool]:
        request = {k: v.to(self.device) for k, v in self._request_ids(items, options).items()}
        features = torch.stack([it.data[0] for it in items]).to(self.device)
        mask = torch.stack([it.data[1] for it in items]).to(self.device)
        with torch.inference_mode(), self._autocast(precision):
            out = self.model.generate(
                **request,
                input_features=features,
                input_features_mask=mask,
                return_dict_in_generate=True,
                output_scores=True,  # the finiteness check reads each step's scores
                **self.sampling(temperature),
            )
        generated = out["sequences"][:, request["input_ids"].shape[1] :].cpu()
        texts = []
        for row in generated.tolist():
            ids = [t for t in row if t not in self._special]
            texts.append(self.detokenize(self._pieces(ids, self.processor.tokenizer)))
        return texts, self.scores_finite(out.get("scores"))
