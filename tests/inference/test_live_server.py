"""Behaviour that needs a real HTTP server (uvicorn over TCP, `asr-serve`'s config): clients that hang up, the
autoscaling signal seen on an idle pod."""

from __future__ import annotations

import asyncio
import tempfile
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest
from serving import host_port, metric, metric_samples, multipart_file, request_head, serve_http


async def _until(predicate, timeout_s: float = 60.0) -> None:  # type: ignore[no-untyped-def]
    async with asyncio.timeout(timeout_s):  # bounds a hang only
        while not predicate():
            await asyncio.sleep(0.01)


async def test_queue_depth_is_live_after_clients_disconnect_mid_inference(
    sensevoice_dir: Path, speech_files: dict[str, Path]
) -> None:
    """Four clients queue windows while the device is held busy, then hang up. Once the pod is idle again,
    `asr_queue_depth` (what KEDA/HPA scale on) must read 0, not the depth it had before they left."""
    body = multipart_file(speech_files["longer_f.wav"].read_bytes())  # 8 windows of 1 s
    settings = {"max_batch_size": 1, "segment_s": 1, "segment_overlap_s": 0, "cache_entries": 0}
    async with serve_http(model=str(sensevoice_dir), **settings) as (app, base):
        state = app.state.asr
        engine = state.engine
        device_free = threading.Event()
        blocker = asyncio.create_task(engine.run_on_device(device_free.wait, 60))
        writers = []
        for _ in range(4):
            _, writer = await asyncio.open_connection(*host_port(base))
            writer.write(request_head(len(body)) + body)
            await writer.drain()
            writers.append(writer)
        await _until(lambda: len(engine.queue) >= 6)
        async with httpx.AsyncClient(base_url=base, timeout=30) as client:
            busy = await metric_samples(client)
            for writer in writers:  # the clients hang up mid-inference
                writer.close()
            await _until(lambda: state.metrics.registry.get_sample_value("asr_inflight_requests") == 0)
            device_free.set()
            await blocker
            await _until(lambda: not engine._busy and len(engine.queue) == 0)  # the batcher skipped them all
            idle = await metric_samples(client)
            assert (await client.get("/healthz")).status_code == 200
    assert metric(busy, "asr_queue_depth") >= 6
    assert metric(idle, "asr_requests_total", code="499") == 4
    assert metric(idle, "asr_queue_depth") == 0


async def test_client_hanging_up_during_an_ffmpeg_decode_leaves_no_temp_file(
    speech_files: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The decode is held inside ffmpeg's run while the client hangs up (499); once it finishes, for no one, the
    memory-mapped output it produced must be gone — and the process' temp directory must go when it exits."""
    from asr_inference import audio, tempfiles

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    in_ffmpeg, release = threading.Event(), threading.Event()
    run_capped = audio._run_capped

    def held(cmd: list[str], timeout_s: float) -> Any:
        done = run_capped(cmd, timeout_s)  # the output file is written ...
        in_ffmpeg.set()
        assert release.wait(60)  # ... and the decode returns only once the client has gone
        return done

    monkeypatch.setattr(audio, "_run_capped", held)
    body = multipart_file(speech_files["digits_a.m4a"].read_bytes())  # m4a: decoded by ffmpeg
    async with serve_http(cache_entries=0) as (app, base):
        _, writer = await asyncio.open_connection(*host_port(base))
        writer.write(request_head(len(body)) + body)
        await writer.drain()
        await _until(in_ffmpeg.is_set)
        assert [p.name for p in tmp_path.rglob("*.f32")], "ffmpeg wrote no output to hold"
        writer.close()
        metrics = app.state.asr.metrics.registry
        await _until(lambda: metrics.get_sample_value("asr_requests_total", {"code": "499"}) == 1)
        release.set()
        await _until(lambda: not [p for p in tmp_path.rglob("*") if p.is_file()])
        ours = tempfiles.process_temp_dir()
    assert Path(ours).parent == tmp_path
