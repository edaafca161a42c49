"""Test clips: real speech, 16 kHz mono WAV, sent as uploads and decoded for the raw-model measurement."""

from __future__ import annotations

import io
import random
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

REPO = Path(__file__).resolve().parents[2]
CLIP_SETS = {
    "demo-heldout": REPO / "tests" / "data" / "demo_heldout",
    "speech": REPO / "tests" / "data" / "speech",
}
SENTENCES = [
    "one two three four five six seven eight nine zero",
    "hello world yes no stop go",
    "the quick brown fox jumps over the lazy dog near the quiet river bank",
    "please transcribe this sentence as quickly and as accurately as you can",
    "speech recognition servers batch many requests together to use the hardware well",
    "a benchmark should measure throughput and latency on the same machine at the same time",
    "seven eight nine hello world stop go yes no one two three",
    "kubernetes operators manage the lifecycle of inference servers and their models",
]


@dataclass
class Clip:
    name: str
    wav: bytes  # the upload: 16 kHz mono PCM16 WAV
    duration_s: float

    def samples(self) -> np.ndarray:
        data, rate = sf.read(io.BytesIO(self.wav), dtype="float32")
        assert rate == 16000 and data.ndim == 1
        return data


def _to_16k_mono_wav(data: np.ndarray, rate: int) -> tuple[bytes, float]:
    if data.ndim > 1:
        data = data.mean(axis=1)
    if rate != 16000:
        import soxr

        data = soxr.resample(data, rate, 16000)
    buf = io.BytesIO()
    sf.write(buf, np.clip(data, -1, 1).astype(np.float32), 16000, format="WAV", subtype="PCM_16")
    return buf.getvalue(), len(data) / 16000


def load_dir(directory: Path) -> list[Clip]:
    clips = []
    for path in sorted(directory.iterdir()):
        if path.suffix.lower() not in (".wav", ".flac", ".ogg"):
            continue
        data, rate = sf.read(path, dtype="float32")
        clips.append(Clip(path.name, *_to_16k_mono_wav(data, rate)))
    if not clips:
        raise SystemExit(f"asr-bench: no .wav/.flac/.ogg clips in {directory}")
    return clips


def espeak_clips(out: Path, count: int, min_s: float, max_s: float, seed: int = 0) -> list[Clip]:
    """`count` clips of espeak-ng speech between min_s and max_s seconds (sentences joined until long enough),
    written to `out` (kept: the JSON names them) and returned."""
    if shutil.which("espeak-ng") is None:
        raise SystemExit("asr-bench: espeak-ng is not installed (apt-get install espeak-ng)")
    rng = random.Random(seed)
    out.mkdir(parents=True, exist_ok=True)
    voices = ["en-us", "en", "en-us+m3", "en+f3", "en-us+f2", "en+m5"]
    clips = []
    for i in range(count):
        target = rng.uniform(min_s, max_s)
        speed = rng.choice([150, 165, 175, 190])
        voice = rng.choice(voices)
        words: list[str] = []
        path = out / f"espeak_{i:02d}.wav"
        if path.is_file():
            data, rate = sf.read(path, dtype="float32")
            clips.append(Clip(path.name, *_to_16k_mono_wav(data, rate)))
            continue
        data = np.zeros(0, dtype=np.float32)
        while True:
            words += [*rng.choice(SENTENCES).split(), ","]
            with tempfile.NamedTemporaryFile(suffix=".wav") as tmp:
                subprocess.run(
                    ["espeak-ng", "-v", voice, "-s", str(speed), "-w", tmp.name, " ".join(words)],
                    check=True,
                    capture_output=True,
                )
                raw, rate = sf.read(tmp.name, dtype="float32")
            if len(raw) / rate >= target or len(words) > 200:
                data = raw[: int(max_s * rate)]  # a sentence may overshoot: cut at max_s
                break
        wav, duration = _to_16k_mono_wav(data, rate)
        path.write_bytes(wav)
        clips.append(Clip(path.name, wav, duration))
    return clips


def load(
    spec: str, out_dir: Path, *, espeak_count: int = 12, espeak_range: tuple[float, float] = (5.0, 15.0)
) -> tuple[str, list[Clip]]:
    """`demo-heldout` | `speech` (committed test speech) | `espeak` (generated 5–15 s clips) | `espeak-10s` (12
    generated clips of 8–12 s: the front-end cost figures) | a directory."""
    if spec in CLIP_SETS:
        return spec, load_dir(CLIP_SETS[spec])
    if spec == "espeak":
        return spec, espeak_clips(out_dir / "clips-espeak", espeak_count, *espeak_range)
    if spec == "espeak-10s":
        return spec, espeak_clips(out_dir / "clips-espeak-10s", 12, 8.0, 12.0)
    path = Path(spec)
    if path.is_dir():
        return str(path), load_dir(path)
    raise SystemExit(
        f"asr-bench: --clips must be one of {sorted(CLIP_SETS)}, 'espeak', 'espeak-10s' or a directory, not {spec!r}"
    )
