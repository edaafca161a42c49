"""Several inference workers (one per GPU of a pod), tested with two CPU workers of the tiny SenseVoice model: a batch
goes to an idle worker, every worker gives the same results, and the wait estimate shares the queue among them."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest
import soundfile as sf
from asr_inference.backends import DecodeOptions
from asr_inference.config import Settings
from asr_inference.engine import Engine, worker_labels
from asr_inference.errors import ModelLoadError
from asr_inference.loading import worker_devices
from asr_inference.metrics import Metrics
from serving import metric, metric_samples, serve, transcribe

CLIPS = ["short_hello.wav", "digits_a.wav", "digits_b.wav", "sentence_d.wav"]


def test_worker_devices_and_labels(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    assert worker_devices(Settings(device="cpu")) == ["cpu"]
    assert worker_devices(Settings(device="cpu", inference_workers=2)) == ["cpu", "cpu"]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    assert worker_devices(Settings(device="cuda")) == ["cuda:0", "cuda:1", "cuda:2", "cuda:3"]  # every GPU
    assert worker_devices(Settings(device="auto", inference_workers=2)) == ["cuda:0", "cuda:1"]
    assert worker_devices(Settings(device="cuda:3")) == ["cuda:3"]  # a named GPU: that one only
    with pytest.raises(ModelLoadError, match="sees 4 GPUs"):
        worker_devices(Settings(device="cuda", inference_workers=5))
    assert worker_labels(["cuda:0", "cuda:1"]) == ["cuda:0", "cuda:1"]
    assert worker_labels(["cpu", "cpu"]) == ["cpu/0", "cpu/1"]


class _Device:
    """A backend stand-in for the wait estimate: the engine only reads its device here."""

    device = "cpu"


async def test_the_wait_estimate_shares_the_queue_among_workers() -> None:
    one = Engine([_Device()], Metrics(), max_batch_size=4, max_wait_ms=10, max_batch_audio_s=600, max_queue_size=99)
    two = Engine(
        [_Device(), _Device()], Metrics(), max_batch_size=4, max_wait_ms=10, max_batch_audio_s=600, max_queue_size=99
    )
    ahead = [5.0] * 16  # four batches
    assert two.expected_wait_s(ahead) == pytest.approx(one.expected_wait_s(ahead) / 2)
    assert one.expected_wait_s(ahead) > 0


def _load_backend(model_dir: Path) -> Any:
    from asr_inference.backends.funasr_backend import FunASRBackend

    backend = FunASRBackend(Settings(model=str(model_dir), device="cpu"))
    backend.load()
    return backend


async def test_a_batch_goes_to_an_idle_worker_and_every_worker_agrees(
    sensevoice_dir: Path, speech_files: dict[str, Path]
) -> None:
    """Worker 0's thread is held, so the batch dispatched to it stays in flight: the next batch must go to worker 1
    and finish first. Then the other way round. Each worker's transcripts equal the model's alone."""
    backends = [_load_backend(sensevoice_dir), _load_backend(sensevoice_dir)]
    metrics = Metrics()
    engine = Engine(backends, metrics, max_batch_size=1, max_wait_ms=1, max_batch_audio_s=600, max_queue_size=99)
    items = [backends[0].prepare(sf.read(speech_files[c], dtype="float32")[0]) for c in CLIPS[:2]]
    alone = [backends[0].transcribe_batch([it], [DecodeOptions()])[0].text for it in items]
    assert alone[0] != alone[1]
    engine.start()
    try:
        for held in (0, 1):
            release = threading.Event()
            blocker = asyncio.create_task(engine.run_on_device(release.wait, 60, worker=held))
            engine.workers[held].busy_s = 0.0  # the held worker is the least busy: it takes the first batch
            engine.workers[1 - held].busy_s = 1.0
            first = engine.submit(items[0], DecodeOptions())
            async with asyncio.timeout(60):
                while not engine.workers[held].busy:  # the first batch is in flight on the held worker
                    await asyncio.sleep(0.01)
            second = engine.submit(items[1], DecodeOptions())
            async with asyncio.timeout(60):
                result = await second.future  # served by the other worker while the held one waits
            assert not first.future.done()
            release.set()
            await blocker
            async with asyncio.timeout(60):
                held_result = await first.future
            assert [held_result.text, result.text] == alone
        batches = {
            d: metrics.registry.get_sample_value("asr_device_batches_total", {"device": d}) for d in ("cpu/0", "cpu/1")
        }
        assert batches == {"cpu/0": 2.0, "cpu/1": 2.0}
    finally:
        await engine.stop()


async def test_a_server_with_two_workers(sensevoice_dir: Path, speech_files: dict[str, Path]) -> None:
    """The whole path with two workers: readiness names them, a burst's transcripts equal one-at-a-time ones, and
    every batch is counted on one worker."""
    settings: dict[str, Any] = {"model": str(sensevoice_dir), "inference_workers": 2, "max_batch_size": 2}
    async with serve(**settings, cache_entries=0) as (_, client):
        ready = (await client.get("/readyz")).json()
        assert ready["workers"] == ["cpu/0", "cpu/1"]
        clips = [speech_files[c] for c in CLIPS]
        burst = await asyncio.gather(*(transcribe(client, clip) for clip in clips * 2))
        one_by_one = [await transcribe(client, clip) for clip in clips]
        samples = await metric_samples(client)
    assert [r.json()["text"] for r in burst] == [r.json()["text"] for r in one_by_one] * 2
    per_worker = [metric(samples, "asr_device_batches_total", device=d) for d in ("cpu/0", "cpu/1")]
    assert sum(per_worker) == metric(samples, "asr_batch_size_count")
    busy = [metric(samples, "asr_device_busy_seconds_total", device=d) for d in ("cpu/0", "cpu/1")]
    assert sum(busy) > 0 and all(b >= 0 for b in busy)
