"""Transcript model and the OpenAI response formats: json, text, verbose_json, srt, vtt."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, get_args

ResponseFormat = Literal["json", "text", "verbose_json", "srt", "vtt"]
RESPONSE_FORMATS: tuple[str, ...] = get_args(ResponseFormat)


@dataclass
class Segment:
    id: int
    start: float
    end: float
    text: str
    emotion: str | None = None
    event: str | None = None


@dataclass
class Word:
    word: str
    start: float
    end: float


@dataclass
class Transcript:
    text: str
    duration: float
    language: str | None
    segments: list[Segment]
    words: list[Word] | None = None
    max_batch_size: int = 0  # largest batch any of its items ran in (for the request log)
    queue_s: float = 0.0  # longest wait of any of its items for a batch (Server-Timing `queue`)
    inference_s: float = 0.0  # forward time of the batches its items ran in (Server-Timing `inference`)


def to_json(t: Transcript) -> dict[str, Any]:
    return {"text": t.text}


def to_verbose_json(t: Transcript, *, words: bool, model: str) -> dict[str, Any]:
    """OpenAI's verbose_json, plus `emotion`/`event` per segment (SenseVoice rich tags, never in the text)."""
    body: dict[str, Any] = {
        "task": "transcribe",
        "language": t.language or "unknown",
        "duration": round(t.duration, 3),
        "text": t.text,
        "segments": [
            {
                "id": s.id,
                "seek": 0,
                "start": round(s.start, 3),
                "end": round(s.end, 3),
                "text": s.text,
                "tokens": [],
                "temperature": 0.0,
                "avg_logprob": 0.0,
                "compression_ratio": 0.0,
                "no_speech_prob": 0.0,
                "emotion": s.emotion,
                "event": s.event,
            }
            for s in t.segments
        ],
        "model": model,
    }
    if words:
        body["words"] = [{"word": w.word, "start": round(w.start, 3), "end": round(w.end, 3)} for w in t.words or []]
    return body


def _stamp(seconds: float, sep: str) -> str:
    ms = round(seconds * 1000)
    h, ms = divmod(ms, 3_600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def to_srt(t: Transcript) -> str:
    blocks = [
        f"{i}\n{_stamp(s.start, ',')} --> {_stamp(s.end, ',')}\n{s.text}\n"
        for i, s in enumerate((s for s in t.segments if s.text), start=1)
    ]
    return "\n".join(blocks)


def to_vtt(t: Transcript) -> str:
    cues = [f"{_stamp(s.start, '.')} --> {_stamp(s.end, '.')}\n{s.text}\n" for s in t.segments if s.text]
    return "WEBVTT\n\n" + "\n".join(cues)
