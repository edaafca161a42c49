"""VAD vs fixed windows on long recordings with pauses: word error rate and where the cuts fall.

Builds recordings from the demo model's held-out clips (tests/data/demo_heldout, real espeak-ng speech the model
never trained on) with pauses of known length between them, so the truth is known: each clip's text and its span
in the file. Each recording is transcribed by the demo model in this process (`create_app`, no network) with
`--segmenter vad` and with `--segmenter windows`, as verbose_json, and reported:

  WER          the whole transcript against the clips' texts in order (the model card's normaliser)
  WER alone    the same clips transcribed one by one: what the model does with no cut at all
  cuts         how many times the file was cut (segment boundaries; for windows, the stitch points)
  in a clip    cuts inside a clip's sound (between its first and last audible sample): a cut between two words at
               best, through a word at worst
  on sound     cuts whose ±10 ms is audible (RMS above -40 dB of the file's peak): through a word
  sound kept   the share of audible 10-ms frames inside some segment (VAD could drop speech; windows cover all)
  edge error   for each segment, how far its start lies before the first audible frame in it and its end after the
               last (VAD's padding around the speech it found), mean in ms

Usage: .venv/bin/python tools/segmenter_compare.py [--minutes 3] [--seeds 3]   (prints a Markdown table)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import itertools
import json
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import soundfile as sf

with contextlib.redirect_stdout(sys.stderr):  # funasr prints its version on import: keep stdout the table
    import asr_inference.app  # noqa: F401

ROOT = Path(__file__).resolve().parents[1]
HELDOUT = ROOT / "tests" / "data" / "demo_heldout"
RATE = 16000
FRAME = RATE // 100  # 10 ms
sys.path.insert(0, str(ROOT / "tools" / "demo_model"))
import common  # noqa: E402  (the demo model's normaliser and word-error counter)


@dataclass
class Recording:
    samples: np.ndarray
    spans: list[tuple[float, float]]
    texts: list[str]

    def wav(self) -> bytes:
        buf = io.BytesIO()
        sf.write(buf, self.samples, RATE, format="WAV", subtype="PCM_16")
        return buf.getvalue()


def audible(samples: np.ndarray) -> np.ndarray:
    """Per 10-ms frame: RMS above -40 dB of the peak."""
    frames = samples[: len(samples) // FRAME * FRAME].reshape(-1, FRAME)
    rms = np.sqrt((frames.astype(np.float64) ** 2).mean(axis=1))
    return rms > np.abs(samples).max() * 10 ** (-40 / 20)


def build(minutes: float, gap_s: tuple[float, float], seed: int) -> Recording:
    """Held-out clips (trimmed to their sound) in a seeded random order, repeated until `minutes`, each after a
    pause drawn from `gap_s`."""
    transcripts: dict[str, str] = json.loads((HELDOUT / "transcripts.json").read_text())
    clips = {}
    for name in transcripts:
        clip = sf.read(HELDOUT / name, dtype="float32")[0]
        sound = np.flatnonzero(audible(clip))
        clips[name] = clip[sound[0] * FRAME : (sound[-1] + 1) * FRAME]
    rng = np.random.default_rng(seed)
    parts, spans, texts, t = [], [], [], 0.0
    while t < minutes * 60:
        for name in rng.permutation(sorted(clips)):
            gap = np.zeros(int(rng.uniform(*gap_s) * RATE), np.float32)
            parts += [gap, clips[name]]
            t += len(gap) / RATE
            spans.append((t, t + len(clips[name]) / RATE))
            texts.append(transcripts[name])
            t += len(clips[name]) / RATE
    parts.append(np.zeros(int(gap_s[1] * RATE), np.float32))
    return Recording(np.concatenate(parts), spans, texts)


def wer(pairs: list[tuple[str, str]]) -> float:
    errors, words = common.word_errors([(common.normalize(r), common.normalize(h)) for r, h in pairs])
    return errors / max(words, 1)


def cut_points(segments: list[dict]) -> list[float]:
    """Where one segment hands over to the next: the middle of the gap (VAD) or of the overlap (windows)."""
    return [(a["end"] + b["start"]) / 2 for a, b in itertools.pairwise(segments)]


def placement(rec: Recording, segments: list[dict]) -> dict[str, float]:
    cuts = cut_points(segments)
    sound = audible(rec.samples)
    frame_of = lambda t: min(int(t * RATE) // FRAME, len(sound) - 1)  # noqa: E731
    covered = np.zeros(len(sound), bool)
    edges = []
    for seg in segments:
        a, b = frame_of(seg["start"]), frame_of(seg["end"]) + 1
        covered[a:b] = True
        heard = np.flatnonzero(sound[a:b])
        if len(heard):
            edges += [heard[0] * 10, (b - a - 1 - heard[-1]) * 10]
    return {
        "cuts": len(cuts),
        "in_clip": sum(any(s < c < e for s, e in rec.spans) for c in cuts),
        "on_sound": sum(bool(sound[max(frame_of(c) - 1, 0) : frame_of(c) + 2].any()) for c in cuts),
        "sound_kept": float((covered & sound).sum() / max(sound.sum(), 1)),
        "edge_ms": float(np.mean(edges)) if edges else float("nan"),
    }


async def transcribe(client: httpx.AsyncClient, wav: bytes) -> dict:
    form = {"response_format": "verbose_json", "timestamp_granularities[]": "segment"}
    response = await client.post("/v1/audio/transcriptions", files={"file": ("a.wav", wav)}, data=form)
    response.raise_for_status()
    return response.json()


@contextlib.asynccontextmanager
async def demo_server(**settings: Any) -> AsyncIterator[httpx.AsyncClient]:
    """The demo model's app in this process, warm, and a client for it (no network)."""
    from asr_inference.app import create_app
    from asr_inference.config import Settings

    app = create_app(Settings(model=None, device="cpu", cache_entries=0, **settings))
    async with app.router.lifespan_context(app):
        with contextlib.redirect_stdout(sys.stderr):  # funasr prints its version as it loads: stdout is the table
            while not app.state.asr.ready.is_set():
                assert app.state.asr.load_error is None, app.state.asr.load_error
                await asyncio.sleep(0.05)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://local", timeout=600) as client:
            yield client


