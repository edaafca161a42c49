"""`/v1/realtime?intent=transcription` over a real socket (uvicorn in this process), driven by `websockets`."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import re
from typing import Any

import httpx
import long_speech
import numpy as np
import pytest
import soxr
import websockets
from realtime_client import CHUNK_S, live_server, pcm16_b64, stream_file
from requirements_check import import_or_skip
from serving import metric, metric_samples, transcribe

import_or_skip("silero_vad", "it comes with the inference extra (pip install -e '.[inference]')")


async def test_stream_at_10x_gets_turns_and_the_upload_transcript() -> None:
    audio = long_speech.build(clips=5)
    audio24 = soxr.resample(audio.samples, 16000, 24000).astype(np.float32)
    async with live_server(segment_s=30, cache_entries=0) as (app, url):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            upload = (await transcribe(client, audio.wav())).json()["text"]
            events = await stream_file(url, audio24, 24000)
            samples = await metric_samples(client)
    kinds = [e["type"] for e in events]
    assert kinds[0] == "transcription_session.created" and "session.updated" in kinds
    assert "error" not in kinds, [e for e in events if e["type"] == "error"]
    started = [e for e in events if e["type"] == "input_audio_buffer.speech_started"]
    stopped = [e for e in events if e["type"] == "input_audio_buffer.speech_stopped"]
    done = [e for e in events if e["type"] == "conversation.item.input_audio_transcription.completed"]
    assert len(started) == len(stopped) == len(done) >= 3
    assert [e["item_id"] for e in started] == [e["item_id"] for e in done]  # text comes in turn order
    for s, e in zip(started, stopped, strict=True):
        assert s["audio_start_ms"] < e["audio_end_ms"]
    streamed = " ".join(e["transcript"] for e in done)
    assert long_speech.wer(upload, streamed) <= 0.10, (upload, streamed)
    assert metric(samples, "asr_stream_final_latency_seconds_count") == len(done)
    assert metric(samples, "asr_stream_audio_seconds_total") == pytest.approx(audio.duration_s, abs=0.2)


async def test_many_sessions_share_batches_and_a_bad_session_is_closed_alone() -> None:
    sessions = 50
    clip = long_speech.build(clips=1, gap_s=(0.2, 0.3)).samples
    async with live_server(max_batch_size=16, max_wait_ms=50, stream_max_sessions=sessions + 2,
                           stream_max_message_kb=64) as (app, url):  # fmt: skip
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            before = await metric_samples(client)

            async def bad(payload: str) -> tuple[int | None, list[dict]]:
                got = []
                async with websockets.connect(url, max_size=1 << 24) as ws:
                    await ws.send(payload)
                    with pytest.raises(websockets.ConnectionClosed):
                        async with asyncio.timeout(30):
                            async for raw in ws:
                                got.append(json.loads(raw))
                    return ws.close_code, got

            results = await asyncio.gather(
                *(stream_file(url, clip, 16000, speedup=1000, turn_detection=None) for _ in range(sessions)),
                bad("{not json"),
                bad(json.dumps({"type": "input_audio_buffer.append", "audio": "A" * 70_000})),
            )
            after = await metric_samples(client)
    finals = [[e for e in r if e["type"].endswith("transcription.completed")] for r in results[:sessions]]
    assert all(len(f) == 1 and f[0]["transcript"] == finals[0][0]["transcript"] != "" for f in finals)
    batches = metric(after, "asr_batch_size_count") - metric(before, "asr_batch_size_count")
    items = metric(after, "asr_batch_size_sum") - metric(before, "asr_batch_size_sum")
    assert items == sessions and items / batches > 1  # utterances of different sessions ran in shared batches
    (garbage_code, garbage), (big_code, big) = results[sessions], results[sessions + 1]
    assert garbage_code == 1007 and garbage[-1]["type"] == "error" and garbage[-1]["error"]["code"] == "invalid_json"
    assert big_code == 1009 and big[-1]["error"]["code"] == "message_too_large"


async def test_limits_and_api_key() -> None:
    async with live_server(stream_max_sessions=1, api_key="sekret") as (_, url):
        with pytest.raises(websockets.ConnectionClosed):
            async with websockets.connect(url) as ws:
                first = json.loads(await ws.recv())
                await ws.recv()
        assert first["type"] == "error" and first["error"]["code"] == "invalid_api_key" and ws.close_code == 1008
        auth = {"Authorization": "Bearer sekret"}
        async with websockets.connect(url, additional_headers=auth) as one:
            assert json.loads(await one.recv())["type"] == "transcription_session.created"
            async with websockets.connect(url, subprotocols=["realtime", "openai-insecure-api-key.sekret"]) as two:
                busy = json.loads(await two.recv())
                with pytest.raises(websockets.ConnectionClosed):
                    await two.recv()
            assert busy["error"]["code"] == "server_busy" and two.close_code == 1013


async def _open_utterance(url: str, samples: np.ndarray) -> tuple[Any, list[dict], asyncio.Task[None]]:
    """A session without turn detection that has sent `samples` and not committed them: an open utterance."""
    ws = await websockets.connect(url, max_size=1 << 24)
    events: list[dict] = []

    async def reader() -> None:
        with contextlib.suppress(websockets.ConnectionClosed):
            async for raw in ws:
                events.append(json.loads(raw))

    reading = asyncio.create_task(reader())
    update = {"type": "session.update", "session": {"type": "transcription", "audio": {"input": {
        "format": {"type": "audio/pcm", "rate": 16000}, "turn_detection": None}}}}  # fmt: skip
    await ws.send(json.dumps(update))
    step = int(16000 * CHUNK_S)
    for a in range(0, len(samples), step):
        await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": pcm16_b64(samples[a : a + step])}))
    return ws, events, reading


async def test_a_drain_gives_the_open_utterance_its_text_then_closes_with_1012() -> None:
    """What SIGTERM runs first (asr-serve's DrainingServer; the live-process test is in test_cli_and_lifecycle):
    the open utterance is committed and transcribed before the session closes, and no new session starts."""
    clip = long_speech.build(clips=1, gap_s=(0.2, 0.3))
    async with live_server(cache_entries=0) as (app, url):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            upload = (await transcribe(client, clip.wav())).json()["text"]
            ws, events, reading = await _open_utterance(url, clip.samples)
            async with asyncio.timeout(60):  # until the server has read every append (bounds a hang only)
                while metric(await metric_samples(client), "asr_stream_audio_seconds_total") < clip.duration_s - 0.01:
                    await asyncio.sleep(0.02)
            assert not [e for e in events if e["type"].endswith("completed")]  # nothing committed it so far
            drained = await app.state.asr.realtime.drain(60)
            async with asyncio.timeout(30):
                await reading
            with pytest.raises(websockets.ConnectionClosed):
                async with websockets.connect(url) as late:
                    refused = json.loads(await late.recv())
                    await late.recv()
    assert drained and ws.close_code == 1012
    kinds = [e["type"] for e in events]
    assert kinds[-2:] == ["conversation.item.input_audio_transcription.delta",
                          "conversation.item.input_audio_transcription.completed"]  # fmt: skip
    assert (
        "error" not in kinds and events[-1]["transcript"] and long_speech.wer(upload, events[-1]["transcript"]) <= 0.1
    )
    assert refused["error"]["code"] == "server_restarting" and late.close_code == 1012


async def test_an_open_utterance_gets_partial_deltas_before_its_completed_text() -> None:
    """About 10 s of speech as one utterance (long silences only end a turn), streamed at 10x real time: several
    deltas arrive while it is still open, each new text only, and (unless the final decode revised them) they add up
    to the completed transcript."""
    speech = long_speech.build(clips=6, gap_s=(0.1, 0.2))
    assert 9 < speech.duration_s < 15
    async with live_server(cache_entries=0, stream_partial_interval_ms=500) as (app, url):
        async with websockets.connect(url, max_size=1 << 24) as ws:
            events: list[dict] = []

            async def reader() -> None:
                async for raw in ws:
                    events.append(json.loads(raw))

            reading = asyncio.create_task(reader())
            turn = {"type": "server_vad", "silence_duration_ms": 3000}  # the pauses between clips do not end it
            update = {"type": "session.update", "session": {"type": "transcription", "audio": {"input": {
                "format": {"type": "audio/pcm", "rate": 16000}, "turn_detection": turn}}}}  # fmt: skip
            await ws.send(json.dumps(update))
            step = int(16000 * CHUNK_S)
            for a in range(0, len(speech.samples), step):
                chunk = pcm16_b64(speech.samples[a : a + step])
                await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": chunk}))
                await asyncio.sleep(CHUNK_S / 10)
            await ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
            async with asyncio.timeout(60):
                while not any(e["type"].endswith("transcription.completed") for e in events):
                    await asyncio.sleep(0.05)
            reading.cancel()
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            samples = await metric_samples(client)
    kinds = [e["type"] for e in events]
    assert "error" not in kinds, events
    completed = next(e for e in events if e["type"].endswith("transcription.completed"))
    committed = kinds.index("input_audio_buffer.committed")
    deltas = [e for e in events if e["type"].endswith("transcription.delta")]
    assert {e["item_id"] for e in deltas} == {completed["item_id"]}  # one utterance
    before_commit = [e for e in events[:committed] if e["type"].endswith("transcription.delta")]
    assert len(before_commit) >= 3, kinds  # partials while the utterance was open
    assert metric(samples, "asr_stream_partials_total", outcome="sent") == len(before_commit)
    # the deltas add up to the completed transcript, unless the final decode (the whole utterance) revised what the
    # partials had settled: a later word can change an earlier one in a non-streaming model; that is counted, and
    # `completed` carries the final text
    joined = "".join(e["delta"] for e in deltas)
    revised = metric(samples, "asr_stream_partials_total", outcome="revised")
    assert completed["transcript"] and (joined == completed["transcript"]) == (revised == 0), (joined, completed)


async def test_open_streams_count_in_the_autoscaling_signal(monkeypatch: pytest.MonkeyPatch) -> None:
    """`asr_load` = queued items + each open session's audio rate: a session that sent 2 s of audio (over a window
    stretched to an hour, so the test does not race it) adds 2/3600 with nothing queued, and nothing once closed."""
    from asr_inference import realtime

    monkeypatch.setattr(realtime, "RATE_WINDOW_S", 3600.0)
    clip = np.zeros(2 * 16000, np.float32)
    async with live_server(cache_entries=0) as (app, url):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            ws, _, reading = await _open_utterance(url, clip)  # no turn detection: nothing is queued
            async with asyncio.timeout(60):
                while metric(await metric_samples(client), "asr_stream_audio_seconds_total") < 2.0:
                    await asyncio.sleep(0.02)
            streaming = await metric_samples(client)
            await ws.close()
            await reading
            async with asyncio.timeout(60):
                while metric(await metric_samples(client), "asr_active_streams", kind="realtime") > 0:
                    await asyncio.sleep(0.02)
            closed = await metric_samples(client)
    assert metric(streaming, "asr_queue_depth") == 0
    assert metric(streaming, "asr_load") == pytest.approx(2.0 / 3600)
    assert metric(closed, "asr_load") == 0


async def test_an_unsupported_language_is_refused_like_an_uploads_and_the_session_goes_on() -> None:
    async with live_server() as (app, url):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            upload = await transcribe(client, long_speech.build(clips=1).wav(), language="xx")
        async with websockets.connect(url) as ws:
            assert json.loads(await ws.recv())["type"] == "transcription_session.created"
            session = {"type": "transcription", "audio": {"input": {"transcription": {"language": "xx"}}}}
            await ws.send(json.dumps({"type": "session.update", "session": session}))
            refused = json.loads(await ws.recv())
            session["audio"]["input"]["transcription"]["language"] = "en"
            await ws.send(json.dumps({"type": "session.update", "session": session}))
            updated = json.loads(await ws.recv())
    assert upload.status_code == 400
    assert refused["type"] == "error" and refused["error"]["message"] == upload.json()["error"]["message"]
    assert updated["type"] == "session.updated"
    assert updated["session"]["input_audio_transcription"]["language"] == "en"


async def test_an_idle_session_gets_its_open_utterance_transcribed_then_closes() -> None:
    clip = long_speech.build(clips=1, gap_s=(0.2, 0.3))
    async with live_server(stream_idle_timeout_s=1.0) as (_, url):
        ws, events, reading = await _open_utterance(url, clip.samples)  # then silence on the socket
        async with asyncio.timeout(60):
            await reading
    kinds = [e["type"] for e in events]
    assert kinds[-3:] == ["conversation.item.input_audio_transcription.delta",
                          "conversation.item.input_audio_transcription.completed", "error"], kinds  # fmt: skip
    assert events[-2]["transcript"] and events[-1]["error"]["code"] == "idle_timeout" and ws.close_code == 1000


async def test_a_session_goes_through_the_admission_an_upload_gets() -> None:
    """With the queue full (the device held, one item waiting, max_queue_size 1), an upload gets 429 and a new
    realtime session is refused the same way: its error carries the upload's message, then 1013 (try again)."""
    import threading

    from asr_inference.backends import DecodeOptions

    async with live_server(max_queue_size=1, max_batch_size=1, cache_entries=0) as (app, url):
        engine, backend = app.state.asr.engine, app.state.asr.backend
        device_free = threading.Event()
        blocker = asyncio.create_task(engine.run_on_device(device_free.wait, 30))
        silence = backend.prepare(np.zeros(16000, np.float32))
        queued = [engine.submit(silence, DecodeOptions()) for _ in range(2)]  # one runs (held), one waits
        async with asyncio.timeout(30):
            while len(engine.queue) != 1:
                await asyncio.sleep(0.01)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            upload = await transcribe(client, long_speech.build(clips=1).wav())
        with pytest.raises(websockets.ConnectionClosed):
            async with websockets.connect(url) as ws:
                refused = json.loads(await ws.recv())
                await ws.recv()
        device_free.set()
        await blocker
        await asyncio.gather(*(item.future for item in queued))
    assert upload.status_code == 429
    assert refused["error"]["code"] == "server_busy" and ws.close_code == 1013
    assert refused["error"]["message"] == upload.json()["error"]["message"]


