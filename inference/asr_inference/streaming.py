"""`stream=true` on /v1/audio/transcriptions: OpenAI's server-sent events.

`transcript.text.delta` per segment as soon as it and every segment before it are done (in timeline order), then
one `transcript.text.done` with the whole text and usage. The upload is admitted, decoded and cut before the status
line goes out, so what a plain request refuses (429, 413, 415, 400) is refused the same way; a failure after the
stream started (the status line is
already 200) ends it with an `error` event carrying the usual error envelope, which the `openai` client raises
as `APIError`; the stream never stays open without work behind it (the request timeout bounds it too).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any, BinaryIO

from fastapi.responses import Response, StreamingResponse

from .backends import DecodeOptions
from .chunking import Chunking
from .engine import Engine
from .errors import ASRError, RequestTimeout
from .formats import Segment, Transcript
from .pipeline import Transcriber

log = logging.getLogger("asr_inference.streaming")
CLIENT_CLOSED = 499  # nginx's code for "client closed the request"


def _event(body: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(body, ensure_ascii=False)}\n\n".encode()


def _error_event(exc: BaseException) -> bytes:
    if isinstance(exc, ASRError):
        return _event({"type": "error", **exc.body()})
    log.error("stream failed: %s", exc, exc_info=exc)
    message = f"transcription failed: {type(exc).__name__}"
    return _event({"type": "error", "error": {"message": message, "type": "server_error", "code": "internal_error"}})


def _done_event(transcript: Transcript) -> bytes:
    usage = {"type": "duration", "seconds": math.ceil(transcript.duration)}
    return _event({"type": "transcript.text.done", "text": transcript.text, "logprobs": None, "usage": usage})


async def sse_response(
    transcriber: Transcriber,
    engine: Engine,
    upload: BinaryIO,
    options: DecodeOptions,
    chunking: Chunking,
    ctx: dict[str, Any],
    client_gone: Callable[[], Coroutine[Any, Any, None]],
) -> Response:
    """Admission, decoding and the cut happen before the 200 goes out: a full server still answers a plain 429,
    an upload that is not audio its 415, one too long its 413. The stream starts once the first item is queued;
    only what fails after that (or the request timeout) arrives as an `error` event. A client that leaves before
    gets 499, its work cancelled, as a plain request."""
    ticket = ctx.get("ticket") or engine.ticket().admit()  # admitted by the upload guard, before the parse
    deadline = ctx["t0"] + transcriber.settings.request_timeout_s
    segments: asyncio.Queue[Segment] = asyncio.Queue()
    queued = asyncio.Event()

    def on_queued() -> None:
        ticket.release()
        queued.set()

    work = asyncio.create_task(
        transcriber.transcribe(upload, options, on_queued=on_queued, chunking=chunking, on_segment=segments.put_nowait)
    )
    outcome = "failed"  # until `_until_queued` says otherwise (it raises what failed before the stream)
    try:
        outcome = await _until_queued(work, queued, client_gone, deadline - time.perf_counter())
    finally:
        if outcome != "started":
            ticket.release()
            work.cancel()  # its queued items are dropped
            with contextlib.suppress(BaseException):
                await work
    limit_s = transcriber.settings.request_timeout_s
    if outcome == "timeout":
        raise RequestTimeout(f"transcription did not finish within {limit_s:g} s")
    if outcome == "gone":
        ctx["override_status"] = CLIENT_CLOSED
        return Response(status_code=CLIENT_CLOSED)
    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    stream = _events(engine, work, segments, ticket.release, deadline, limit_s, ctx)
    return StreamingResponse(stream, media_type="text/event-stream", headers=headers)


async def _until_queued(
    work: asyncio.Task[tuple[Transcript, bool]],
    queued: asyncio.Event,
    client_gone: Callable[[], Coroutine[Any, Any, None]],
    budget_s: float,
) -> str:
    """Waits until the work has queued its first item or ended ("started"; raising its error: the route's error
    handler makes it a 4xx), the client left ("gone"), or the request's time ran out ("timeout")."""
    started = asyncio.create_task(queued.wait())
    watcher = asyncio.create_task(client_gone())
    try:
        done, _ = await asyncio.wait(
            {work, started, watcher}, timeout=max(budget_s, 0.001), return_when="FIRST_COMPLETED"
        )
    finally:
        started.cancel()
        watcher.cancel()
    if work.done():
        work.result()  # raises what failed before the stream could start
    if work in done or started in done:
        return "started"
    return "gone" if watcher in done else "timeout"


async def _events(
    engine: Engine,
    work: asyncio.Task[tuple[Transcript, bool]],
    segments: asyncio.Queue[Segment],
    release: Callable[[], None],
    deadline: float,
    limit_s: float,
    ctx: dict[str, Any],
) -> AsyncIterator[bytes]:
    sent = 0
    active = engine.metrics.active_streams.labels(kind="sse")
    active.inc()
    try:
        async with asyncio.timeout(max(deadline - time.perf_counter(), 0.001)):
            while not (work.done() and segments.empty()):
                getter = asyncio.create_task(segments.get())
                await asyncio.wait({getter, work}, return_when=asyncio.FIRST_COMPLETED)
                if not getter.done():
                    getter.cancel()
                    continue
                segment = getter.result()
                if segment.text:
                    delta = (" " if sent else "") + segment.text
                    sent += 1
                    yield _event({"type": "transcript.text.delta", "delta": delta, "logprobs": None})
        transcript, cached = work.result()
        ctx.update(audio_s=transcript.duration, batch_size=transcript.max_batch_size, cache=cached)
        yield _done_event(transcript)
    except TimeoutError:
        yield _error_event(RequestTimeout(f"transcription did not finish within {limit_s:g} s"))
    except Exception as exc:
        yield _error_event(exc)
    finally:
        active.dec()
        release()
        work.cancel()  # a client gone mid-stream: its queued items are dropped
        with contextlib.suppress(BaseException):
            await work
