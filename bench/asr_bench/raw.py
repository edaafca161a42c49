"""Raw model ceiling: the server's own backend, in this process, no HTTP, no queue.

Times `prepare` (features, one clip at a time, as the server's worker threads do) and `transcribe_batch` (the
padded forward) separately at each batch size, on the same clips as the load runs.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .clips import Clip


def batch_sizes(max_batch_size: int) -> list[int]:
    sizes, n = [], 1
    while n < max_batch_size:
        sizes.append(n)
        n *= 2
    return [*sizes, max_batch_size]


def measure_in_thread(*args: Any, **kwargs: Any) -> dict[str, Any]:
    """`measure` on a fresh worker thread, as the server runs its forward passes on its own inference thread
    (on a busy machine, torch's multi-threaded CPU kernels called from the main thread were up to 100x slower
    than from a worker thread in this process: measure what the server does)."""
    import contextlib
    import sys
    from concurrent.futures import ThreadPoolExecutor

    # funasr prints notices on stdout at import: keep stdout for the tool's own JSON headline
    with (
        contextlib.redirect_stdout(sys.stderr),
        ThreadPoolExecutor(max_workers=1, thread_name_prefix="asr-bench-raw") as pool,
    ):
        return pool.submit(measure, *args, **kwargs).result()


def measure(
    model: Path,
    clips: Sequence[Clip],
    *,
    precision: str,
    device: str,
    ncpu: int,
    max_batch_size: int,
    min_s: float = 2.0,
    min_reps: int = 2,
    on_step: Callable[[str], None] | None = None,
    force_precision: bool = True,
) -> dict[str, Any]:
    """`force_precision` (default): a ceiling measures the precision it is labelled with even where the server's
    warm-up gate would serve fp32; the gate's verdict is reported beside it (`precision_check`)."""
    import torch
    from asr_inference.backends import DecodeOptions
    from asr_inference.backends.funasr_backend import FunASRBackend
    from asr_inference.config import Settings

    t0 = time.perf_counter()
    settings = Settings(
        model=str(model), device=device, precision=precision, ncpu=ncpu, force_precision=force_precision
    )
    backend = FunASRBackend(settings)
    backend.load()
    load_s = time.perf_counter() - t0
    samples = [c.samples() for c in clips]
    # features for every clip, timed one by one (steady state after one untimed pass)
    for s in samples[: min(4, len(samples))]:
        backend.prepare(s)
    feat_s = 0.0
    prepared = []
    for s in samples:
        t = time.perf_counter()
        prepared.append(backend.prepare(s))
        feat_s += time.perf_counter() - t
    audio_total = sum(c.duration_s for c in clips)
    features_per_audio_s = feat_s / audio_total

    def cycle(n: int, start: int) -> list[Any]:
        return [prepared[(start + i) % len(prepared)] for i in range(n)]

    info = backend.warm(cycle(max_batch_size, 0))
    on = backend.device  # the torch.device resolved from `device` ("cuda:N" synchronizes GPU N, not GPU 0)
    sync = (lambda: torch.cuda.synchronize(on)) if on.type == "cuda" else (lambda: None)
    rows = []
    for bs in batch_sizes(max_batch_size):
        if on_step is not None:
            on_step(f"raw {precision} batch {bs}")
        options = [DecodeOptions()] * bs
        backend.transcribe_batch(cycle(bs, 0), options)  # this shape once, untimed
        fwd_s, audio_s, reps, start = 0.0, 0.0, 0, 0
        while reps < min_reps or fwd_s < min_s:
            batch = cycle(bs, start)
            start += bs
            sync()
            t = time.perf_counter()
            backend.transcribe_batch(batch, options)
            sync()
            fwd_s += time.perf_counter() - t
            audio_s += sum(it.duration_s for it in batch)
            reps += 1
            if reps >= 200:
                break
        forward_rtfx = audio_s / fwd_s
        rows.append(
            {
                "batch_size": bs,
                "batches": reps,
                "audio_s": round(audio_s, 3),
                "forward_s": round(fwd_s, 4),
                "forward_ms_per_item": round(1000 * fwd_s / (reps * bs), 3),
                "forward_rtfx": round(forward_rtfx, 2),
                "features_forward_rtfx": round(1 / (features_per_audio_s + 1 / forward_rtfx), 2),
            }
        )
    return {
        "precision_requested": precision,
        "precision_used": info.precision,
        "precision_fallback_reason": info.precision_fallback_reason,
        "precision_check": {
            "argmax_agreement": info.precision_agreement,
            "cer": info.precision_cer,
            "failure": info.precision_check_failure,
            "forced": info.precision_forced,
        },
        "load_s": round(load_s, 2),
        "torch_threads": torch.get_num_threads(),
        "features": {
            "clips": len(clips),
            "audio_s": round(audio_total, 3),
            "seconds": round(feat_s, 4),
            "ms_per_clip": round(1000 * feat_s / len(clips), 3),
            "rtfx": round(audio_total / feat_s, 2),
        },
        "by_batch_size": rows,
        "best_forward_rtfx": max(r["forward_rtfx"] for r in rows),
        "best_features_forward_rtfx": max(r["features_forward_rtfx"] for r in rows),
    }