HOSTILE_EVENTS = {
    "not json": "{not json",
    "a list": "[1, 2]",
    "no type": json.dumps({"audio": "AAAA"}),
    "unknown type": json.dumps({"type": "response.create"}),
    "audio not a string": json.dumps({"type": "input_audio_buffer.append", "audio": 42}),
    "audio not base64": json.dumps({"type": "input_audio_buffer.append", "audio": "../../etc/passwd"}),
    "odd byte count": json.dumps({"type": "input_audio_buffer.append", "audio": base64.b64encode(b"abc").decode()}),
    "empty commit": json.dumps({"type": "input_audio_buffer.commit"}),
    "a rate it cannot take": json.dumps({"type": "session.update", "session": {"input_audio_format": "g711_ulaw",
                                         "audio": {"input": {"format": {"type": "audio/pcm", "rate": 8000}}}}}),
    "a language file path": json.dumps({"type": "session.update", "session": {
        "input_audio_transcription": {"language": "/etc/passwd"}}}),
    "session not an object": json.dumps({"type": "session.update", "session": "/tmp/x"}),
}  # fmt: skip


async def test_hostile_events_get_client_errors_that_name_no_server_path() -> None:
    """Each hostile event on its own session: an `error` event in the envelope (a client error, never an internal
    one) or a clean close, and no message names a server path, the temp directory or a traceback."""
    paths = re.compile(r"(?:/[\w.-]+){2,}|\btmp\b|asr-(?:upload|audio)-|Traceback|File \"")
    async with live_server() as (_, url):
        results = {}
        for name, payload in HOSTILE_EVENTS.items():
            events: list[dict] = []
            async with websockets.connect(url) as ws:
                await ws.send(payload)
                with contextlib.suppress(TimeoutError, websockets.ConnectionClosed):
                    async with asyncio.timeout(2):
                        async for raw in ws:
                            events.append(json.loads(raw))
            results[name] = [e["error"] for e in events if e["type"] == "error"]
    problems = []
    for name, errors in results.items():
        if not errors:
            problems.append(f"{name}: no error event")
        for error in errors:
            if set(error) != {"type", "code", "message", "param"} or error["type"] == "server_error":
                problems.append(f"{name}: not a client error in the envelope: {error}")
            if paths.search(error["message"]) and "/etc/passwd" not in error["message"]:
                problems.append(f"{name}: the message names a path: {error['message']}")
    assert not problems, "\n".join(problems)