async def measure(segmenter: str, segment_s: float, recordings: list[Recording]) -> dict[str, float]:
    async with demo_server(segmenter=segmenter, segment_s=segment_s) as client:
        pairs, stats = [], []
        for rec in recordings:
            body = await transcribe(client, rec.wav())
            pairs.append((" ".join(rec.texts), body["text"]))
            stats.append(placement(rec, body["segments"]))
    totals = {key: float(np.mean([s[key] for s in stats])) for key in stats[0]}
    return {"wer": wer(pairs), **totals}


async def alone_wer(recordings: list[Recording]) -> float:
    """Each clip as its own request (shorter than a segment: never cut)."""
    async with demo_server() as client:
        pairs = []
        for rec in recordings:
            for (s, e), text in zip(rec.spans, rec.texts, strict=True):
                clip = Recording(rec.samples[int(s * RATE) : int(e * RATE)], [], [])
                pairs.append((text, (await transcribe(client, clip.wav()))["text"]))
    return wer(pairs)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=3.0, help="length of each recording [default: 3]")
    parser.add_argument("--seeds", type=int, default=3, help="recordings per pause length [default: 3]")
    args = parser.parse_args()
    pauses = {"pauses 0.7-1.5 s": (0.7, 1.5), "pauses 0.25-0.5 s": (0.25, 0.5)}
    columns = ["recording", "segmenter", "segment_s", "WER", "WER alone", "cuts", "in a clip", "on sound"]
    print("| " + " | ".join([*columns, "sound kept", "edge error"]) + " |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for label, gap in pauses.items():
        recordings = [build(args.minutes, gap, seed) for seed in range(args.seeds)]
        alone = await alone_wer(recordings)
        for segmenter in ("vad", "windows"):
            for segment_s in (30.0, 10.0):
                m = await measure(segmenter, segment_s, recordings)
                print(
                    f"| {label}, {args.minutes:g} min ×{args.seeds} | {segmenter} | {segment_s:g} | {m['wer']:.3f} | "
                    f"{alone:.3f} | {m['cuts']:.1f} | {m['in_clip']:.1f} | {m['on_sound']:.1f} | "
                    f"{m['sound_kept']:.3f} | {m['edge_ms']:.0f} ms |",
                    flush=True,
                )


if __name__ == "__main__":
    asyncio.run(main())
