"""Scratch disk for transcriptions in progress, and a budget over all of them.

One upload holds, at its peak, the spooled request body, ffmpeg's copy of it and the decoded samples (float32 at
16 kHz in a memory-mapped file), all under the temp dir until its response is sent. With a budget
(`--scratch-mb`, which the operator sets from the pod's /tmp volume) an upload reserves its worst case before a
byte of its body is read; one that does not fit gets 429 with Retry-After instead of filling the disk — on
Kubernetes a /tmp emptyDir past its sizeLimit gets the whole pod evicted, every request on it lost.
"""

from __future__ import annotations

import shutil

DECODED_BYTES_PER_S = 16_000 * 4  # float32 mono at 16 kHz
# Decoded size per compressed byte, at most: 64 kB/s of samples from a ~1 kB/s (8 kbit/s) speech codec.
DECODE_EXPANSION = 64
# The temp dir's other tenants (Python, ffmpeg, the cache of small files): kept out of the uploads' budget.
HEADROOM_MB = 64


def request_scratch_bytes(upload_bytes: int, max_audio_s: float) -> int:
    """The most disk one transcription of an `upload_bytes` body holds at once: body + ffmpeg's copy + samples."""
    decoded = min(int(max_audio_s * DECODED_BYTES_PER_S), DECODE_EXPANSION * upload_bytes)
    return 2 * upload_bytes + decoded


class ScratchBudget:
    """Reservations of scratch bytes, on the event loop only (no lock). `limit_bytes` None: no limit."""

    def __init__(self, limit_bytes: int | None, directory: str, per_request_max_bytes: int = 0) -> None:
        self.limit_bytes = limit_bytes
        self.directory = directory
        self.per_request_max_bytes = per_request_max_bytes  # the largest upload's worst case, for /readyz
        self.in_use_bytes = 0

    def try_reserve(self, n: int) -> bool:
        """Reserve n bytes if they fit. A request larger than the whole budget still runs when it is alone, so a
        budget set too small serialises uploads instead of refusing them for ever."""
        if self.limit_bytes is not None and self.in_use_bytes and self.in_use_bytes + n > self.limit_bytes:
            return False
        self.in_use_bytes += n
        return True

    def release(self, n: int) -> None:
        self.in_use_bytes = max(0, self.in_use_bytes - n)

    def report(self) -> dict[str, int | str | None]:
        """For /readyz: what the server may need, what it has reserved, what the disk has left."""
        try:
            free: int | None = shutil.disk_usage(self.directory).free
        except OSError:
            free = None
        return {
            "dir": self.directory,
            "limit_bytes": self.limit_bytes,
            "in_use_bytes": self.in_use_bytes,
            "per_request_max_bytes": self.per_request_max_bytes,
            "free_bytes": free,
        }
