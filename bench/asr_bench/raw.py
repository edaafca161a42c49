"""Raw model ceiling: the server's own backend, in this process, no HTTP, no queue.

Times, at each batch size, on the same clips as the load runs: `batch_features` (fbank + LFR + CMVN of the whole
batch on the model's device, as the inference thread makes them) and `transcribe_batch` (features + the padded
forward); the forward alone is their difference.
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
    prepared = [backend.prepare(s) for s in samples]  # waveforms: the features come with each batch
    audio_total = sum(c.duration_s for c in clips)

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
        whole_s, feat_s, audio_s, reps, start = 0.0, 0.0, 0.0, 0, 0
        while reps < min_reps or whole_s < min_s:
            batch = cycle(bs, start)
            start += bs
            sync()
            t = time.perf_counter()
            backend.batch_features(batch)
            sync()
            t1 = time.perf_counter()
            backend.transcribe_batch(batch, options)
            sync()
            feat_s, whole_s = feat_s + t1 - t, whole_s + time.perf_counter() - t1
            audio_s += sum(it.duration_s for it in batch)
            reps += 1
            if reps >= 200:
                break
        fwd_s = max(whole_s - feat_s, 1e-9)
        rows.append(
            {
                "batch_size": bs,
                "batches": reps,
                "audio_s": round(audio_s, 3),
                "forward_s": round(fwd_s, 4),
                "features_s": round(feat_s, 4),
                "forward_ms_per_item": round(1000 * fwd_s / (reps * bs), 3),
                "features_ms_per_audio_s": round(1000 * feat_s / audio_s, 4),
                "forward_rtfx": round(audio_s / fwd_s, 2),
                "features_forward_rtfx": round(audio_s / whole_s, 2),
            }
        )
    largest = rows[-1]
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
        "features": {  # at the largest batch size: what a busy server's inference thread spends on them
            "clips": len(clips),
            "audio_s": round(audio_total, 3),
            "batch_size": largest["batch_size"],
            "ms_per_audio_s": largest["features_ms_per_audio_s"],
            "ms_per_clip": round(largest["features_ms_per_audio_s"] * audio_total / len(clips), 3),
            "rtfx": round(1000 / max(largest["features_ms_per_audio_s"], 1e-9), 2),
        },
        "by_batch_size": rows,
        "best_forward_rtfx": max(r["forward_rtfx"] for r in rows),
        "best_features_forward_rtfx": max(r["features_forward_rtfx"] for r in rows),
    }
