"""One request's path: hash + cache → decode → segments (VAD or windows) → model input → engine → stitch.

Blocking work (hashing, decoding, per-item model input) runs on a thread pool so the event loop only schedules;
the FunASR families' features are made per batch on the model's device, by the backend. Windows of long audio are
fed through a semaphore, so a one-hour file holds a few batches' worth of windows in memory at once, not the
whole file.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import hashlib
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, BinaryIO, TypeVar

import numpy as np

from . import audio as audio_mod
from . import chunking as chunking_mod
from .backends import Backend, DecodeOptions, ItemResult, Prepared, Token
from .cache import LRUCache, cache_key
from .config import Settings
from .engine import Engine
from .errors import InvalidRequest, PayloadTooLarge
from .formats import Segment, Transcript, Word
from .metrics import Metrics
from .segments import Window, plan_windows
from .vad import SileroVad, plan_speech_segments

SegmentCallback = Callable[[Segment], None]  # called with each segment's text, in order, as soon as it is known

T = TypeVar("T")


def check_size(f: BinaryIO, limit_bytes: int) -> int:
    """Size of a seekable upload without reading it; 413 past `limit_bytes`."""
    size = f.seek(0, 2)
    f.seek(0)
    if size > limit_bytes:
        raise PayloadTooLarge(f"upload exceeds {limit_bytes / 2**20:g} MB, the most this server accepts")
    return size


def sha256_of(f: BinaryIO) -> str:
    """Hash a seekable upload in chunks (never all in memory)."""
    f.seek(0)
    h = hashlib.sha256()
    while chunk := f.read(1 << 20):
        h.update(chunk)
    f.seek(0)
    return h.hexdigest()


def _close_abandoned_ingest(work: concurrent.futures.Future[tuple[Any, ...]]) -> None:
    if work.cancelled() or work.exception() is not None:
        return
    decoded = work.result()[2]
    if decoded is not None:
        decoded.close()


class _RequestToken:
    """Identity of one transcription in the batch queue (weakly referenced there: it goes with the request)."""


class Transcriber:
    def __init__(
        self,
        settings: Settings,
        backend: Backend,
        engine: Engine,
        metrics: Metrics,
        pool: ThreadPoolExecutor,
    ) -> None:
        self.settings = settings
        self.backend = backend
        self.engine = engine
        self.metrics = metrics
        self.pool = pool
        self.cache: LRUCache[Transcript] = LRUCache(settings.cache_entries)
        self.ffmpeg = audio_mod.find_ffmpeg()
        self._max_upload_bytes = int(settings.max_upload_mb * 2**20)
        self.default_chunking = chunking_mod.server_default(settings)
        if settings.segmenter == "vad" and self.default_chunking.segmenter != "vad":
            raise RuntimeError("--segmenter vad needs silero-vad installed (pip install silero-vad)")
        self.vad: SileroVad | None = SileroVad() if chunking_mod.available() else None

    def check_language(self, language: str) -> None:
        """InvalidRequest for a `language` the model does not accept (uploads and realtime sessions alike)."""
        languages = self.backend.languages
        if languages is not None and language not in languages:
            raise InvalidRequest(
                f"language {language!r} is not supported by this model; use one of {sorted(languages)}"
            )

    async def _in_pool(self, fn: Callable[..., T], *args: object, stage: str | None = None) -> T:
        t0 = time.perf_counter()
        result = await asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)
        if stage:
            self.metrics.stage_duration_seconds.labels(stage=stage).observe(time.perf_counter() - t0)
        return result

    async def transcribe(
        self,
        upload: BinaryIO,
        options: DecodeOptions,
        *,
        trusted: bool = False,
        on_queued: Callable[[], None] | None = None,
        chunking: chunking_mod.Chunking | None = None,
        on_segment: SegmentCallback | None = None,
    ) -> tuple[Transcript, bool]:
        """Returns the transcript and whether it came from the cache. `trusted` (the warm-up's own audio) skips
        the upload-size limit and the cache. `on_queued` runs once its first item is queued (or it ends).
        `chunking`: how long audio is cut (default: the server's). `on_segment`: see `transcribe_samples`."""
        chunking = chunking or self.default_chunking
        # a sampled transcript (temperature > 0) is one draw, not the answer to the same upload next time
        use_cache = self.cache.max_entries > 0 and not trusted and options.temperature == 0
        limit = 2**62 if trusted else self._max_upload_bytes
        key, cached, decoded, prepared = await self._ingest_in_pool(upload, options, limit, use_cache, chunking)
        if cached is not None:
            self.metrics.cache_hits_total.inc()
            if on_segment is not None:
                for segment in cached.segments:
                    on_segment(segment)
            return cached, True
        if use_cache:
            self.metrics.cache_misses_total.inc()
        assert decoded is not None
        try:
            transcript = await self.transcribe_samples(
                decoded.samples, options, on_queued, prepared=prepared, chunking=chunking, on_segment=on_segment
            )
        finally:
            decoded.close()
        if use_cache:
            self.cache.put(key, transcript)
        return transcript, False

    async def _ingest_in_pool(
        self, upload: BinaryIO, options: DecodeOptions, limit: int, use_cache: bool, chunking: chunking_mod.Chunking
    ) -> tuple[str, Transcript | None, audio_mod.Audio | None, Prepared | None]:
        """`_ingest` in a worker thread. A client that hangs up cancels the await, not the thread: the decode then
        finishes with no one to close its audio (a memory-mapped temp file as large as the upload decodes to), so
        a done-callback closes it."""
        work = self.pool.submit(self._ingest, upload, options, limit, use_cache, chunking)
        try:
            return await asyncio.wrap_future(work)
        except asyncio.CancelledError:
            work.add_done_callback(_close_abandoned_ingest)
            raise

    def _ingest(
        self, upload: BinaryIO, options: DecodeOptions, limit: int, use_cache: bool, chunking: chunking_mod.Chunking
    ) -> tuple[str, Transcript | None, audio_mod.Audio | None, Prepared | None]:
        """Hash → cache lookup → decode → (audio that needs no splitting) model input, in ONE worker-thread hop:
        each hop between the event loop and a thread costs more than hashing a short clip. With the cache off
        the upload is not hashed at all (the key is only for the cache)."""
        check_size(upload, limit)
        key = ""
        if use_cache:
            key = cache_key(
                sha256_of(upload), options, self.settings.segment_s, self.settings.segment_overlap_s,
                chunking.cache_part(),
            )  # fmt: skip
            if (cached := self.cache.get(key)) is not None:
                return key, cached, None, None
        stages = self.metrics.stage_duration_seconds
        t0 = time.perf_counter()
        decoded = audio_mod.decode(upload, max_audio_s=self.settings.max_audio_s, ffmpeg=self.ffmpeg)
        t1 = time.perf_counter()
        stages.labels(stage="decode").observe(t1 - t0)
        if decoded.duration_s > self.settings.segment_s:
            return key, None, decoded, None
        try:
            prepared = self.backend.prepare(np.asarray(decoded.samples, dtype=np.float32))
        except BaseException:
            decoded.close()
            raise
        stages.labels(stage="prepare").observe(time.perf_counter() - t1)
        return key, None, decoded, prepared

    async def transcribe_samples(
        self,
        samples: np.ndarray,
        options: DecodeOptions,
        on_queued: Callable[[], None] | None = None,
        *,
        prepared: Prepared | None = None,
        chunking: chunking_mod.Chunking | None = None,
        on_segment: SegmentCallback | None = None,
        background: bool = False,
    ) -> Transcript:
        """`prepared`: the model input of the whole audio, already made (audio that fits one window).
        `on_segment` gets each segment (its text as in the final transcript) in order, as soon as it and every
        segment before it are done: what `stream=true` sends as deltas.
        `background`: optional work (a realtime partial), served after all other work and refused (QueueFull) while
        a batch of other work waits."""
        duration = len(samples) / audio_mod.SAMPLE_RATE
        windows = await self._plan(samples, duration, chunking or self.default_chunking)
        in_order = _InOrder(windows, on_segment, self._segment) if on_segment is not None else None
        in_flight = asyncio.Semaphore(max(2, self.engine.queue.max_batch_size))
        batch_sizes: list[int] = []
        queue_s: list[float] = []
        batch_s: dict[float, float] = {}  # batch start -> its forward time: items sharing a batch count once
        request = _RequestToken()  # this transcription's place in the queue's fair order

        async def run_window(w: Window) -> ItemResult:
            async with in_flight:
                a, b = int(w.start_s * audio_mod.SAMPLE_RATE), int(w.end_s * audio_mod.SAMPLE_RATE)
                if prepared is not None and len(windows) == 1:
                    ready = prepared
                else:
                    chunk = np.array(samples[a:b], dtype=np.float32)  # copy: pages in only this window
                    ready = await self._in_pool(self.backend.prepare, chunk, stage="prepare")
                item = self.engine.submit(ready, options, request, background=background)
                if on_queued is not None:
                    on_queued()  # its items now count in the queue itself
                result = await item.future
                batch_sizes.append(item.batch_size)
                queue_s.append(item.queue_s)
                batch_s[item.batch_started] = item.batch_s
                if in_order is not None:
                    in_order.done(w, result)
                return result

        results = await asyncio.gather(*(run_window(w) for w in windows))
        t0 = time.perf_counter()
        transcript = self._stitch(windows, results, duration)
        transcript.max_batch_size = max(batch_sizes, default=0)
        transcript.queue_s, transcript.inference_s = max(queue_s, default=0.0), sum(batch_s.values())
        self.metrics.stage_duration_seconds.labels(stage="postprocess").observe(time.perf_counter() - t0)
        return transcript

    async def _plan(self, samples: np.ndarray, duration: float, chunking: chunking_mod.Chunking) -> list[Window]:
        """Segments of the audio: one when it fits `segment_s`; else cut at pauses (VAD) or fixed windows."""
        segment_s = self.settings.segment_s
        if duration > segment_s and chunking.segmenter == "vad" and self.vad is not None:
            probs = await self._in_pool(self.vad.probabilities, samples, stage="vad")
            return plan_speech_segments(probs, duration, chunking.vad, segment_s)
        overlap = self.settings.segment_overlap_s if self.backend.supports_token_times else 0.0
        return plan_windows(duration, segment_s, overlap)

    def _segment(self, w: Window, r: ItemResult, single: bool) -> tuple[Segment, list[Token] | None]:
        """One window's segment and the tokens it keeps (in the original timeline)."""
        if r.tokens is None:
            return Segment(w.index, w.own_start_s, w.own_end_s, r.text, r.emotion, r.event), None
        shifted = [Token(t.text, t.start_s + w.start_s, t.end_s + w.start_s) for t in r.tokens]
        kept = [t for t in shifted if w.own_start_s <= t.start_s < w.own_end_s or single]
        text = r.text if single else self.backend.detokenize([t.text for t in kept])
        return Segment(w.index, w.own_start_s, w.own_end_s, text, r.emotion, r.event), kept

    def _stitch(self, windows: Sequence[Window], results: Sequence[ItemResult], duration: float) -> Transcript:
        segments: list[Segment] = []
        kept_all: list[Token] = []
        have_tokens = all(r.tokens is not None for r in results)
        for w, r in zip(windows, results, strict=True):
            segment, kept = self._segment(w, r, len(windows) == 1)
            if have_tokens and kept is not None:
                kept_all.extend(kept)
            else:
                segment.text = r.text
            segments.append(segment)
        if have_tokens and len(windows) > 1:
            full_text = self.backend.detokenize([t.text for t in kept_all])
        else:
            full_text = " ".join(s.text for s in segments if s.text)
        languages = collections.Counter(r.language for r in results if r.language)
        return Transcript(
            text=full_text,
            duration=duration,
            language=languages.most_common(1)[0][0] if languages else None,
            segments=segments,
            words=group_words(kept_all) if have_tokens else None,
        )


def group_words(tokens: Sequence[Token]) -> list[Word]:
    """Token pieces → words with times. Sentencepiece: `▁` starts a word. Otherwise every token is a word unless
    the one before ends with the BPE continuation mark `@@` (char models: a CJK character is a word)."""
    sentencepiece = any("\u2581" in t.text for t in tokens)
    words: list[Word] = []
    new_word_pending = True
    for tok in tokens:
        piece = tok.text
        clean = piece.replace("\u2581", "").removesuffix("@@")
        if sentencepiece:
            new_word = new_word_pending or piece.startswith("\u2581")
            new_word_pending = piece.startswith("\u2581") and not clean
        else:
            new_word = new_word_pending
            new_word_pending = not piece.endswith("@@")
        if not clean:
            continue
        if new_word or not words:
            words.append(Word(clean, tok.start_s, tok.end_s))
        else:
            words[-1] = Word(words[-1].word + clean, words[-1].start, tok.end_s)
    return words


class _InOrder:
    """Hands finished segments to a callback in timeline order (a later window may finish first)."""

    def __init__(
        self,
        windows: Sequence[Window],
        callback: SegmentCallback,
        make: Callable[[Window, ItemResult, bool], tuple[Segment, list[Token] | None]],
    ) -> None:
        self._single = len(windows) == 1
        self._callback = callback
        self._make = make
        self._ready: dict[int, tuple[Window, ItemResult]] = {}
        self._next = 0

    def done(self, w: Window, result: ItemResult) -> None:
        self._ready[w.index] = (w, result)
        while self._next in self._ready:
            window, res = self._ready.pop(self._next)
            segment, _ = self._make(window, res, self._single)
            self._callback(segment)
            self._next += 1
