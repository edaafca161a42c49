"""Warm-up: a full-size batch of real speech, first through the precision check, then through the whole path."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import soundfile as sf

from .config import Settings

WARMUP_CLIP = Path(__file__).parent / "assets" / "warmup.wav"


def warmup_samples(settings: Settings) -> list[np.ndarray]:
    """`max_batch_size` clips of speech, lengths spread from the clip's own up to the longest a full batch
    may hold (tiling the clip), so kernels and allocator pools see the shapes real traffic brings."""
    clip, rate = sf.read(WARMUP_CLIP, dtype="float32")
    assert rate == 16000, "warm-up clip must be 16 kHz"
    n = settings.max_batch_size
    longest_s = max(len(clip) / rate, min(settings.segment_s, settings.max_batch_audio_s / n))
    longest_s = min(longest_s, settings.max_audio_s)
    lengths = np.linspace(min(len(clip), int(longest_s * rate)), int(longest_s * rate), n).astype(int)
    reps = int(np.ceil(lengths.max() / len(clip)))
    tiled = np.tile(clip, reps)
    return [np.ascontiguousarray(tiled[:k]) for k in lengths]


def to_wav_bytes(samples: np.ndarray) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, samples, 16000, format="WAV", subtype="PCM_16")
    return buf.getvalue()
