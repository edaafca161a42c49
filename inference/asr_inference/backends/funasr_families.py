"""What differs between the FunASR families served in batches: one small object per family, chosen at load.

The backend (`funasr_backend.FunASRBackend`: load, weights check, warm-up gate, ONNX and graph runtimes) calls the
family for everything family-specific — how an item is prepared, how a batch runs and is decoded, how token pieces
join — so a new family (or a new runtime of one) touches one place.

SenseVoice and Paraformer: `prepare` (worker threads) only wraps the waveform; the features of the whole batch are
made in one call on the model's device (`FastFbank.batch`, outside autocast), and the model's own modules run on
the padded batch — the same steps as the model's `inference()`, with two fixes: per-item language/ITN queries, and
(Paraformer) padded encoder frames zeroed before the CIF predictor, whose convolution otherwise leaks padding into
the last real frames. Fun-ASR-Nano: waveforms to the model's own inference (its left-padded LLM batch is exact).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from typing import Any

import torch
from torch.nn.utils.rnn import pad_sequence

from ..features import FastFbank
from ..metrics import Metrics
from . import onnx_forward
from .base import BatchOutput, DecodeOptions, ItemResult, Prepared, Token
from .graph import ForwardFn, SenseVoiceForward

_LFR_FRAME_S = 0.06  # 10 ms shift x LFR n=6
_EMOTIONS = {"HAPPY", "SAD", "ANGRY", "NEUTRAL", "EMO_UNKNOWN", "FEARFUL", "DISGUSTED", "SURPRISED"}
_EVENTS = {"Speech", "BGM", "Laughter", "Applause", "Cry", "Sneeze", "Breath", "Cough", "Event_UNK"}


class _Featured:
    """A family fed fbank + LFR + CMVN features, made per batch on the model's device."""

    supports_token_times = True
    languages: frozenset[str] | None = None

    def __init__(self, model: Any, tokenizer: Any, features: FastFbank, device: torch.device, metrics: Metrics | None):
        self.model, self.tokenizer, self.features = model, tokenizer, features
        self.device, self.metrics = device, metrics
        self.features_dim = int(features.frontend.n_mels) * features.lfr_m  # what the encoder takes per frame

    def prepare(self, wave: torch.Tensor, duration: float) -> Prepared:
        if self.features.batchable(len(wave)):  # features later, with the batch (`batch_features`)
            return Prepared(wave, self.features.frames(len(wave)), duration)
        with torch.inference_mode():  # a shape only funasr's own frontend takes: features now
            feats = self.features.single(wave)
        return Prepared(feats, int(feats.shape[0]), duration)

    def batch_features(self, items: Sequence[Prepared]) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch's features, zero-padded, on the device: made here from the waveforms `prepare` left (fp32
        whatever the serving precision: power spectra overflow fp16), else as `prepare` made them."""
        t0, cpu0 = time.perf_counter(), time.thread_time()
        with torch.autocast(self.device.type, enabled=False):
            if all(it.data.dim() == 1 for it in items):
                feats, _ = self.features.batch([it.data for it in items], self.device)
            else:  # rare: an item funasr's own frontend had to make
                made = [it.data if it.data.dim() == 2 else self.features.single(it.data) for it in items]
                feats = pad_sequence(made, batch_first=True).to(self.device)
        if self.metrics is not None:
            self.metrics.stage_cpu_seconds_total.labels(stage="features").inc(time.thread_time() - cpu0)
            self.metrics.stage_duration_seconds.labels(stage="features").observe(time.perf_counter() - t0)
        lengths = torch.tensor([it.length for it in items], dtype=torch.int32, device=self.device)
        return feats, lengths


class SenseVoice(_Featured):
    """CTC over SenseVoice's encoder, with its language/emotion/event/ITN query frames."""

    def __init__(self, model: Any, tokenizer: Any, features: FastFbank, device: torch.device, metrics: Metrics | None):
        super().__init__(model, tokenizer, features, device, metrics)
        self.languages = frozenset(model.lid_dict)
        self.forward = SenseVoiceForward(model).eval()  # the module the graph and ONNX runtimes are made from

    def onnx_export(
        self, items: Sequence[Prepared], options: Sequence[DecodeOptions]
    ) -> tuple[torch.nn.Module, tuple[torch.Tensor, ...], onnx_forward.Signature]:
        """The whole batched forward (prompts, encoder, CTC logits) for ONNX, with `items` as the example."""
        return self.forward, self.inputs(items, options), onnx_forward.SENSEVOICE

    def inputs(
        self, items: Sequence[Prepared], options: Sequence[DecodeOptions]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        m = self.model
        speech, lengths = self.batch_features(items)
        lang = torch.tensor([[m.lid_dict.get(o.language, 0)] for o in options], device=speech.device)
        norm = [[m.textnorm_dict["withitn" if o.use_itn else "woitn"]] for o in options]
        return speech, lengths, lang, torch.tensor(norm, device=speech.device)

    def run(
        self,
        items: Sequence[Prepared],
        options: Sequence[DecodeOptions],
        precision: str,
        forward: ForwardFn | None = None,
    ) -> BatchOutput:
        """`forward`: a runtime of `self.forward` (traced graph, ONNX) to run instead of the eager module."""
        m = self.model
        logits, encoder_lens = (forward or self.forward)(*self.inputs(items, options))
        # The NaN guard costs one (B, T') reduction, not a full-vocabulary isfinite: a frame with a NaN or an inf
        # logit has a non-finite maximum (max propagates NaN). The flag travels to the host with the best tokens.
        top, best = logits.max(dim=-1)
        finite_rows = torch.isfinite(top).all(dim=-1, keepdim=True).to(best.dtype)
        host = torch.cat((best, finite_rows, encoder_lens[:, None].to(best.dtype)), dim=1).cpu()  # one copy
        best, finite, lens = host[:, :-2], bool(host[:, -2].all()), host[:, -1].tolist()
        sp = self.tokenizer.sp
        results = []
        for i, n in enumerate(lens):
            tags = [sp.IdToPiece(int(t)).strip("<|>") for t in best[i, :4]]
            ids, counts = torch.unique_consecutive(best[i, 4:n], return_counts=True)
            tokens, frame = [], 0
            for tok, cnt in zip(ids.tolist(), counts.tolist(), strict=True):
                piece = sp.IdToPiece(tok)
                if piece.startswith("<|") and piece.endswith("|>"):
                    tags.append(piece.strip("<|>"))  # a rich tag inside the speech: metadata, never text
                elif tok != m.blank_id:
                    tokens.append(Token(piece, frame * _LFR_FRAME_S, (frame + cnt) * _LFR_FRAME_S))
                frame += cnt
            results.append(
                ItemResult(
                    text=self.detokenize([t.text for t in tokens]),
                    tokens=tokens,
                    language=tags[0] if tags[0] in m.lid_dict else None,
                    emotion=next((t for t in tags[1:] if t in _EMOTIONS), None),
                    event=next((t for t in tags[1:] if t in _EVENTS), None),
                )
            )
        return BatchOutput(results, finite, [best[i, :n] for i, n in enumerate(lens)])

    def detokenize(self, tokens: Sequence[str]) -> str:
        return "".join(tokens).replace("\u2581", " ").strip() if tokens else ""


class Paraformer(_Featured):
    """Paraformer: encoder, CIF predictor (padding zeroed first), non-autoregressive decoder."""

    def onnx_export(
        self, items: Sequence[Prepared], options: Sequence[DecodeOptions]
    ) -> tuple[torch.nn.Module, tuple[torch.Tensor, ...], onnx_forward.Signature]:
        """The encoder — most of the work — for ONNX: funasr's own export form of it (masks computed from the
        lengths in the graph, not traced as constants as the training form's are), on a copy, since it rewraps
        the layers it is given. The CIF predictor's data-dependent firing and the decoder stay in PyTorch."""
        from funasr.models.sanm.encoder import SANMEncoderExport

        encoder = SANMEncoderExport(copy.deepcopy(self.model.encoder), feats_dim=self.features_dim, onnx=True)
        return encoder.eval(), self.batch_features(items), onnx_forward.PARAFORMER_ENCODER

    def run(
        self,
        items: Sequence[Prepared],
        options: Sequence[DecodeOptions],
        precision: str,
        forward: ForwardFn | None = None,
    ) -> BatchOutput:
        from funasr.utils.timestamp_tools import ts_prediction_lfr6_standard

        m = self.model
        speech, lengths = self.batch_features(items)
        if forward is not None:  # the encoder in another runtime (ONNX); CIF and decoder stay PyTorch's
            encoder_out, encoder_lens = forward(speech, lengths)
        else:
            encoder_out, encoder_lens = m.encode(speech, lengths)
        if isinstance(encoder_out, tuple):
            encoder_out = encoder_out[0]
        # Zero padded frames: CifPredictorV2's convolution would otherwise mix them into real frames' alphas.
        valid = torch.arange(encoder_out.size(1), device=encoder_out.device)[None, :] < encoder_lens[:, None]
        encoder_out = encoder_out * valid.unsqueeze(-1).to(encoder_out.dtype)
        acoustic, token_len, alphas, peaks = m.calc_predictor(encoder_out, encoder_lens)
        token_len = token_len.round().long()
        # The host reads the device twice per batch, not per item: the token counts (the decoder needs to know
        # whether there is anything to decode), then every output at once after the decoder has run.
        counts = token_len.tolist()
        if max(counts) < 1:
            finite = bool(torch.isfinite(alphas).all())
            return BatchOutput([ItemResult(text="", tokens=[]) for _ in items], finite, [[] for _ in items])
        decoder_out, _ = m.cal_decoder_with_predictor(encoder_out, encoder_lens, acoustic, token_len)
        # (B, N) maxima, not the (B, N, V) logits: see _sensevoice
        flags = torch.stack([torch.isfinite(alphas).all(), torch.isfinite(decoder_out.amax(dim=-1)).all()])
        best, flags, enc_lens, alphas, peaks = (t.cpu() for t in (decoder_out.argmax(dim=-1), flags, encoder_lens,
                                                                   alphas, peaks))  # fmt: skip
        finite = bool(flags.all())
        results, frames = [], []
        for i in range(len(items)):
            ids = best[i, : counts[i]].tolist()
            frames.append(ids)
            ids = [t for t in ids if t not in (m.sos, m.eos, m.blank_id)]
            pieces = self.tokenizer.ids2tokens(ids)
            tokens: list[Token] | None = None
            try:
                n = int(enc_lens[i])
                # upsample_rate=1: our alphas/peaks are at the encoder's 60 ms (LFR 6) rate, as in funasr's own
                # Paraformer.inference; the helper's default (3) is for BiCif's 3x-upsampled 20 ms frames
                _, stamps = ts_prediction_lfr6_standard(
                    alphas[i, : n + 1], peaks[i, : n + 1], list(pieces), upsample_rate=1
                )
                if len(stamps) == len(pieces):
                    tokens = [
                        Token(p, max(0.0, s / 1000), e / 1000) for p, (s, e) in zip(pieces, stamps, strict=True)
                    ]  # the helper shifts fires 1.5 frames earlier: a first token may start before 0
            except Exception:  # timestamps are a bonus; the text stands without them
                tokens = None
            results.append(ItemResult(text=self.detokenize(pieces), tokens=tokens))
        return BatchOutput(results, finite, frames)

    def detokenize(self, tokens: Sequence[str]) -> str:
        if not tokens:
            return ""
        from funasr.utils.postprocess_utils import sentence_postprocess

        return str(sentence_postprocess(list(tokens))[0]).strip()


class Nano:
    """Fun-ASR-Nano: waveforms to the model's own batched inference (audio encoder + LLM)."""

    supports_token_times = False
    languages: frozenset[str] | None = None

    def __init__(self, am: Any) -> None:
        self.am, self.model = am, am.model

    def prepare(self, wave: torch.Tensor, duration: float) -> Prepared:
        return Prepared(wave, len(wave), duration)

    def run(
        self,
        items: Sequence[Prepared],
        options: Sequence[DecodeOptions],
        precision: str,
        forward: ForwardFn | None = None,
    ) -> BatchOutput:
        ordered: list[ItemResult | None] = [None] * len(items)
        for group in dict.fromkeys(options):  # the model takes one set of options per call
            idx = [i for i, o in enumerate(options) if o == group]
            # The model's own inference, not AutoModel.generate(): that one resets torch's thread count, deep-copies
            # its whole config and empties the CUDA cache on every call. llm_dtype = the serving precision: the
            # model wraps its LLM in an autocast of its own, which (fp32 by default) would switch ours off.
            kwargs: dict[str, Any] = {**self.am.kwargs, "batch_size": len(idx), "llm_dtype": precision}
            if group.language != "auto":
                kwargs["language"] = group.language
            if group.prompt:
                kwargs["hotwords"] = group.prompt
            keys = [f"item{i}" for i in idx]
            returned = self.model.inference(data_in=[items[i].data for i in idx], key=keys, **kwargs)
            out = returned[0]  # (results, meta)
            for i, res in zip(idx, out, strict=True):
                language = group.language if group.language != "auto" else None
                ordered[i] = ItemResult(text=str(res.get("text", "")).strip(), language=language)
        return BatchOutput([r if r is not None else ItemResult("") for r in ordered], True, None)

    def detokenize(self, tokens: Sequence[str]) -> str:
        return "".join(tokens).strip()


Family = SenseVoice | Paraformer | Nano
