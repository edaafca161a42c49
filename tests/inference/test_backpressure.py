"""Backpressure and isolation: 429 under a flood, 504 on timeout, disconnects free their slots, a bad file or a
failing item never takes its batch-mates down."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import torch
from asr_inference.backends import DecodeOptions, Prepared
from asr_inference.batch_cost import BatchCost
from asr_inference.errors import QueueFull
from serving import metric, metric_samples, serve, transcribe


def _long_wav(speech_files: dict[str, Path], seconds: float) -> bytes:
    clip, rate = sf.read(speech_files["longer_f.wav"], dtype="float32")
    tiled = np.tile(clip, int(seconds * rate / len(clip)) + 1)[: int(seconds * rate)]
    buf = io.BytesIO()
    sf.write(buf, tiled, rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


async def test_flood_gets_429_with_retry_after(
    sensevoice_dir: Path, speech_files: dict[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    clip = speech_files["longer_f.wav"].read_bytes()
    caplog.set_level(logging.INFO, logger="asr_inference.access")
    async with serve(model=str(sensevoice_dir), max_batch_size=1, max_queue_size=2, cache_entries=0) as (_, client):
        # each request is 6 windows of 1.5 s: a few requests fill a queue of 2 items
        responses = await asyncio.gather(*(transcribe(client, clip, foo=str(i)) for i in range(16)))
        after = await metric_samples(client)
    codes = [r.status_code for r in responses]
    assert codes.count(200) >= 1 and codes.count(429) >= 1, codes
    assert set(codes) <= {200, 429}
    for r in responses:
        if r.status_code == 429:
            assert int(r.headers["retry-after"]) >= 1
            assert r.json()["error"] == {
                "message": r.json()["error"]["message"],
                "type": "rate_limit_error",
                "code": "queue_full",
            }
    assert metric(after, "asr_requests_total", code="429") == codes.count(429)
    assert metric(after, "asr_queue_depth") == 0
    # every 429 is counted; its log lines are sampled (one a second), each with the number left out before it
    refused = [r for r in caplog.records if r.name == "asr_inference.access" and getattr(r, "status", 0) == 429]
    assert refused and all(isinstance(getattr(r, "left_out", None), int) for r in refused)
    assert sum(1 + r.left_out for r in refused) <= codes.count(429)  # type: ignore[attr-defined]


async def test_queue_wait_budget_refuses_what_would_wait_too_long(
    speech_files: dict[str, Path], sensevoice_dir: Path
) -> None:
    """max_queue_wait_s: admission estimates the wait from the batches ahead x the learned batch cost. The device
    is held busy and the batch time set to 1 s; requests of one item each are sent one after another, each once
    the previous one's item is taken or queued: with batches of one, they see 0, 1 and 2 batches ahead (0-2 s) and
    are admitted; the fourth and fifth would wait 3 s, past the 2.5-s budget, and get 429 at once."""
    settings = {"max_batch_size": 1, "max_queue_wait_s": 2.5, "max_queue_size": 100, "cache_entries": 0}
    async with serve(model=str(sensevoice_dir), **settings) as (app, client):
        engine = app.state.asr.engine
        engine.batch_cost = BatchCost(initial_s=1.0)  # what it learns from 1-s batches (none ran yet)
        device_free = threading.Event()
        blocker = asyncio.create_task(engine.run_on_device(device_free.wait, 30))
        clip = speech_files["digits_a.wav"].read_bytes()  # short: one item per request
        sent = []
        for i in range(5):
            sent.append(asyncio.create_task(transcribe(client, clip, foo=str(i))))
            while not sent[-1].done() and len(engine.queue) + engine._busy < i + 1:
                await asyncio.sleep(0.01)
        refused = [t.result() for t in sent if t.done()]
        device_free.set()
        await blocker
        codes = [r.status_code for r in await asyncio.gather(*sent)]
    assert codes == [200, 200, 200, 429, 429], codes
    for r in refused:
        assert r.status_code == 429 and r.json()["error"]["code"] == "queue_full"
        assert "budget" in r.json()["error"]["message"] and int(r.headers["retry-after"]) >= 3


class _Request:
    """A request's token in the fair order (weakly referenced by the queue)."""


