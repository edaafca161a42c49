"""`stream=true` on /v1/audio/transcriptions, read by the official `openai` client (its SSE parser)."""

from __future__ import annotations

import asyncio
import io
import json
import time
from typing import Any

import httpx
import long_speech
import openai
import pytest
from serving import serve, transcribe


def _client(app: Any) -> openai.AsyncOpenAI:
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver/v1", timeout=120)
    return openai.AsyncOpenAI(api_key="unused", base_url="http://testserver/v1", http_client=http, max_retries=0)


async def test_openai_client_iterates_deltas_in_order_then_done() -> None:
    audio = long_speech.build(clips=6)
    async with serve(model=None, device="cpu", ncpu=1, segment_s=6, cache_entries=0) as (app, client):
        plain = (await transcribe(client, audio.wav(), response_format="verbose_json")).json()
        events = []
        stream = await _client(app).audio.transcriptions.create(
            model=app.state.asr.model_name, file=("long.wav", audio.wav()), stream=True
        )
        async for event in stream:
            events.append(event)
    types = [e.type for e in events]
    assert types[-1] == "transcript.text.done" and set(types[:-1]) == {"transcript.text.delta"}
    deltas = [e.delta for e in events[:-1]]
    # one delta per non-empty segment, in timeline order, adding up to the final text = the non-streamed text
    assert deltas == [(" " if k else "") + s["text"] for k, s in enumerate(s for s in plain["segments"] if s["text"])]
    assert len(deltas) > 1
    assert "".join(deltas) == events[-1].text == plain["text"]
    assert events[-1].usage is not None and events[-1].usage.seconds >= int(audio.duration_s)


async def test_failure_mid_stream_ends_with_an_error_event() -> None:
    """The model fails on every item after the stream started: the client gets an `error` event (raised by the
    openai client as APIError) and the stream ends."""
    audio = long_speech.build(clips=4)
    async with serve(model=None, device="cpu", ncpu=1, segment_s=5, cache_entries=0) as (app, client):
        backend = app.state.asr.backend

        def broken(*_: Any, **__: Any) -> Any:
            raise RuntimeError("device lost")

        backend.transcribe_batch = broken
        raw = await client.post(
            "/v1/audio/transcriptions", files={"file": ("a.wav", audio.wav())}, data={"stream": "true"}
        )
        with pytest.raises(openai.APIError, match="model failed"):
            stream = await _client(app).audio.transcriptions.create(
                model=app.state.asr.model_name, file=("a.wav", audio.wav()), stream=True
            )
            async for _ in stream:
                pass
    assert raw.status_code == 200 and raw.headers["content-type"].startswith("text/event-stream")
    last = raw.text.strip().split("\n\n")[-1]
    body = json.loads(last.removeprefix("data: "))
    assert (
        body["type"] == "error"
        and body["error"]["type"] == "server_error"
        and "device lost" in body["error"]["message"]
    )


async def test_over_a_socket_the_first_delta_arrives_before_the_last_segment_is_decoded() -> None:
    """A real uvicorn server and socket (the in-process transport waits for the whole body, so it cannot tell
    streaming from buffering): the last segment's forward waits, on the inference thread, until the client has read
    a delta. A server that buffered the response would never send one first: that wait would time out. (Not the
    second forward: windows are queued as their features are ready, so the first forward may be window 2, whose
    delta waits for window 1; window 1 is among the first two, as at most two windows of a request are in flight.)"""
    import threading

    from asr_inference.segments import plan_windows
    from serving import serve_http

    audio = long_speech.build(clips=6)
    settings = {"segmenter": "windows", "segment_s": 3, "segment_overlap_s": 0, "max_batch_size": 1}
    async with serve_http(model=None, device="cpu", ncpu=1, cache_entries=0, **settings) as (app, base):
        backend = app.state.asr.backend
        first_delta_read, forwards, timed_out = threading.Event(), [0], []
        forward = backend.transcribe_batch

        windows = len(plan_windows(len(audio.samples) / 16000, 3, 0))

        def the_last_waits_for_a_delta(prepared: Any, options: Any) -> Any:
            forwards[0] += 1
            if forwards[0] == windows:
                timed_out.append(not first_delta_read.wait(30))
            return forward(prepared, options)

        backend.transcribe_batch = the_last_waits_for_a_delta
        events = []
        async with httpx.AsyncClient(base_url=base, timeout=120) as client:
            form = {"stream": "true"}
            files = {"file": ("long.wav", audio.wav())}
            async with client.stream("POST", "/v1/audio/transcriptions", files=files, data=form) as response:
                async for line in response.aiter_lines():
                    if line.startswith("data: "):
                        events.append(json.loads(line[6:]))
                        if events[-1]["type"] == "transcript.text.delta":
                            first_delta_read.set()
    assert forwards[0] == windows > 2 and timed_out == [False]  # the last segment waited, and saw the delta in time
    assert events[0]["type"] == "transcript.text.delta" and events[-1]["type"] == "transcript.text.done"


class _Hanging:
    """A transcriber whose decode never queues anything: records being cancelled."""

    def __init__(self) -> None:
        from asr_inference.config import Settings

        self.settings = Settings(model=None, device="cpu")
        self.cancelled = asyncio.Event()

    async def transcribe(self, *_: Any, **__: Any) -> Any:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled.set()
            raise


class _Ticket:
    def __init__(self) -> None:
        self.released = 0

    def release(self) -> None:
        self.released += 1


async def test_a_client_gone_before_the_stream_starts_gets_499_and_its_work_is_cancelled() -> None:
    from asr_inference import streaming
    from asr_inference.backends import DecodeOptions

    async def gone_now() -> None:
        return None

    transcriber, ticket = _Hanging(), _Ticket()
    ctx: dict[str, Any] = {"ticket": ticket, "t0": time.perf_counter()}
    args = (transcriber, None, io.BytesIO(b""), DecodeOptions(), None, ctx)
    response = await streaming.sse_response(*args, gone_now)  # type: ignore[arg-type]
    assert response.status_code == 499 and ctx["override_status"] == 499
    assert transcriber.cancelled.is_set() and ticket.released >= 1


async def test_a_decode_past_the_request_timeout_is_a_504_not_a_stream() -> None:
    from asr_inference import streaming
    from asr_inference.backends import DecodeOptions
    from asr_inference.errors import RequestTimeout

    async def never_gone() -> None:
        await asyncio.Event().wait()

    transcriber, ticket = _Hanging(), _Ticket()
    ctx: dict[str, Any] = {"ticket": ticket, "t0": time.perf_counter() - transcriber.settings.request_timeout_s}
    args = (transcriber, None, io.BytesIO(b""), DecodeOptions(), None, ctx)
    with pytest.raises(RequestTimeout):
        await streaming.sse_response(*args, never_gone)  # type: ignore[arg-type]
    assert transcriber.cancelled.is_set() and ticket.released >= 1
