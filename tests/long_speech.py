"""A long recording with pauses, built from the demo model's held-out clips, with the true clip spans."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

HELDOUT = Path(__file__).parent / "data" / "demo_heldout"
RATE = 16000


@dataclass
class LongSpeech:
    samples: np.ndarray
    spans: list[tuple[float, float]]  # where each clip's audio lies
    texts: list[str]

    @property
    def duration_s(self) -> float:
        return len(self.samples) / RATE

    def wav(self) -> bytes:
        buf = io.BytesIO()
        sf.write(buf, self.samples, RATE, format="WAV", subtype="PCM_16")
        return buf.getvalue()


def build(clips: int = 8, gap_s: tuple[float, float] = (0.7, 1.5), seed: int = 0) -> LongSpeech:
    """`clips` held-out clips in name order, each after a pause of random length in `gap_s`."""
    transcripts: dict[str, str] = json.loads((HELDOUT / "transcripts.json").read_text())
    rng = np.random.default_rng(seed)
    parts: list[np.ndarray] = []
    spans, texts, t = [], [], 0.0
    for name in sorted(transcripts)[:clips]:
        clip, rate = sf.read(HELDOUT / name, dtype="float32")
        assert rate == RATE and clip.ndim == 1
        gap = float(rng.uniform(*gap_s))
        parts += [np.zeros(int(gap * RATE), np.float32), clip]
        t += int(gap * RATE) / RATE
        spans.append((t, t + len(clip) / RATE))
        texts.append(transcripts[name])
        t += len(clip) / RATE
    parts.append(np.zeros(int(gap_s[0] * RATE), np.float32))
    return LongSpeech(np.concatenate(parts), spans, texts)


def wer(reference: str, hypothesis: str) -> float:
    """Word error rate with the demo model card's own normaliser and counter (tools/demo_model/common.py)."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "tools" / "demo_model" / "common.py"
    spec = importlib.util.spec_from_file_location("demo_model_common", path)
    assert spec is not None and spec.loader is not None
    common = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(common)
    errors, words = common.word_errors([(common.normalize(reference), common.normalize(hypothesis))])
    return float(errors / max(words, 1))