async def test_queue_wait_budget_counts_only_the_current_round(sensevoice_dir: Path) -> None:
    """A long file's windows queue round after round; a new request is served in the current round, so only that
    round counts toward its wait: six windows of one request queued (rounds 0-5, 6 s at 1 s a batch of one) leave
    room for a new request within a 2.5-s budget; six single-item requests (all in round 0) do not."""
    settings = {"max_batch_size": 1, "max_queue_wait_s": 2.5, "max_queue_size": 100, "cache_entries": 0}
    async with serve(model=str(sensevoice_dir), **settings) as (app, _):
        engine, backend = app.state.asr.engine, app.state.asr.backend
        engine.batch_cost = BatchCost(initial_s=1.0)
        device_free = threading.Event()
        blocker = asyncio.create_task(engine.run_on_device(device_free.wait, 30))
        window = backend.prepare(np.zeros(16000, dtype=np.float32))
        long_request = _Request()
        windows = [engine.submit(window, DecodeOptions(), long_request) for _ in range(6)]
        engine.ticket().admit().release()  # admitted: 1 window of the current round ahead (+ the batch forming)
        others = [engine.submit(window, DecodeOptions(), _Request()) for _ in range(6)]
        with pytest.raises(QueueFull):
            engine.ticket().admit()  # six requests in the current round ahead of it: past the budget
        for item in windows + others:
            item.future.cancel()
        device_free.set()
        await blocker


async def test_queue_wait_budget_ignores_uploads_still_in_progress(
    speech_files: dict[str, Path], sensevoice_dir: Path
) -> None:
    """Uploads admitted but not complete (slow or stalled clients) hold slots of max_queue_size but no device time:
    they do not count toward the expected wait, so stalled uploads cannot make the budget refuse everyone."""
    settings = {"max_batch_size": 1, "max_queue_wait_s": 0.5, "max_queue_size": 100, "cache_entries": 0}
    async with serve(model=str(sensevoice_dir), **settings) as (app, client):
        engine = app.state.asr.engine
        engine.batch_cost = BatchCost(initial_s=1.0)
        stalled = [engine.ticket().admit() for _ in range(20)]  # what 20 stalled uploads hold: admitted, not arrived
        r = await transcribe(client, speech_files["digits_a.wav"])
        for ticket in stalled:
            ticket.release()
    assert r.status_code == 200, r.text


async def test_request_timeout_is_504_and_drops_its_queued_items(
    sensevoice_dir: Path, speech_files: dict[str, Path]
) -> None:
    """The inference thread is held busy (deterministically, no race with the clock): the request's items wait in
    the queue past the timeout → 504; once the device is free the batcher skips the abandoned items."""
    settings = {"max_batch_size": 1, "request_timeout_s": 0.5, "segment_s": 2, "segment_overlap_s": 0,
                "segmenter": "windows"}  # fmt: skip
    async with serve(model=str(sensevoice_dir), **settings) as (app, client):
        engine = app.state.asr.engine
        before = metric(await metric_samples(client), "asr_batch_size_count")
        device_free = threading.Event()
        blocker = asyncio.create_task(engine.run_on_device(device_free.wait, 30))
        r = await transcribe(client, speech_files["longer_f.wav"])  # 7.9 s: 4 windows of 2 s
        engine.queue.drop_abandoned()
        queued_after_timeout = len(engine.queue)
        device_free.set()
        await blocker
        ok = await transcribe(client, speech_files["digits_a.wav"])  # the server is free again
        engine.queue.drop_abandoned()
        depth_after = len(engine.queue)
        samples = await metric_samples(client)
    assert r.status_code == 504 and r.json()["error"]["code"] == "timeout"
    assert queued_after_timeout == 0  # its queued windows were abandoned with the request
    assert ok.status_code == 200 and depth_after == 0
    # the one window already handed to the device, then the second request: the 3 other windows never ran
    assert metric(samples, "asr_batch_size_count") - before == 2


async def test_disconnected_client_frees_its_slot(sensevoice_dir: Path, speech_files: dict[str, Path]) -> None:
    """Drive the ASGI app directly: the client sends its upload, then goes away before the answer."""
    long_audio = _long_wav(speech_files, 120)
    boundary = "XyZ"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n'
            "Content-Type: audio/wav\r\n\r\n"
        ).encode()
        + long_audio
        + f"\r\n--{boundary}--\r\n".encode()
    )
    async with serve(
        model=str(sensevoice_dir), max_batch_size=1, segment_s=1, segment_overlap_s=0, segmenter="windows"
    ) as (app, client):
        engine = app.state.asr.engine
        sent: list[dict[str, Any]] = []
        disconnect = asyncio.Event()
        messages = [{"type": "http.request", "body": body, "more_body": False}]

        async def receive() -> dict[str, Any]:
            if messages:
                return messages.pop(0)
            await disconnect.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        scope = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
            "scheme": "http", "path": "/v1/audio/transcriptions", "raw_path": b"/v1/audio/transcriptions",
            "query_string": b"", "root_path": "", "client": ("127.0.0.1", 5000), "server": ("testserver", 80),
            "headers": [(b"content-type", f"multipart/form-data; boundary={boundary}".encode()),
                        (b"content-length", str(len(body)).encode()), (b"host", b"testserver")],
        }  # fmt: skip
        call = asyncio.create_task(app(scope, receive, send))
        async with asyncio.timeout(30):
            while len(engine.queue) == 0:  # its windows are queued...
                await asyncio.sleep(0.01)
        disconnect.set()  # ...and the client hangs up
        async with asyncio.timeout(30):
            await call
        engine.queue.drop_abandoned()
        depth = len(engine.queue)
        samples = await metric_samples(client)
        ok = await transcribe(client, speech_files["digits_a.wav"])
    assert depth == 0
    assert sent[0]["status"] == 499
    assert metric(samples, "asr_requests_total", code="499") == 1
    assert ok.status_code == 200


