"""Result cache: LRU keyed by sha256 of the uploaded bytes + every option that changes the transcript."""

from __future__ import annotations

import collections
import hashlib
import threading
from typing import Generic, TypeVar

V = TypeVar("V")


def cache_key(audio_sha256: str, *parts: object) -> str:
    h = hashlib.sha256(audio_sha256.encode())
    for part in parts:
        h.update(b"\x00" + repr(part).encode())
    return h.hexdigest()


class LRUCache(Generic[V]):
    """Bounded, thread-safe LRU. `max_entries == 0` disables it (every get misses, put is a no-op)."""

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self._data: collections.OrderedDict[str, V] = collections.OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._data)

    def get(self, key: str) -> V | None:
        if self.max_entries == 0:
            return None
        with self._lock:
            value = self._data.get(key)
            if value is not None:
                self._data.move_to_end(key)
            return value

    def put(self, key: str, value: V) -> None:
        if self.max_entries == 0:
            return
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self.max_entries:
                self._data.popitem(last=False)
