"""One request's path: hash + cache → decode → windows → features → engine → stitch.

Blocking work (hashing, decoding, feature extraction) runs on a thread pool so the event loop only schedules.
Windows of long audio are fed through a semaphore, so a one-hour file holds a few batches' worth of windows in
memory at once, not the whole file's features.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import BinaryIO, TypeVar

import numpy as np

from . import audio as audio_mod
from .backends import Backend, DecodeOptions, ItemResult, Prepared, Token
from .cache import LRUCache, cache_key
from .config import Settings
from .engine import Engine
from .errors import PayloadTooLarge
from .formats import Segment, Transcript, Word
from .metrics import Metrics
from .segments import Window, plan_windows

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
    ) -> tuple[Transcript, bool]:
        """Returns the transcript and whether it came from the cache. `trusted` (the warm-up's own audio) skips
        the upload-size limit and the cache. `on_queued` runs once its first item is queued (or it ends)."""
        use_cache = self.cache.max_entries > 0 and not trusted
        limit = 2**62 if trusted else self._max_upload_bytes
        key, cached, decoded, prepared = await self._in_pool(self._ingest, upload, options, limit, use_cache)
        if cached is not None:
            self.metrics.cache_hits_total.inc()
            return cached, True
        if use_cache:
            self.metrics.cache_misses_total.inc()
        assert decoded is not None
        try:
            transcript = await self.transcribe_samples(decoded.samples, options, on_queued, prepared=prepared)
        finally:
            decoded.close()
        if use_cache:
            self.cache.put(key, transcript)
        return transcript, False

    def _ingest(
        self, upload: BinaryIO, options: DecodeOptions, limit: int, use_cache: bool
    ) -> tuple[str, Transcript | None, audio_mod.Audio | None, Prepared | None]:
        """Hash → cache lookup → decode → (audio that needs no splitting) features, in ONE worker-thread hop:
        each hop between the event loop and a thread costs more than hashing a short clip. With the cache off
        the upload is not hashed at all (the key is only for the cache)."""
        check_size(upload, limit)
        key = ""
        if use_cache:
            key = cache_key(sha256_of(upload), options, self.settings.segment_s, self.settings.segment_overlap_s)
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
        stages.labels(stage="features").observe(time.perf_counter() - t1)
        return key, None, decoded, prepared

    async def transcribe_samples(
        self,
        samples: np.ndarray,
        options: DecodeOptions,
        on_queued: Callable[[], None] | None = None,
        *,
        prepared: Prepared | None = None,
    ) -> Transcript:
        """`prepared`: the features of the whole audio, already made (audio that fits one window)."""
        duration = len(samples) / audio_mod.SAMPLE_RATE
        overlap = self.settings.segment_overlap_s if self.backend.supports_token_times else 0.0
        windows = plan_windows(duration, self.settings.segment_s, overlap)
        in_flight = asyncio.Semaphore(max(2, self.engine.queue.max_batch_size))
        batch_sizes: list[int] = []
        queue_s: list[float] = []
        batch_s: dict[float, float] = {}  # batch start -> its forward time: items sharing a batch count once

        async def run_window(w: Window) -> ItemResult:
            async with in_flight:
                a, b = int(w.start_s * audio_mod.SAMPLE_RATE), int(w.end_s * audio_mod.SAMPLE_RATE)
                if prepared is not None and len(windows) == 1:
                    ready = prepared
                else:
                    chunk = np.array(samples[a:b], dtype=np.float32)  # copy: pages in only this window
                    ready = await self._in_pool(self.backend.prepare, chunk, stage="features")
                item = self.engine.submit(ready, options)
                if on_queued is not None:
                    on_queued()  # its items now count in the queue itself
                result = await item.future
                batch_sizes.append(item.batch_size)
                queue_s.append(item.queue_s)
                batch_s[item.batch_started] = item.batch_s
                return result

        results = await asyncio.gather(*(run_window(w) for w in windows))
        t0 = time.perf_counter()
        transcript = self._stitch(windows, results, duration)
        transcript.max_batch_size = max(batch_sizes, default=0)
        transcript.queue_s, transcript.inference_s = max(queue_s, default=0.0), sum(batch_s.values())
        self.metrics.stage_duration_seconds.labels(stage="postprocess").observe(time.perf_counter() - t0)
        return transcript

    def _stitch(self, windows: Sequence[Window], results: Sequence[ItemResult], duration: float) -> Transcript:
        segments: list[Segment] = []
        kept_all: list[Token] = []
        have_tokens = all(r.tokens is not None for r in results)
        for w, r in zip(windows, results, strict=True):
            if have_tokens and r.tokens is not None:
                shifted = [Token(t.text, t.start_s + w.start_s, t.end_s + w.start_s) for t in r.tokens]
                kept = [t for t in shifted if w.own_start_s <= t.start_s < w.own_end_s or len(windows) == 1]
                kept_all.extend(kept)
                text = self.backend.detokenize([t.text for t in kept]) if len(windows) > 1 else r.text
            else:
                text = r.text
            segments.append(Segment(w.index, w.own_start_s, w.own_end_s, text, r.emotion, r.event))
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
