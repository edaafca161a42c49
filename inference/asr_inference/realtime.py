"""`/v1/realtime?intent=transcription`: OpenAI's Realtime transcription protocol over a WebSocket.

Client events: `transcription_session.update` / `session.update`, `input_audio_buffer.append` (base64 pcm16 at
24 or 16 kHz), `input_audio_buffer.commit`, `input_audio_buffer.clear`. Server events: `*.created/updated`,
`input_audio_buffer.speech_started/stopped/committed/cleared`,
`conversation.item.input_audio_transcription.delta/completed`, `error`.

Every finished utterance goes through `Transcriber.transcribe_samples`, i.e. the same engine queue as uploads, so
utterances of many sessions (and uploads) share batches. While an utterance is open (server VAD), it is decoded
again every `stream_partial_interval_ms` of its audio as background work, and the text two decodes agree on goes
out as deltas (partials.py); the completed event carries the final decode's whole text. On shutdown `drain()`
commits each session's open utterance and sends its text before closing with 1012.

Per session: at most `stream_max_pending` utterances await text (then the socket is not read: TCP backpressure),
the audio buffer is bounded (realtime_session.py), a message larger than `stream_max_message_kb` or one that is
not a valid event closes that session with an `error` event, and silence on the socket for `stream_idle_timeout_s`
closes it after its open utterance.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import collections
import contextlib
import json
import logging
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from starlette.types import Message
from starlette.websockets import WebSocket, WebSocketDisconnect

from .backends import DecodeOptions
from .chunking import default_vad_params
from .config import Settings
from .errors import ASRError, QueueFull
from .metrics import Metrics
from .partials import OpenPartial
from .pipeline import Transcriber
from .realtime_session import AudioTimeline, SessionConfig, Utterance, apply_update
from .vad import FRAME, StreamState

log = logging.getLogger("asr_inference.realtime")
KEY_SUBPROTOCOL = "openai-insecure-api-key."  # how browsers pass the key (no headers on a WebSocket there)
RATE_WINDOW_S = 10.0  # a session's audio rate (its weight in asr_load) is measured over this window


class SessionClosed(Exception):
    """Ends a session: an error event (if `code_name`) and a close frame with `close_code`."""

    def __init__(self, close_code: int, message: str, code_name: str | None = "invalid_request_error") -> None:
        super().__init__(message)
        self.close_code, self.message, self.code_name = close_code, message, code_name


class RealtimeHub:
    """Sessions of one app: the limit, the metrics, what every session shares, and the drain at shutdown."""

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.sessions = 0
        self.closing = False  # draining: no new sessions
        self._open: set[RealtimeSession] = set()

    def stream_load(self) -> float:
        """The open sessions' share of `asr_load`: each one's audio rate over the last `RATE_WINDOW_S` (1.0 for a
        client sending in real time, 0 for an idle one)."""
        now = time.monotonic()
        return sum(session.audio_rate(now) for session in self._open)

    async def drain(self, timeout_s: float) -> bool:
        """Shutdown, before the server closes its sockets: refuse new sessions; each open one stops reading, gets
        the text of its open utterance and of every pending one, then closes with 1012 (restart: reconnect). True
        if every session ended within `timeout_s`."""
        self.closing = True
        for session in list(self._open):
            session.stopping.set()
        deadline = time.monotonic() + timeout_s
        while self.sessions and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        log.info("realtime sessions drained", extra={"left": self.sessions})
        return self.sessions == 0

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
            if self.closing:
                raise SessionClosed(1012, "server is restarting; connect again", "server_restarting")
            try:  # the admission an upload would get now: a session brings work too
                transcriber.engine.ticket().admit().release()
            except QueueFull as full:
                self.metrics.streams_rejected_total.inc()
                raise SessionClosed(1013, full.message, "server_busy") from None
            if self.sessions >= self.settings.stream_max_sessions:
                self.metrics.streams_rejected_total.inc()
                raise SessionClosed(1013, f"server has {self.sessions} realtime sessions, its maximum", "server_busy")
            self.sessions += 1
            self.metrics.active_streams.labels(kind="realtime").inc()
            session = RealtimeSession(self, ws, transcriber, model_name)
            self._open.add(session)
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
                self._open.discard(session)
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
        self.stopping = asyncio.Event()  # the server drains: end after the open utterance's text
        self.received: collections.deque[tuple[float, float]] = collections.deque()  # (when, audio seconds)
        self.partial: OpenPartial | None = None  # the open utterance's partial transcripts
        self.partial_every = self.settings.stream_partial_interval_ms * 16  # samples of new audio between them

    async def send(self, event: dict[str, Any]) -> None:
        async with self.send_lock:
            await self.ws.send_json(event)

    async def run(self) -> None:
        await self.send({"type": "transcription_session.created", "session": self.config.describe(self.model_name)})
        limit = self.settings.stream_max_message_kb * 1024
        while True:
            try:
                message = await self._receive()
            except TimeoutError:
                await self.finish()
                raise SessionClosed(1000, "idle timeout", "idle_timeout") from None
            if message is None:  # the server drains: no error, the texts so far are final
                await self.finish()
                raise SessionClosed(1012, "server is restarting; connect again", None)
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

    async def _receive(self) -> Message | None:
        """The next message; None once the server drains; TimeoutError after `stream_idle_timeout_s` of silence."""
        receive = asyncio.ensure_future(self.ws.receive())
        stop = asyncio.ensure_future(self.stopping.wait())
        try:
            done, _ = await asyncio.wait(
                {receive, stop}, timeout=self.settings.stream_idle_timeout_s, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            for task in (receive, stop):
                if not task.done():
                    task.cancel()
        if receive in done:
            return receive.result()
        if stop in done:
            return None
        raise TimeoutError

    async def dispatch(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        try:
            if kind in ("transcription_session.update", "session.update"):
                config = apply_update(self.config, event.get("session") or {}, self.base_vad)
                self.transcriber.check_language(config.language)  # as for uploads; refused: config unchanged
                self.config = config
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

    def audio_rate(self, now: float) -> float:
        """Audio seconds received per second over the last `RATE_WINDOW_S`."""
        self._forget_received_before(now - RATE_WINDOW_S)
        return sum(seconds for _, seconds in self.received) / RATE_WINDOW_S

    def _forget_received_before(self, when: float) -> None:
        while self.received and self.received[0][0] < when:
            self.received.popleft()

    async def append(self, audio: object) -> None:
        samples = self._decode(audio)
        self.timeline.append(samples)
        now = time.monotonic()
        self._forget_received_before(now - RATE_WINDOW_S)  # bounded without scrapes too
        self.received.append((now, len(samples) / 16000))
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
        self._maybe_start_partial()

    def _maybe_start_partial(self) -> None:
        """Start a partial decode of the open utterance once `partial_every` new samples came since the last one
        started, if that one is done (one in flight per session)."""
        item = self.timeline.item_id
        if not self.partial_every or item is None:
            return
        if self.partial is None or self.partial.item_id != item:
            self.partial = OpenPartial(item)
        partial = self.partial
        if partial.task is not None and not partial.task.done():
            return
        if self.timeline.open_samples() - partial.decoded_samples < self.partial_every:
            return
        partial.decoded_samples = self.timeline.open_samples()
        partial.task = asyncio.create_task(self._partial(partial, self.timeline.open_audio()))

    async def _partial(self, partial: OpenPartial, audio: np.ndarray) -> None:
        counter = self.hub.metrics.stream_partials_total
        options = DecodeOptions(language=self.config.language, use_itn=False, prompt=self.config.prompt)
        try:
            transcript = await self.transcriber.transcribe_samples(audio, options, background=True)
        except ASRError:  # shed under load (QueueFull) or failed: the final text comes all the same
            counter.labels(outcome="shed").inc()
            return
        if partial.closed:
            return
        delta = partial.settle(transcript.text)
        counter.labels(outcome="sent" if delta else "unchanged").inc()
        if delta:  # shielded: a commit cancelling this task must not cut a delta already counted as sent
            event = {"type": "conversation.item.input_audio_transcription.delta", "item_id": partial.item_id,
                     "content_index": 0, "delta": delta}  # fmt: skip
            await asyncio.shield(self.send(event))

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
        partial = None
        if self.partial is not None and self.partial.item_id == utt.item_id:
            partial, self.partial = self.partial, None
            partial.closed = True  # from here on only the final text: a partial decode still running is dropped
            if partial.task is not None:
                partial.task.cancel()
        await self.pending.acquire()
        before = self.tasks[-1] if self.tasks else None
        self.tasks = [t for t in self.tasks if not t.done()]
        self.tasks.append(asyncio.create_task(self._transcribe(utt, before, time.perf_counter(), partial)))

    async def _transcribe(
        self, utt: Utterance, before: asyncio.Task[None] | None, t0: float, partial: OpenPartial | None
    ) -> None:
        try:
            options = DecodeOptions(language=self.config.language, use_itn=False, prompt=self.config.prompt)
            try:
                transcript = await self.transcriber.transcribe_samples(utt.samples, options)
                text, error = transcript.text, None
            except ASRError as exc:
                text, error = "", exc
            for earlier in (before, partial.task if partial is not None else None):
                if earlier is not None:  # completed events leave in commit order, after the utterance's partials
                    with contextlib.suppress(BaseException):
                        await earlier
            base = {"item_id": utt.item_id, "content_index": 0}
            if error is not None:
                await self.send({**_error(error.message, error.code, error.type),
                                 "type": "conversation.item.input_audio_transcription.failed", **base})  # fmt: skip
                return
            delta = partial.final_delta(text) if partial is not None else text
            if partial is not None and partial.sent and not text.startswith(partial.sent):
                self.hub.metrics.stream_partials_total.labels(outcome="revised").inc()
            if delta:
                await self.send({"type": "conversation.item.input_audio_transcription.delta", **base, "delta": delta})
            await self.send({"type": "conversation.item.input_audio_transcription.completed", **base,
                             "transcript": text, "usage": {"type": "duration",
                                                           "seconds": round(len(utt.samples) / 16000, 3)}})  # fmt: skip
            self.hub.metrics.stream_final_latency_seconds.observe(time.perf_counter() - t0)
        finally:
            self.pending.release()

    async def finish(self) -> None:
        """Transcribe the open utterance and wait for every pending text (idle timeout, drain). Without turn
        detection everything buffered since the last commit is the open utterance; with it, only detected speech
        (the buffer outside speech holds just the prefix padding)."""
        if self.timeline.item_id is not None or self.config.turn_detection is None:
            utt = self.timeline.commit()
            if utt is not None:
                await self.finalise(utt)
        if self.tasks:
            await asyncio.gather(*self.tasks, return_exceptions=True)

    async def abandon(self) -> None:
        if self.partial is not None and self.partial.task is not None:
            self.partial.task.cancel()
        for task in self.tasks:
            task.cancel()
        if self.tasks:
            await asyncio.gather(*self.tasks, return_exceptions=True)