async def test_corrupt_file_in_a_batch_fails_alone(sensevoice_dir: Path, speech_files: dict[str, Path]) -> None:
    good = ["digits_a.wav", "digits_b.wav", "command_c.wav", "sentence_d.wav"]
    async with serve(model=str(sensevoice_dir), max_batch_size=4, max_wait_ms=1500, cache_entries=0) as (_, client):
        before = await metric_samples(client)
        responses = await asyncio.gather(
            transcribe(client, b"RIFF\x10\x00\x00\x00WAVEjunkjunkjunk"),
            *(transcribe(client, speech_files[n]) for n in good),
            transcribe(client, b"\x00" * 5000),
        )
        after = await metric_samples(client)
    bad_a, *goods, bad_b = responses
    assert bad_a.status_code == 400 and bad_a.json()["error"]["code"] == "invalid_audio"
    assert bad_b.status_code in (400, 415)
    assert [r.status_code for r in goods] == [200] * 4 and all(r.json()["text"] for r in goods)
    # the four good files still ran together
    assert metric(after, "asr_batch_size_count") - metric(before, "asr_batch_size_count") == 1
    assert metric(after, "asr_batch_size_sum") - metric(before, "asr_batch_size_sum") == 4


async def test_exception_in_batch_forward_fails_only_the_culprit(sensevoice_dir: Path) -> None:
    """An item whose features break the forward pass (wrong feature width) is batched with good items: the batch
    raises, every item is retried alone, and only the culprit gets the error."""
    async with serve(model=str(sensevoice_dir), max_batch_size=4, max_wait_ms=1000) as (app, client):
        state = app.state.asr
        backend, engine = state.backend, state.engine
        rng = np.random.default_rng(0)
        good = [backend.prepare((rng.standard_normal(16000 * s) * 0.1).astype(np.float32)) for s in (1, 2, 3)]
        bad = Prepared(torch.zeros(50, 80), 50, 0.5)  # 80-dim frames: the encoder expects 560
        items = [engine.submit(p, DecodeOptions()) for p in (good[0], bad, good[1], good[2])]
        outcomes = await asyncio.gather(*(it.future for it in items), return_exceptions=True)
        alone = [await engine.submit(p, DecodeOptions()).future for p in good]
        retries = metric(await metric_samples(client), "asr_batch_retries_total")
    assert isinstance(outcomes[1], Exception) and "failed on this audio" in str(outcomes[1])
    assert [o.text for o in (outcomes[0], outcomes[2], outcomes[3])] == [a.text for a in alone]
    assert retries == 1


async def test_metrics_endpoint_exports_every_server_metric(
    sensevoice_dir: Path, speech_files: dict[str, Path]
) -> None:
    from asr_inference.metrics import metric_names

    async with serve(model=str(sensevoice_dir), cache_entries=8) as (_, client):
        await transcribe(client, speech_files["digits_a.wav"])
        await transcribe(client, speech_files["digits_a.wav"])
        samples = await metric_samples(client)
        text = (await client.get("/metrics")).text
    exported = {name for name, _ in samples}
    expected = {n for n in metric_names() if not n.startswith("asr_gpu_")}  # GPU gauges stay 0 on CPU but exist
    assert expected <= exported | {n for n in metric_names() if n.endswith("_created")}
    for stage in ("decode", "prepare", "features", "inference", "postprocess"):
        assert metric(samples, "asr_stage_duration_seconds_count", stage=stage) >= 1
    inference_cpu = metric(samples, "asr_stage_cpu_seconds_total", stage="inference")
    assert inference_cpu >= metric(samples, "asr_stage_cpu_seconds_total", stage="features") > 0
    assert metric(samples, "asr_requests_total", code="200") == 2
    assert metric(samples, "asr_cache_hits_total") == 1 and metric(samples, "asr_cache_misses_total") == 1
    assert metric(samples, "asr_audio_seconds_total") > 0
    assert "asr_queue_depth 0.0" in text and "asr_inflight_requests 0.0" in text
    json.dumps(sorted(exported))  # names are plain strings
