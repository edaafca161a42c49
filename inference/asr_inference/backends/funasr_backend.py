"""FunASR backend: SenseVoice, Paraformer and Fun-ASR-Nano loaded through `funasr.AutoModel`.

They do not go through `AutoModel.generate()` per batch: it spends more time in Python and per-clip feature
extraction than in the encoder. What differs per family (item preparation, the batch's forward and decoding,
joining token pieces) is one object chosen at load (`funasr_families`); this module loads, checks the weights,
runs the warm-up precision gate and chooses the runtime of SenseVoice's forward (ONNX Runtime, traced graph, eager).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import model_source
from ..config import Settings
from ..cpus import intra_op_threads, usable_cpus
from ..errors import ModelLoadError
from ..features import FastFbank
from ..metrics import Metrics
from . import onnx_forward, precision_gate
from .base import BatchOutput, DecodeOptions, ItemResult, ModelInfo, Prepared
from .cuda_setup import configure_tf32, resolve_device, select_device
from .funasr_families import Family, Nano, Paraformer, SenseVoice
from .graph import ForwardFn, SenseVoiceForward, trace_checked

log = logging.getLogger("asr_inference.backend")


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
        self._family: Family | None = None
        self._sv_graph: ForwardFn | None = None  # traced `_sv_forward` at the serving precision (set by `warm`)
        # SenseVoice's forward or Paraformer's encoder in ONNX Runtime, once it passed the gate (`warm`)
        self._onnx: ForwardFn | None = None
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
        self._family = self._family_of(detected)
        self.languages, self.supports_token_times = self._family.languages, self._family.supports_token_times
        self.info.family = self.family
        torch.set_num_threads(ncpu)
        self.info.tf32 = configure_tf32(self.device, self.settings.tf32)
        log.info("loaded %s (%s) on %s (TF32 %s)", self.source.ref, self.family, self.device, self.info.tf32)

    @property
    def _sv_forward(self) -> SenseVoiceForward | None:
        """SenseVoice's batched forward module (its graph and ONNX runtimes are made from it); None otherwise."""
        return self._family.forward if isinstance(self._family, SenseVoice) else None

    def _family_of(self, family: str) -> Family:
        if family == "fun-asr-nano":
            return Nano(self._am)
        self._features = FastFbank(self.frontend)
        kind = SenseVoice if family == "sensevoice" else Paraformer
        return kind(self.model, self.tokenizer, self._features, self.device, self.metrics)

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
        assert self._family is not None
        return self._family.prepare(wave, len(samples) / 16000)

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
            if not isinstance(self._family, SenseVoice | Paraformer):
                reason = f"the onnx runtime covers SenseVoice and Paraformer; this {self.family} model runs on PyTorch"
            elif self.precision != "fp32":
                reason = f"the onnx runtime runs fp32 (or int8) graphs; precision {self.precision} was asked for"
            else:
                reason = self._try_onnx(items, reference)
            if reason is not None:
                log.warning("runtime onnx requested; PyTorch serves: %s", reason)
        self.info.runtime = "onnx" if self._onnx is not None else "pytorch"
        self.info.runtime_fallback_reason = reason

    def _try_onnx(self, items: Sequence[Prepared], reference: BatchOutput) -> str | None:
        assert isinstance(self._family, SenseVoice | Paraformer)
        label = "onnx int8" if self.settings.quantize == "int8" else "onnx"
        options = [DecodeOptions()] * len(items)
        try:
            with torch.no_grad():
                module, example, signature = self._family.onnx_export(items[:2], options[:2])
            cache = self.settings.onnx_cache_dir or onnx_forward.default_cache_dir()
            quantize = self.settings.quantize
            path = onnx_forward.prepared_graph(module, example, self._weights, quantize, cache, signature)
            forward = onnx_forward.OnnxForward(path, torch.get_num_threads(), self.device, signature)
            with torch.inference_mode():
                candidate = self._family.run(items, options, "fp32", forward)
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
        assert self._family is not None
        # ONNX (SenseVoice's forward, Paraformer's encoder) or the traced graph (SenseVoice), at the serving precision
        runtime = (self._onnx or self._sv_graph) if precision == self.precision else None
        if runtime is not None:  # no autocast: ONNX runs fp32; the graph was traced under it and replays its casts
            with torch.inference_mode():
                return self._family.run(items, options, precision, runtime)
        with torch.inference_mode(), precision_gate.autocast(self.device.type, precision):
            return self._family.run(items, options, precision)

    def batch_features(self, items: Sequence[Prepared]) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch's features on the device, as the forward gets them (SenseVoice and Paraformer)."""
        assert isinstance(self._family, SenseVoice | Paraformer)
        return self._family.batch_features(items)

    def _sensevoice_inputs(
        self, items: Sequence[Prepared], options: Sequence[DecodeOptions]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        assert isinstance(self._family, SenseVoice)
        return self._family.inputs(items, options)

    # ------------------------------------------------------------------ text
    def detokenize(self, tokens: Sequence[str]) -> str:
        assert self._family is not None
        return self._family.detokenize(tokens)
