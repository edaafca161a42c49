"""The size of the inference pod's /tmp volume, from the upload limits (pure).

The server keeps every upload in progress under /tmp: the spooled body, ffmpeg's copy of it and the decoded
samples (float32 at 16 kHz). The volume holds SCRATCH_UPLOADS worst-case uploads at once plus headroom; the
server is told the budget (ASR_SCRATCH_MB) and answers 429 to an upload that would not fit, instead of filling
the volume — past its sizeLimit the kubelet evicts the pod. The formula is the server's
(`asr_inference.scratch.request_scratch_bytes`; a test keeps the two equal).
"""

from __future__ import annotations

import math

MIB = 2**20
DECODED_BYTES_PER_S = 16_000 * 4
DECODE_EXPANSION = 64  # decoded bytes per compressed byte, at most (an 8 kbit/s speech codec)
HEADROOM_MI = 64  # Python's and ffmpeg's own temp files
SCRATCH_UPLOADS = 4  # worst-case uploads the default volume holds at once; typical uploads are far smaller


def request_scratch_mi(max_upload_mb: float, max_audio_s: float) -> int:
    """The most /tmp one upload holds, in MiB: body + ffmpeg's copy + decoded samples."""
    upload = max_upload_mb * MIB
    decoded = min(max_audio_s * DECODED_BYTES_PER_S, DECODE_EXPANSION * upload)
    return math.ceil((2 * upload + decoded) / MIB)


def default_scratch_mi(max_upload_mb: float, max_audio_s: float) -> int:
    return SCRATCH_UPLOADS * request_scratch_mi(max_upload_mb, max_audio_s) + HEADROOM_MI


def minimum_scratch_mi(max_upload_mb: float, max_audio_s: float) -> int:
    """Below this, one worst-case upload alone would fill the volume."""
    return request_scratch_mi(max_upload_mb, max_audio_s) + HEADROOM_MI
