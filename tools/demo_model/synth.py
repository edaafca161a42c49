"""Synthesise the demo-model corpus with espeak-ng: 16 kHz mono PCM16 wavs + jsonl manifests.

Writes, under WORK_DIR:
  train/, train.jsonl                  N_TRAIN clips; 70 % with white/pink/brown noise at 10-40 dB SNR
  heldout/, heldout.jsonl              N_HELDOUT clean clips, voice/speed/pitch combos unseen in training
  heldout_noisy/, heldout_noisy.jsonl  the same held-out clips with light noise (15-25 dB SNR)

Each manifest row: key, wav (absolute path), text, voice, speed, pitch, snr, noise, subset.
Generation is deterministic for a given seed. No network access.

Usage: python tools/demo_model/synth.py WORK_DIR [--train 8000] [--heldout 450] [--jobs 2]
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
from common import (
    DIGITS,
    HELDOUT_BASES,
    HELDOUT_PITCHES,
    HELDOUT_SPEEDS,
    HELDOUT_VARIANTS,
    SAMPLE_RATE,
    TRAIN_BASES,
    TRAIN_PITCHES,
    TRAIN_SPEEDS,
    TRAIN_VARIANTS,
    WORDS,
    write_jsonl,
)

HELDOUT_SUBSETS = ("unseen_base", "unseen_variant", "both_unseen")


@dataclass(frozen=True)
class Clip:
    """One utterance to synthesise and how to degrade it."""

    key: str
    wav: str
    text: str
    voice: str
    speed: int
    pitch: int
    gain: float  # peak amplitude after normalisation
    lead_s: float  # leading silence
    trail_s: float  # trailing silence
    snr: float | None  # None: clean
    noise: str | None  # white | pink | brown
    seed: int
    subset: str | None = None


def random_text(rng: random.Random) -> str:
    """75 %: a digit string of 2-6 digits; 25 %: 1-4 words drawn from digits + command words."""
    if rng.random() < 0.75:
        return " ".join(rng.choice(DIGITS) for _ in range(rng.randint(2, 6)))
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 4)))


def coloured_noise(kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """Unit-variance white, pink (1/f power) or brown (1/f^2 power) noise."""
    white = rng.standard_normal(n)
    if kind == "white":
        return white
    spec = np.fft.rfft(white)
    f = np.arange(len(spec)) + 1.0
    spec = spec / (np.sqrt(f) if kind == "pink" else f)
    out = np.fft.irfft(spec, n)
    return out / (out.std() + 1e-9)


def espeak(text: str, voice: str, speed: int, pitch: int) -> np.ndarray:
    """Run espeak-ng and return float64 audio resampled to 16 kHz."""
    tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None
    with tempfile.NamedTemporaryFile(suffix=".wav", dir=tmp_dir) as tmp:
        cmd = ["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "-w", tmp.name, text]
        subprocess.run(cmd, check=True, capture_output=True)
        audio, sr = sf.read(tmp.name, dtype="float32")
    if audio.ndim > 1:
        audio = audio.mean(axis=1)
    return soxr.resample(audio, sr, SAMPLE_RATE).astype(np.float64)


def render(clip: Clip) -> float:
    """Synthesise, pad, normalise, add noise and write one clip as 16 kHz mono PCM16; returns seconds."""
    y = espeak(clip.text, clip.voice, clip.speed, clip.pitch)
    lead, trail = np.zeros(int(clip.lead_s * SAMPLE_RATE)), np.zeros(int(clip.trail_s * SAMPLE_RATE))
    y = np.concatenate([lead, y, trail])
    y = y / (np.abs(y).max() + 1e-9) * clip.gain
    if clip.snr is not None and clip.noise is not None:
        speech_power = np.mean(y[np.abs(y) > 1e-4] ** 2)
        noise = coloured_noise(clip.noise, len(y), np.random.default_rng(clip.seed))
        y = y + noise * np.sqrt(speech_power / 10 ** (clip.snr / 10))
    Path(clip.wav).parent.mkdir(parents=True, exist_ok=True)
    sf.write(clip.wav, np.clip(y, -1.0, 1.0).astype(np.float32), SAMPLE_RATE, subtype="PCM_16")
    return len(y) / SAMPLE_RATE


def plan_train(work: Path, n: int, seed: int = 1) -> list[Clip]:
    rng = random.Random(seed)
    clips = []
    for i in range(n):
        text = random_text(rng)
        base, variant = rng.choice(TRAIN_BASES), rng.choice(TRAIN_VARIANTS)
        speed, pitch = rng.choice(TRAIN_SPEEDS), rng.choice(TRAIN_PITCHES)
        snr = None if rng.random() < 0.3 else rng.uniform(10, 40)
        noise = rng.choice(["white", "pink", "brown"])
        key = f"train_{i:05d}"
        clips.append(
            Clip(
                key=key,
                wav=str(work / "train" / f"{key}.wav"),
                text=text,
                voice=base + (f"+{variant}" if variant else ""),
                speed=speed,
                pitch=pitch,
                gain=rng.uniform(0.2, 0.9),
                lead_s=rng.uniform(0.05, 0.4),
                trail_s=rng.uniform(0.05, 0.4),
                snr=snr,
                noise=noise if snr is not None else None,
                seed=seed * 100_000 + i,
            )
        )
    return clips


def plan_heldout(work: Path, n: int, seed: int = 2) -> tuple[list[Clip], list[Clip]]:
    """Clean held-out clips and a noisy copy of each (same voice, text and timing)."""
    rng = random.Random(seed)
    clean, noisy = [], []
    for i in range(n):
        text = random_text(rng)
        subset = HELDOUT_SUBSETS[i % 3]
        base = rng.choice(TRAIN_BASES if subset == "unseen_variant" else HELDOUT_BASES)
        variant = rng.choice(TRAIN_VARIANTS if subset == "unseen_base" else HELDOUT_VARIANTS)
        key = f"heldout_{i:05d}"
        c = Clip(
            key=key,
            wav=str(work / "heldout" / f"{key}.wav"),
            text=text,
            voice=base + (f"+{variant}" if variant else ""),
            speed=rng.choice(HELDOUT_SPEEDS),
            pitch=rng.choice(HELDOUT_PITCHES),
            gain=rng.uniform(0.2, 0.9),
            lead_s=rng.uniform(0.05, 0.4),
            trail_s=rng.uniform(0.05, 0.4),
            snr=None,
            noise=None,
            seed=seed * 100_000 + i,
            subset=subset,
        )
        nkey = f"heldoutnoisy_{i:05d}"
        noisy.append(
            Clip(
                **{
                    **asdict(c),
                    "key": nkey,
                    "wav": str(work / "heldout_noisy" / f"{nkey}.wav"),
                    "snr": rng.uniform(15, 25),
                    "noise": rng.choice(["white", "pink"]),
                    "seed": seed * 100_000 + 50_000 + i,
                }
            )
        )
        clean.append(c)
    return clean, noisy


def check_voice_split(train: list[Clip], heldout: list[Clip]) -> None:
    """Fail if any held-out (voice, speed, pitch) combination also occurs in training."""
    seen = {(c.voice, c.speed, c.pitch) for c in train}
    leaked = [c.key for c in heldout if (c.voice, c.speed, c.pitch) in seen]
    if leaked:
        raise SystemExit(f"held-out voice/speed/pitch combos also in training: {leaked[:5]}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("work_dir", type=Path)
    ap.add_argument("--train", type=int, default=8000, help="number of training clips")
    ap.add_argument("--heldout", type=int, default=450, help="held-out clips (plus a noisy copy each)")
    ap.add_argument("--jobs", type=int, default=2, help="parallel espeak-ng processes")
    args = ap.parse_args()

    t0 = time.time()
    work: Path = args.work_dir.resolve()
    train = plan_train(work, args.train)
    clean, noisy = plan_heldout(work, args.heldout)
    check_voice_split(train, clean)
    clips = train + clean + noisy
    with Pool(args.jobs) as pool:
        durations = pool.map(render, clips, chunksize=32)
    for name, split in (("train", train), ("heldout", clean), ("heldout_noisy", noisy)):
        write_jsonl(work / f"{name}.jsonl", (asdict(c) for c in split))
    print(
        f"synthesised {len(clips)} clips ({sum(durations) / 3600:.2f} h, mean {np.mean(durations):.2f} s, "
        f"max {np.max(durations):.2f} s) in {time.time() - t0:.0f} s -> {work}",
        flush=True,
    )


if __name__ == "__main__":
    main()
