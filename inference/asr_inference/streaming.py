"""`stream=true` on /v1/audio/transcriptions: OpenAI's server-sent events.

`transcript.text.delta` per segment as soon as it and every segment before it are done (in timeline order), then
one `transcript.text.done` with the whole text and usage. A failure after the stream started (the status line is
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
from collections.abc import AsyncIterator
from typing import Any, BinaryIO

from fastapi.responses import StreamingResponse

from .backends import DecodeOptions
from .chunking import Chunking
from .engine import Engine
from .errors import ASRError, RequestTimeout
from .formats import Segment, Transcript
from .pipeline import Transcriber

log = logging.getLogger("asr_inference.streaming")


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


def sse_response(
    transcriber: Transcriber,
    engine: Engine,
    upload: BinaryIO,
    options: DecodeOptions,
    chunking: Chunking,
    ctx: dict[str, Any],
) -> StreamingResponse:
    """Admission happens here, before the 200 goes out: a full server still answers a plain 429."""
    ticket = ctx.get("ticket") or engine.ticket().admit()  # admitted by the upload guard, before the parse
    budget_s = transcriber.settings.request_timeout_s - (time.perf_counter() - ctx["t0"])

    async def events() -> AsyncIterator[bytes]:
        segments: asyncio.Queue[Segment] = asyncio.Queue()
        work = asyncio.create_task(
            transcriber.transcribe(
                upload, options, on_queued=ticket.release, chunking=chunking, on_segment=segments.put_nowait
            )
        )
        sent = 0
        active = engine.metrics.active_streams.labels(kind="sse")
        active.inc()
        try:
            async with asyncio.timeout(max(budget_s, 0.001)):
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
            limit = transcriber.settings.request_timeout_s
            yield _error_event(RequestTimeout(f"transcription did not finish within {limit:g} s"))
        except Exception as exc:
            yield _error_event(exc)
        finally:
            active.dec()
            ticket.release()
            work.cancel()  # a client gone mid-stream: its queued items are dropped
            with contextlib.suppress(BaseException):
                await work

    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(events(), media_type="text/event-stream", headers=headers)
