"""Load and warm the model: everything a ready server has, made once, as one `Loaded` object.

Routes check one thing (`state.loaded`) instead of four Optionals that are only ever set together.
"""

from __future__ import annotations

import asyncio
import io
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from .backends import Backend, DecodeOptions, ModelInfo, create_backend
from .config import Settings
from .engine import Engine
from .metrics import Metrics
from .pipeline import Transcriber
from .warmup import to_wav_bytes, warmup_samples

log = logging.getLogger("asr_inference.loading")


@dataclass(frozen=True)
class Loaded:
    """A loaded, warmed model and the engine and transcriber that serve it."""

    backend: Backend
    engine: Engine
    transcriber: Transcriber
    info: ModelInfo


def worker_devices(settings: Settings) -> list[str]:
    """One inference worker per device: `--inference-workers` of them, or (0) one per GPU the pod sees when
    `--device` is auto/cuda on a CUDA machine (every GPU of the pod), else one."""
    import torch

    from .backends.cuda_setup import resolve_device
    from .errors import ModelLoadError

    device = resolve_device(settings.device)
    count = settings.inference_workers
    if device.type == "cuda" and device.index is None:
        visible = torch.cuda.device_count()
        if count > visible:
            raise ModelLoadError(f"{count} inference workers asked for, but this process sees {visible} GPUs")
        return [f"cuda:{i}" for i in range(count or visible)]
    return [str(device)] * (count or 1)


async def _load_backends(settings: Settings, metrics: Metrics) -> list[Backend]:
    """The model loaded once per worker device, one after the other (each load makes its own device current)."""
    loop = asyncio.get_running_loop()
    devices = worker_devices(settings)
    backends = []
    for device in devices:
        per_device = settings if len(devices) == 1 else settings.model_copy(update={"device": device})
        backend = await loop.run_in_executor(None, create_backend, per_device, metrics)
        await loop.run_in_executor(None, backend.load)
        backends.append(backend)
    if len(devices) > 1:
        log.info("%d inference workers: %s", len(devices), ", ".join(devices))
    return backends


async def load_and_warm(settings: Settings, metrics: Metrics, pool: ThreadPoolExecutor) -> Loaded:
    """Load the backend (one per worker device), check its precision on a full batch, and run the whole path once
    with a full batch."""
    loop = asyncio.get_running_loop()
    backends = await _load_backends(settings, metrics)
    backend = backends[0]
    limit = backend.max_segment_s
    if limit is not None and settings.segment_s > limit:
        # the model takes no longer item (Whisper: 30 s): cut longer audio there rather than let it be truncated
        log.info("segment_s %.1f -> %.1f: the longest item %s takes", settings.segment_s, limit, backend.info.family)
        settings.segment_s = limit
    engine = Engine(
        backends,
        metrics,
        max_batch_size=settings.max_batch_size,
        max_wait_ms=settings.max_wait_ms,
        max_batch_audio_s=settings.max_batch_audio_s,
        max_queue_size=settings.max_queue_size,
        max_queue_wait_s=settings.max_queue_wait_s,
        max_length_ratio=settings.max_length_ratio,
    )
    # 1) precision check on a full batch, on each worker's inference thread (fp32 vs the requested precision)
    samples = warmup_samples(settings)
    prepared = [await loop.run_in_executor(pool, backend.prepare, s) for s in samples]
    infos = await asyncio.gather(
        *(engine.run_on_device(w.backend.warm, prepared, worker=i) for i, w in enumerate(engine.workers))
    )
    info = infos[0]
    if len({(i.precision, i.runtime, i.graph_mode) for i in infos}) > 1:
        log.warning("workers serve differently after warm-up: %s", [(i.device, i.precision, i.runtime) for i in infos])
    if info.precision_fallback_reason is not None:
        metrics.precision_fallback_total.inc()
    # 2) the whole path — decode, features, queue, batch, forward, stitch — with the full batch at once
    engine.start()
    transcriber = Transcriber(settings, backend, engine, metrics, pool)
    await _warm_whole_path(settings, engine, transcriber, [to_wav_bytes(s) for s in samples])
    if info.device.startswith("cuda"):
        import torch

        metrics.gpu_memory_total_bytes.set(torch.cuda.get_device_properties(torch.device(info.device)).total_memory)
    return Loaded(backend, engine, transcriber, info)


async def _warm_whole_path(settings: Settings, engine: Engine, transcriber: Transcriber, uploads: list[bytes]) -> None:
    # one full-size forward: hold the batch until all warm-up items are in, whatever their spread of lengths
    engine.queue.max_wait_s, engine.queue.max_length_ratio = 60.0, 0.0
    tickets = [engine.ticket().arrive() for _ in uploads]  # not admitted: warm-up is never refused
    try:
        await asyncio.gather(
            *(
                transcriber.transcribe(io.BytesIO(u), DecodeOptions(), trusted=True, on_queued=t.release)
                for u, t in zip(uploads, tickets, strict=True)
            )
        )
    finally:
        engine.queue.max_wait_s, engine.queue.max_length_ratio = settings.max_wait_ms / 1000, settings.max_length_ratio
        for t in tickets:
            t.release()
