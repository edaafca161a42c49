"""Device faults injected on CPU into the real tiny SenseVoice backend: an out-of-memory batch is split in halves
(not item by item) and every item still gets its own result; a sticky CUDA error (the context is gone) makes the
server refuse work and fail /healthz and /readyz, so that the kubelet restarts it."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import torch
from asr_inference.backends import DecodeOptions
from asr_inference.device_faults import is_out_of_memory, sticky_device_error
from serving import metric, metric_samples, serve, transcribe


def _good_items(backend: Any, seconds: tuple[int, ...]) -> list[Any]:
    rng = np.random.default_rng(0)
    return [backend.prepare((rng.standard_normal(16000 * s) * 0.1).astype(np.float32)) for s in seconds]


def test_the_errors_are_told_apart_from_their_exceptions() -> None:
    assert is_out_of_memory(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert not is_out_of_memory(RuntimeError("shape mismatch"))
    illegal = RuntimeError("CUDA error: an illegal memory access was encountered\nCUDA kernel errors ...")
    assert sticky_device_error(illegal) == "RuntimeError: illegal memory access"
    assert sticky_device_error(RuntimeError("CUDA error: uncorrectable ECC error encountered")) is not None
    assert sticky_device_error(torch.OutOfMemoryError("CUDA out of memory")) is None  # recoverable
    assert sticky_device_error(ValueError("bad features")) is None


async def test_out_of_memory_batch_runs_as_halves(sensevoice_dir: Path) -> None:
    async with serve(model=str(sensevoice_dir), max_batch_size=4, max_wait_ms=1000, cache_entries=0) as (app, client):
        backend, engine = app.state.asr.backend, app.state.asr.engine
        items = _good_items(backend, (1, 2, 3, 4))
        alone = [(await engine.submit(p, DecodeOptions()).future).text for p in items]
        real, sizes = backend.transcribe_batch, []

        def fits_two(prepared: list[Any], options: list[Any]) -> Any:
            sizes.append(len(prepared))
            if len(prepared) > 2:
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 9.00 GiB")
            return real(prepared, options)

        backend.transcribe_batch = fits_two
        outcomes = await asyncio.gather(*(engine.submit(p, DecodeOptions()).future for p in items))
        samples = await metric_samples(client)
    assert [o.text for o in outcomes] == alone
    assert sizes == [4, 2, 2]  # two halves, not four singles
    assert metric(samples, "asr_device_errors_total", kind="out_of_memory") == 1
    assert metric(samples, "asr_batch_retries_total") == 0


async def test_sticky_device_error_stops_the_server_taking_work(
    sensevoice_dir: Path, speech_files: dict[str, Path]
) -> None:
    async with serve(model=str(sensevoice_dir), max_batch_size=4, cache_entries=0) as (app, client):
        backend = app.state.asr.backend
        calls = []

        def broken(prepared: list[Any], options: list[Any]) -> Any:
            calls.append(len(prepared))
            raise RuntimeError("CUDA error: an illegal memory access was encountered")

        backend.transcribe_batch = broken
        first = await transcribe(client, speech_files["digits_a.wav"])
        second = await transcribe(client, speech_files["digits_b.wav"])
        health, ready = await client.get("/healthz"), await client.get("/readyz")
        samples = await metric_samples(client)
    assert first.status_code == 503 and first.json()["error"]["code"] == "device_failed"
    assert first.headers["retry-after"] == "5"
    assert second.status_code == 503 and second.json()["error"]["code"] == "device_failed"
    assert calls == [1]  # one failed forward; nothing retried item by item, the second refused at admission
    assert health.status_code == 503 and "illegal memory access" in health.json()["error"]
    assert ready.status_code == 503
    assert metric(samples, "asr_device_errors_total", kind="sticky") == 1
