"""A background client loop: keeps a server's batch queue busy with transcription requests until stopped."""

from __future__ import annotations

import asyncio
import collections
import threading
from pathlib import Path

import httpx

DATA_START = 44  # samples/demo.wav is a plain 44-byte-header PCM WAV


def variant(wav: bytes, n: int) -> bytes:
    """The clip with one 16-bit sample nudged by one LSB: inaudible, but a different result-cache key."""
    data = bytearray(wav)
    offset = DATA_START + 2 * (n % ((len(wav) - DATA_START) // 2))
    data[offset] ^= 1
    return bytes(data)


class LoadLoop:
    """`concurrency` clients posting the clip back to back; every `repeat_every`-th request repeats the
    original bytes (a cache hit once cached), the rest are unique (they queue and run)."""

    def __init__(self, base: str, clip: Path, concurrency: int = 24, repeat_every: int = 5) -> None:
        self.base, self.wav, self.concurrency, self.repeat_every = base, clip.read_bytes(), concurrency, repeat_every
        self.codes: collections.Counter[int] = collections.Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), name="load", daemon=True)
        self._sent = 0

    def __enter__(self) -> LoadLoop:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=120)

    async def _client(self, client: httpx.AsyncClient) -> None:
        while not self._stop.is_set():
            self._sent += 1
            n = self._sent
            body = self.wav if n % self.repeat_every == 0 else variant(self.wav, n)
            try:
                response = await client.post("/v1/audio/transcriptions", files={"file": ("clip.wav", body)})
                self.codes[response.status_code] += 1
            except httpx.TransportError:
                self.codes[0] += 1

    async def _main(self) -> None:
        limits = httpx.Limits(max_connections=self.concurrency)
        async with httpx.AsyncClient(base_url=self.base, timeout=120, limits=limits) as client:
            await asyncio.gather(*(self._client(client) for _ in range(self.concurrency)))


class StreamLoop:
    """`sessions` realtime clients (server VAD) streaming the clip at real time, then a second of silence (which
    ends the utterance), over and over until stopped; the server's event types are counted."""

    def __init__(self, base: str, clip: Path, sessions: int = 2) -> None:
        import numpy as np
        import soundfile as sf

        samples, rate = sf.read(clip, dtype="int16")
        assert rate == 16000 and samples.ndim == 1
        self.url = base.replace("http://", "ws://") + "/v1/realtime?intent=transcription"
        self.pcm = np.concatenate([samples, np.zeros(16000, np.int16)]).astype("<i2").tobytes()
        self.sessions = sessions
        self.events: collections.Counter[str] = collections.Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), name="streams", daemon=True)

    def __enter__(self) -> StreamLoop:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=120)

    async def _session(self) -> None:
        import base64
        import json

        import websockets

        chunk = 3200  # bytes: 100 ms of 16-bit audio
        async with websockets.connect(self.url, max_size=1 << 24) as ws:
            update = {"type": "session.update", "session": {"type": "transcription",
                      "audio": {"input": {"format": {"type": "audio/pcm", "rate": 16000}}}}}  # fmt: skip
            await ws.send(json.dumps(update))

            async def read() -> None:
                async for raw in ws:
                    self.events[json.loads(raw)["type"]] += 1

            reader = asyncio.create_task(read())
            while not self._stop.is_set():
                for a in range(0, len(self.pcm), chunk):
                    audio = base64.b64encode(self.pcm[a : a + chunk]).decode()
                    await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": audio}))
                    await asyncio.sleep(0.1)
            reader.cancel()

    async def _main(self) -> None:
        await asyncio.gather(*(self._session() for _ in range(self.sessions)))
