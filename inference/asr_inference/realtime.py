"""`/v1/realtime?intent=transcription`: OpenAI's Realtime transcription protocol over a WebSocket.

Client events: `transcription_session.update` / `session.update`, `input_audio_buffer.append` (base64 pcm16 at
24 or 16 kHz), `input_audio_buffer.commit`, `input_audio_buffer.clear`. Server events: `*.created/updated`,
`input_audio_buffer.speech_started/stopped/committed/cleared`,
`conversation.item.input_audio_transcription.delta/completed`, `error`.

Every finished utterance goes through `Transcriber.transcribe_samples`, i.e. the same engine queue as uploads, so
utterances of many sessions (and uploads) share batches. Per session: at most `stream_max_pending` utterances
await text (then the socket is not read: TCP backpressure), the audio buffer is bounded (realtime_session.py),
a message larger than `stream_max_message_kb` or one that is not a valid event closes that session with an
`error` event, and silence on the socket for `stream_idle_timeout_s` closes it after its open utterance.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import logging
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from starlette.websockets import WebSocket, WebSocketDisconnect

from .backends import DecodeOptions
from .chunking import default_vad_params
from .config import Settings
from .errors import ASRError
from .metrics import Metrics
from .pipeline import Transcriber
from .realtime_session import AudioTimeline, SessionConfig, Utterance, apply_update
from .vad import FRAME, StreamState

log = logging.getLogger("asr_inference.realtime")
KEY_SUBPROTOCOL = "openai-insecure-api-key."  # how browsers pass the key (no headers on a WebSocket there)


class SessionClosed(Exception):
    """Ends a session: an error event (if `code_name`) and a close frame with `close_code`."""

    def __init__(self, close_code: int, message: str, code_name: str | None = "invalid_request_error") -> None:
        super().__init__(message)
        self.close_code, self.message, self.code_name = close_code, message, code_name


class RealtimeHub:
    """Sessions of one app: the limit, the metrics, what every session shares."""

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.sessions = 0

    async def handle(
        self, ws: WebSocket, transcriber: Transcriber | None, model_name: str, authorized: Callable[[], bool]
    ) -> None:
        offered = [p for p in ws.scope.get("subprotocols", []) if not p.startswith(KEY_SUBPROTOCOL)]
        await ws.accept(subprotocol="realtime" if "realtime" in offered else None)
        session: RealtimeSession | None = None
        try:
            if not authorized():
                raise SessionClosed(1008, "missing or invalid API key", "invalid_api_key")
            if transcriber is None:
                raise SessionClosed(1013, "model is still loading; retry shortly", "not_ready")
            if self.sessions >= self.settings.stream_max_sessions:
                self.metrics.streams_rejected_total.inc()
                raise SessionClosed(1013, f"server has {self.sessions} realtime sessions, its maximum", "server_busy")
            self.sessions += 1
            self.metrics.active_streams.labels(kind="realtime").inc()
            session = RealtimeSession(self, ws, transcriber, model_name)
            await session.run()
        except SessionClosed as closed:
            if closed.code_name is not None:
                with contextlib.suppress(Exception):
                    await ws.send_json(_error(closed.message, closed.code_name))
            with contextlib.suppress(Exception):
                await ws.close(closed.close_code, closed.message[:120])
        except WebSocketDisconnect:
            pass
        finally:
            if session is not None:
                await session.abandon()
                self.sessions -= 1
                self.metrics.active_streams.labels(kind="realtime").dec()


def _error(message: str, code: str, kind: str = "invalid_request_error") -> dict[str, Any]:
    return {"type": "error", "error": {"type": kind, "code": code, "message": message, "param": None}}


class RealtimeSession:
    def __init__(self, hub: RealtimeHub, ws: WebSocket, transcriber: Transcriber, model_name: str) -> None:
        self.hub, self.ws, self.transcriber, self.model_name = hub, ws, transcriber, model_name
        self.settings = hub.settings
        self.base_vad = default_vad_params(self.settings)
        self.config = SessionConfig(turn_detection=self.base_vad)
        self.timeline = AudioTimeline(self.settings.segment_s)
        self.vad_state = StreamState()
        self.scored = 0  # absolute 16 kHz sample up to which VAD has run
        self.resampler: Any = None
        self.send_lock = asyncio.Lock()
        self.pending = asyncio.Semaphore(self.settings.stream_max_pending)
        self.tasks: list[asyncio.Task[None]] = []
        self.last_item: str | None = None
        self.update_name = "session"

    async def send(self, event: dict[str, Any]) -> None:
        async with self.send_lock:
            await self.ws.send_json(event)

    async def run(self) -> None:
        await self.send({"type": "transcription_session.created", "session": self.config.describe(self.model_name)})
        limit = self.settings.stream_max_message_kb * 1024
        while True:
            try:
                message = await asyncio.wait_for(self.ws.receive(), self.settings.stream_idle_timeout_s)
            except TimeoutError:
                await self.finish()
                raise SessionClosed(1000, "idle timeout", "idle_timeout") from None
            if message["type"] == "websocket.disconnect":
                raise WebSocketDisconnect(message.get("code", 1000))
            text = message.get("text")
            if text is None:
                raise SessionClosed(1003, "binary frames are not supported; send JSON events", "invalid_frame")
            if len(text) > limit:
                raise SessionClosed(1009, f"message larger than {limit // 1024} KiB", "message_too_large")
            try:
                event = json.loads(text)
            except json.JSONDecodeError:
                raise SessionClosed(1007, "message is not valid JSON", "invalid_json") from None
            if not isinstance(event, dict):
                raise SessionClosed(1007, "an event must be a JSON object", "invalid_event")
            await self.dispatch(event)

    async def dispatch(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        try:
            if kind in ("transcription_session.update", "session.update"):
                self.config = apply_update(self.config, event.get("session") or {}, self.base_vad)
                self.update_name = kind.split(".")[0]
                self.resampler = None
                await self.send({"type": f"{self.update_name}.updated",
                                 "session": self.config.describe(self.model_name)})  # fmt: skip
            elif kind == "input_audio_buffer.append":
                await self.append(event.get("audio"))
            elif kind == "input_audio_buffer.commit":
                await self.commit()
            elif kind == "input_audio_buffer.clear":
                self.timeline.clear()
                await self.send({"type": "input_audio_buffer.cleared"})
            else:
                await self.send(_error(f"unknown event type {kind!r}", "unknown_event"))
        except ASRError as exc:
            await self.send(_error(exc.message, exc.code))

    def _decode(self, audio: object) -> np.ndarray:
        if not isinstance(audio, str):
            raise SessionClosed(1007, "input_audio_buffer.append needs `audio`: base64 pcm16", "invalid_audio")
        try:
            raw = base64.b64decode(audio, validate=True)
        except (binascii.Error, ValueError):
            raise SessionClosed(1007, "audio is not valid base64", "invalid_audio") from None
        if len(raw) % 2:
            raise SessionClosed(1007, "pcm16 audio must have an even number of bytes", "invalid_audio")
        samples = np.frombuffer(raw, "<i2").astype(np.float32) / 32768.0
        if self.config.rate == 16000:
            return samples
        if self.resampler is None:
            import soxr

            self.resampler = soxr.ResampleStream(self.config.rate, 16000, 1, dtype="float32")
        return np.asarray(self.resampler.resample_chunk(samples), np.float32)

    async def append(self, audio: object) -> None:
        samples = self._decode(audio)
        self.timeline.append(samples)
        self.hub.metrics.stream_audio_seconds_total.inc(len(samples) / 16000)
        vad = self.config.turn_detection
        if vad is None or self.transcriber.vad is None:
            if self.timeline.over_limit():
                await self.commit()
            return
        whole = (self.timeline.total - self.scored) // FRAME * FRAME
        if whole == 0:
            return
        frames = self.timeline._cut(self.scored, self.scored + whole)
        probs = await self.transcriber._in_pool(self.transcriber.vad.stream, self.vad_state, frames)
        happened = self.timeline.detect(probs, self.scored, vad)
        self.scored += whole
        for item, ms in happened.started:
            await self.send({"type": "input_audio_buffer.speech_started", "audio_start_ms": ms, "item_id": item})
        stopped = dict(happened.stopped)
        for utt in happened.utterances:
            await self.send({"type": "input_audio_buffer.speech_stopped",
                             "audio_end_ms": stopped.get(utt.item_id, utt.end_ms), "item_id": utt.item_id})  # fmt: skip
            await self.finalise(utt)

    async def commit(self) -> None:
        utt = self.timeline.commit()
        self.scored = self.timeline.total
        if utt is None:
            await self.send(_error("input audio buffer is empty", "input_audio_buffer_commit_empty"))
            return
        await self.finalise(utt)

    async def finalise(self, utt: Utterance) -> None:
        """Committed event now; text once the engine has it (in commit order). Blocks past `stream_max_pending`."""
        await self.send({"type": "input_audio_buffer.committed", "previous_item_id": self.last_item,
                         "item_id": utt.item_id})  # fmt: skip
        self.last_item = utt.item_id
        await self.pending.acquire()
        before = self.tasks[-1] if self.tasks else None
        self.tasks = [t for t in self.tasks if not t.done()]
        self.tasks.append(asyncio.create_task(self._transcribe(utt, before, time.perf_counter())))

    async def _transcribe(self, utt: Utterance, before: asyncio.Task[None] | None, t0: float) -> None:
        try:
            options = DecodeOptions(language=self.config.language, use_itn=False, prompt=self.config.prompt)
            try:
                transcript = await self.transcriber.transcribe_samples(utt.samples, options)
                text, error = transcript.text, None
            except ASRError as exc:
                text, error = "", exc
            if before is not None:
                with contextlib.suppress(BaseException):
                    await before  # completed events leave in commit order
            base = {"item_id": utt.item_id, "content_index": 0}
            if error is not None:
                await self.send({**_error(error.message, error.code, error.type),
                                 "type": "conversation.item.input_audio_transcription.failed", **base})  # fmt: skip
                return
            if text:
                await self.send({"type": "conversation.item.input_audio_transcription.delta", **base, "delta": text})
            await self.send({"type": "conversation.item.input_audio_transcription.completed", **base,
                             "transcript": text, "usage": {"type": "duration",
                                                           "seconds": round(len(utt.samples) / 16000, 3)}})  # fmt: skip
            self.hub.metrics.stream_final_latency_seconds.observe(time.perf_counter() - t0)
        finally:
            self.pending.release()

    async def finish(self) -> None:
        """Transcribe the open utterance and wait for every pending text (idle timeout, drain)."""
        if self.timeline.item_id is not None:
            utt = self.timeline.commit()
            if utt is not None:
                await self.finalise(utt)
        if self.tasks:
            await asyncio.gather(*self.tasks, return_exceptions=True)

    async def abandon(self) -> None:
        for task in self.tasks:
            task.cancel()
        if self.tasks:
            await asyncio.gather(*self.tasks, return_exceptions=True)
