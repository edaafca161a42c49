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
