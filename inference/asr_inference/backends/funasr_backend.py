"""FunASR backend: SenseVoice, Paraformer and Fun-ASR-Nano loaded through `funasr.AutoModel`.

SenseVoice and Paraformer do not go through `AutoModel.generate()` per batch: it spends more time in Python and
per-clip feature extraction than in the encoder. `prepare` (worker threads) only wraps the waveform; the features
of the whole batch are made in one call on the model's device (`features.FastFbank.batch`, outside autocast), and
`transcribe_batch` runs the model's own modules on the padded batch — the same steps as the model's `inference()`,
with two fixes: per-item language/ITN queries, and (Paraformer) padded encoder frames zeroed before the CIF
predictor, whose convolution otherwise leaks padding into the last real frames. Fun-ASR-Nano goes through
`generate()` with tensors (its left-padded LLM batch is exact).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn.utils.rnn import pad_sequence

from .. import model_source
from ..config import Settings
from ..cpus import intra_op_threads, usable_cpus
from ..errors import ModelLoadError
from ..features import FastFbank
from ..metrics import Metrics
from . import onnx_forward, precision_gate
from .base import BatchOutput, DecodeOptions, ItemResult, ModelInfo, Prepared, Token
from .cuda_setup import configure_tf32, resolve_device, select_device
from .graph import ForwardFn, SenseVoiceForward, trace_checked

log = logging.getLogger("asr_inference.backend")

_LFR_FRAME_S = 0.06  # 10 ms shift x LFR n=6
_EMOTIONS = {"HAPPY", "SAD", "ANGRY", "NEUTRAL", "EMO_UNKNOWN", "FEARFUL", "DISGUSTED", "SURPRISED"}
_EVENTS = {"Speech", "BGM", "Laughter", "Applause", "Cry", "Sneeze", "Breath", "Cough", "Event_UNK"}


class FunASRBackend:
    """A funasr model served in batches. Not thread-safe: one inference thread per device calls it."""

    max_segment_s: float | None = None  # any length: `segment_s` alone bounds an item

    def __init__(self, settings: Settings, metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.metrics = metrics
        self.source = model_source.resolve(settings)
        self.device = resolve_device(settings.device)
        self.precision = "fp32"
        self.family = ""
        self.languages: frozenset[str] | None = None
        self.supports_token_times = False
        self.info = ModelInfo(
            name=self.source.name,
            family=settings.family,
            device=str(self.device),
            precision="fp32",
            requested_precision=settings.precision,
            path=self.source.ref,
        )
        self._am: Any = None
        self.model: Any = None
        self.frontend: Any = None
        self.tokenizer: Any = None
        self._features: FastFbank | None = None
        self._sv_forward: SenseVoiceForward | None = None
        self._sv_graph: ForwardFn | None = None  # traced `_sv_forward` at the serving precision (set by `warm`)
        self._onnx: ForwardFn | None = None  # `_sv_forward` in ONNX Runtime, once it passed the gate (`warm`)
        self._weights: Path | None = None

    # ------------------------------------------------------------------ load
    def load(self) -> None:
        from funasr import AutoModel  # ~10 s: only here

        select_device(self.device)  # before anything allocates: GPU N, never GPU 0 by default
        cpus = usable_cpus()  # the container's CPU quota, not the node's cores
        ncpu = intra_op_threads(self.device.type, cpus, self.settings.ncpu)
        kwargs: dict[str, Any] = {
            "model": self.source.ref,
            "disable_update": True,
            "disable_pbar": True,
            "disable_log": True,
            "device": str(self.device),
            "ncpu": ncpu,  # generate() resets torch's thread count to this on every call
        }
        if not self.source.local:
            kwargs["hub"] = self.source.hub
            if self.settings.model_revision:
                kwargs["model_revision"] = self.settings.model_revision
        try:
            self._am = AutoModel(**kwargs)
        except Exception as exc:
            raise ModelLoadError(f"funasr could not load {self.source.ref!r}: {exc}") from exc
        self.model = self._am.model
        self.model.eval()
        self.frontend = self._am.kwargs.get("frontend")
        self.tokenizer = self._am.kwargs.get("tokenizer")
        detected = model_source.family_of(str(self._am.kwargs.get("model", "")))
        if self.settings.family not in ("auto", detected):
            raise ModelLoadError(f"family {self.settings.family!r} requested but the model is {detected!r}")
        self.family = detected
        if self.frontend is not None and getattr(self.frontend, "dither", 0.0) != 0.0:
            log.info("setting WavFrontend dither %s -> 0.0 for deterministic results", self.frontend.dither)
            self.frontend.dither = 0.0
        self._verify_weights(self._am.kwargs.get("init_param"))
        self._weights = Path(self._am.kwargs["init_param"])
        if self.frontend is not None and self.family != "fun-asr-nano":
            self._features = FastFbank(self.frontend)
        if self.family == "sensevoice":
            self.languages = frozenset(self.model.lid_dict)
            self.supports_token_times = True
            self._sv_forward = SenseVoiceForward(self.model).eval()
        elif self.family == "paraformer":
            self.supports_token_times = True
        self.info.family = self.family
        torch.set_num_threads(ncpu)
        self.info.tf32 = configure_tf32(self.device, self.settings.tf32)
        log.info("loaded %s (%s) on %s (TF32 %s)", self.source.ref, self.family, self.device, self.info.tf32)

    def _verify_weights(self, init_param: str | None) -> None:
        """funasr keeps random weights for missing/mismatched keys and only logs it: check the load ourselves."""
        if not init_param or not os.path.isfile(init_param):
            raise ModelLoadError(f"model weights not found (init_param={init_param!r})")
        src = torch.load(init_param, map_location="cpu", weights_only=False)
        for key in ("state_dict", "model_state_dict", "model"):
            if isinstance(src, dict) and isinstance(src.get(key), dict):
                src = src[key]
        src = {k.removeprefix("module."): v for k, v in src.items() if isinstance(v, torch.Tensor)}
        # Fun-ASR-Nano's LLM weights come from its own sub-directory, not model.pt.
        optional = ("llm.",) if self.family == "fun-asr-nano" else ()
        missing, differing = [], []
        for name, tensor in self.model.state_dict().items():
            ref = src.get(name)
            if ref is None:
                if not name.startswith(optional):
                    missing.append(name)
            elif ref.shape != tensor.shape or not torch.equal(ref.to(tensor.device, tensor.dtype), tensor):
                differing.append(name)
        if missing or differing:
            raise ModelLoadError(
                f"model.pt did not load into the model: {len(missing)} parameters missing from the checkpoint "
                f"(e.g. {missing[:3]}), {len(differing)} differ in shape or value (e.g. {differing[:3]}); "
                "funasr would have served random weights for them"
            )

    # ------------------------------------------------------------------ per item (worker threads)
    def prepare(self, samples: np.ndarray) -> Prepared:
        array = np.ascontiguousarray(samples, dtype=np.float32)
        if not array.flags.writeable:  # a read-only memory map: torch wants its own (writable) buffer
            array = array.copy()
        wave = torch.from_numpy(array)
        duration = len(samples) / 16000
        if self.family == "fun-asr-nano":
            return Prepared(wave, len(samples), duration)
        assert self._features is not None
        if self._features.batchable(len(wave)):  # features later, with the batch (`batch_features`)
            return Prepared(wave, self._features.frames(len(wave)), duration)
        with torch.inference_mode():  # a shape only funasr's own frontend takes: features now
            feats = self._features.single(wave)
        return Prepared(feats, int(feats.shape[0]), duration)

    # ------------------------------------------------------------------ precision
    def warm(self, items: Sequence[Prepared]) -> ModelInfo:
        self._sv_graph = None  # the checks below compare eager runs; a graph is chosen (again) at the end
        options = [DecodeOptions()] * len(items)
        reference = self._run(items, options, "fp32")
        choice = precision_gate.choose(
            self.settings, self.device.type, reference, lambda precision: self._run(items, options, precision)
        )
        self.precision = precision_gate.record(self.info, choice)
        self._choose_runtime(items, reference)
        self._choose_graph(items)
        return self.info

    def _choose_runtime(self, items: Sequence[Prepared], reference: BatchOutput) -> None:
        """`runtime=onnx`: export (or take from the cache) the SenseVoice forward, run the warm-up items through ONNX
        Runtime and keep it only if it passes the precision gate against the PyTorch fp32 outputs."""
        settings, reason = self.settings, None
        self._onnx = None
        self.info.requested_runtime, self.info.quantize = settings.runtime, settings.quantize
        if settings.runtime == "onnx":
            if self._sv_forward is None:
                reason = f"the onnx runtime covers SenseVoice models; this {self.family} model runs on PyTorch"
            elif self.precision != "fp32":
                reason = f"the onnx runtime runs fp32 (or int8) graphs; precision {self.precision} was asked for"
            else:
                reason = self._try_onnx(items, reference)
            if reason is not None:
                log.warning("runtime onnx requested; PyTorch serves: %s", reason)
        self.info.runtime = "onnx" if self._onnx is not None else "pytorch"
        self.info.runtime_fallback_reason = reason

    def _try_onnx(self, items: Sequence[Prepared], reference: BatchOutput) -> str | None:
        assert self._sv_forward is not None
        label = "onnx int8" if self.settings.quantize == "int8" else "onnx"
        options = [DecodeOptions()] * len(items)
        try:
            example = self._sensevoice_inputs(items[:2], options[:2])
            cache = self.settings.onnx_cache_dir or onnx_forward.default_cache_dir()
            path = onnx_forward.prepared_graph(self._sv_forward, example, self._weights, self.settings.quantize, cache)
            forward = onnx_forward.OnnxForward(path, torch.get_num_threads(), self.device)
            with torch.inference_mode():
                candidate = self._sensevoice(items, options, forward)
        except Exception as exc:  # an export or a runtime that fails is a refused optimisation, not a failed start
            return f"{label} could not be prepared: {type(exc).__name__}: {exc}"
        verdict = precision_gate.judge_outputs(label, reference, candidate, self.settings)
        self.info.runtime_agreement, self.info.runtime_cer = verdict.agreement, verdict.cer
        if verdict.reason is not None and self.settings.force_precision:
            log.warning("%s fails the warm-up check but is forced: %s", label, verdict.reason)
            self.info.runtime_forced = True
        elif verdict.reason is not None:
            return verdict.reason
        self._onnx = forward
        log.info("%s serves the forward (%s, %s)", label, forward.provider, forward.path)
        return None

    def _choose_graph(self, items: Sequence[Prepared]) -> None:
        """`graph_mode=trace`: trace the SenseVoice forward and keep the graph only if it reproduces the eager
        outputs on batches of other shapes than the one it was traced on (`graph.trace_checked`)."""
        reason: str | None = None
        if self.settings.graph_mode == "eager":
            reason = "graph_mode=eager"
        elif self._onnx is not None:
            reason = "the onnx runtime serves the forward"
        elif self._sv_forward is None:
            reason = f"graph mode covers SenseVoice models; this {self.family} model runs eagerly"
        else:

            def inputs(batch: Sequence[Prepared]) -> tuple[torch.Tensor, ...]:
                return self._sensevoice_inputs(batch, [DecodeOptions()] * len(batch))

            first = items[0]
            if first.data.dim() == 1:  # a waveform (see prepare): its first half
                half = self.prepare(first.data[: len(first.data) // 2].numpy())
            else:
                n = max(1, first.length // 2)
                half = Prepared(first.data[:n], n, first.duration_s / 2)
            # shapes other than the example's (the two longest items, the longest alone, half an item) rather
            # than the whole warm-up batch: checking costs three eager + three to six graph forwards, not full batches
            checks = [inputs(items[-2:]), inputs(items[-1:]), inputs([half])]
            # traced under the serving precision's autocast: the graph carries its casts (see trace_checked)
            self._sv_graph, reason = trace_checked(
                self._sv_forward,
                inputs(items[:2]),
                checks,
                eager_context=lambda: precision_gate.autocast(self.device.type, self.precision),
                optimize=self.device.type == "cpu",  # no fusion on CUDA: see trace_checked
            )
        self.info.graph_mode = "trace" if self._sv_graph is not None else "eager"
        self.info.graph_fallback_reason = reason if self.settings.graph_mode == "trace" else None
        if self.settings.graph_mode == "trace" and self._sv_graph is None and self._onnx is None:
            log.warning("graph_mode=trace requested; the forward runs eagerly: %s", reason)

    # ------------------------------------------------------------------ batch (inference thread)
    def transcribe_batch(self, items: Sequence[Prepared], options: Sequence[DecodeOptions]) -> list[ItemResult]:
        def run(precision: str) -> BatchOutput:
            return self._run(items, options, precision)

        return list(precision_gate.rerun_if_not_finite(run, self.precision, self.metrics, len(items)).results)

    def _run(self, items: Sequence[Prepared], options: Sequence[DecodeOptions], precision: str) -> BatchOutput:
        if self._onnx is not None and precision == self.precision:  # only ever set for SenseVoice, in fp32
            with torch.inference_mode():
                return self._sensevoice(items, options, self._onnx)
        if self._sv_graph is not None and precision == self.precision:  # only ever set for SenseVoice
            with torch.inference_mode():  # no autocast: the graph was traced under it and replays its casts
                return self._sensevoice(items, options, self._sv_graph)
        with torch.inference_mode(), precision_gate.autocast(self.device.type, precision):
            if self.family == "sensevoice":
                return self._sensevoice(items, options)
            if self.family == "paraformer":
                return self._paraformer(items, options)
            return self._nano(items, options, precision)

    def batch_features(self, items: Sequence[Prepared]) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch's features, zero-padded, on the device: made here from the waveforms `prepare` left (fp32
        whatever the serving precision: power spectra overflow fp16), else as `prepare` made them."""
        assert self._features is not None
        t0, cpu0 = time.perf_counter(), time.thread_time()
        with torch.autocast(self.device.type, enabled=False):
            if all(it.data.dim() == 1 for it in items):
                feats, _ = self._features.batch([it.data for it in items], self.device)
            else:  # rare: an item funasr's own frontend had to make
                made = [it.data if it.data.dim() == 2 else self._features.single(it.data) for it in items]
                feats = pad_sequence(made, batch_first=True).to(self.device)
        if self.metrics is not None:
            self.metrics.stage_cpu_seconds_total.labels(stage="features").inc(time.thread_time() - cpu0)
            self.metrics.stage_duration_seconds.labels(stage="features").observe(time.perf_counter() - t0)
        lengths = torch.tensor([it.length for it in items], dtype=torch.int32, device=self.device)
        return feats, lengths

    def _sensevoice_inputs(
        self, items: Sequence[Prepared], options: Sequence[DecodeOptions]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        m = self.model
        speech, lengths = self.batch_features(items)
        lang = torch.tensor([[m.lid_dict.get(o.language, 0)] for o in options], device=speech.device)
        norm = [[m.textnorm_dict["withitn" if o.use_itn else "woitn"]] for o in options]
        return speech, lengths, lang, torch.tensor(norm, device=speech.device)

    def _sensevoice(
        self, items: Sequence[Prepared], options: Sequence[DecodeOptions], graph: ForwardFn | None = None
    ) -> BatchOutput:
        m = self.model
        assert self._sv_forward is not None
        logits, encoder_lens = (graph or self._sv_forward)(*self._sensevoice_inputs(items, options))
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

    def _paraformer(self, items: Sequence[Prepared], options: Sequence[DecodeOptions]) -> BatchOutput:
        from funasr.utils.timestamp_tools import ts_prediction_lfr6_standard

        m = self.model
        speech, lengths = self.batch_features(items)
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

    def _nano(self, items: Sequence[Prepared], options: Sequence[DecodeOptions], precision: str) -> BatchOutput:
        ordered: list[ItemResult | None] = [None] * len(items)
        for group in dict.fromkeys(options):  # the model takes one set of options per call
            idx = [i for i, o in enumerate(options) if o == group]
            # The model's own inference, not AutoModel.generate(): that one resets torch's thread count, deep-copies
            # its whole config and empties the CUDA cache on every call. llm_dtype = the serving precision: the
            # model wraps its LLM in an autocast of its own, which (fp32 by default) would switch ours off.
            kwargs: dict[str, Any] = {**self._am.kwargs, "batch_size": len(idx), "llm_dtype": precision}
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

    # ------------------------------------------------------------------ text
    def detokenize(self, tokens: Sequence[str]) -> str:
        if not tokens:
            return ""
        if self.family == "sensevoice":
            return "".join(tokens).replace("\u2581", " ").strip()
        if self.family == "paraformer":
            from funasr.utils.postprocess_utils import sentence_postprocess

            return str(sentence_postprocess(list(tokens))[0]).strip()
        return "".join(tokens).strip()
