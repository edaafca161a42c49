"""One realtime transcription session's audio state: input format, turn detection, utterance buffer.

Pure bookkeeping, no I/O: `feed()` takes 16 kHz samples plus their VAD probabilities and returns what happened
(speech started / stopped, utterances to transcribe). The buffer is bounded: outside speech only the prefix
padding is kept; an utterance reaching `max_utterance_s` is committed at once (and a new one starts if the
speaker goes on), so neither a silent nor a never-pausing client grows memory.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .chunking import vad_params_from
from .errors import InvalidRequest
from .vad import EXIT_MARGIN, FRAME, SAMPLE_RATE, VadParams

RATES = (16000, 24000)


@dataclass
class SessionConfig:
    rate: int = 24000  # OpenAI's pcm16 default
    language: str = "auto"
    prompt: str | None = None
    turn_detection: VadParams | None = field(default_factory=VadParams)  # None: the client commits

    def describe(self, model: str) -> dict[str, Any]:
        td = self.turn_detection
        turn: dict[str, Any] | None = None
        if td is not None:
            turn = {"type": "server_vad", "threshold": td.threshold, "prefix_padding_ms": td.prefix_padding_ms,
                    "silence_duration_ms": td.silence_duration_ms}  # fmt: skip
        return {
            "object": "realtime.transcription_session",
            "input_audio_format": "pcm16",
            "audio": {"input": {"format": {"type": "audio/pcm", "rate": self.rate}}},
            "input_audio_transcription": {"model": model, "language": self.language, "prompt": self.prompt or ""},
            "turn_detection": turn,
        }


def apply_update(config: SessionConfig, session: Mapping[str, Any], base_vad: VadParams) -> SessionConfig:
    """Both shapes: beta `transcription_session.update` (flat) and GA `session.update` (`audio.input.*`)."""
    if not isinstance(session, Mapping):
        raise InvalidRequest("session must be an object")
    audio_in = session.get("audio", {}).get("input", {}) if isinstance(session.get("audio"), Mapping) else {}
    fmt = audio_in.get("format", session.get("input_audio_format"))
    rate = config.rate
    if isinstance(fmt, Mapping):
        if fmt.get("type", "audio/pcm") != "audio/pcm":
            raise InvalidRequest("only audio/pcm (16-bit little-endian mono) input is supported")
        rate = int(fmt.get("rate", rate))
    elif fmt is not None and fmt != "pcm16":
        raise InvalidRequest("input_audio_format must be pcm16")
    if rate not in RATES:
        raise InvalidRequest(f"input rate must be one of {RATES}")
    transcription = audio_in.get("transcription", session.get("input_audio_transcription")) or {}
    language = str(transcription.get("language") or config.language).strip().lower()
    prompt = transcription.get("prompt", config.prompt) or None
    turn_detection = config.turn_detection
    key = "turn_detection"
    if key in audio_in or key in session:
        td = audio_in.get(key, session.get(key))
        if td is None:
            turn_detection = None
        elif isinstance(td, Mapping) and td.get("type") == "server_vad":
            turn_detection = vad_params_from(td, base_vad, where="turn_detection")
        else:
            raise InvalidRequest("turn_detection must be null or an object with type 'server_vad'")
    return SessionConfig(rate, language, prompt, turn_detection)


@dataclass
class Utterance:
    item_id: str
    samples: np.ndarray
    start_ms: int
    end_ms: int


@dataclass
class Happenings:
    started: list[tuple[str, int]] = field(default_factory=list)  # (item_id, audio_start_ms)
    stopped: list[tuple[str, int]] = field(default_factory=list)  # (item_id, audio_end_ms)
    utterances: list[Utterance] = field(default_factory=list)


def _new_item() -> str:
    return "item_" + uuid.uuid4().hex[:20]


class AudioTimeline:
    """The session's 16 kHz audio since the last commit, with server-VAD turn detection over whole frames."""

    def __init__(self, max_utterance_s: float) -> None:
        self.max_samples = int(max_utterance_s * SAMPLE_RATE)
        self._buf = np.zeros(0, np.float32)
        self._buf_start = 0  # absolute sample index of _buf[0]
        self.total = 0  # samples received
        self.item_id: str | None = None  # the open utterance (speech started, not yet stopped)
        self._utt_start = 0
        self._quiet_since: int | None = None

    def _ms(self, sample: int) -> int:
        return sample * 1000 // SAMPLE_RATE

    def append(self, samples: np.ndarray) -> None:
        self._buf = np.concatenate([self._buf, samples])
        self.total += len(samples)

    def _cut(self, start: int, end: int) -> np.ndarray:
        a, b = max(start - self._buf_start, 0), max(end - self._buf_start, 0)
        return np.array(self._buf[a:b], np.float32)

    def _forget_before(self, sample: int) -> None:
        drop = min(max(sample - self._buf_start, 0), len(self._buf))
        self._buf = self._buf[drop:]
        self._buf_start += drop

    def _close(self, end: int, out: Happenings) -> None:
        assert self.item_id is not None
        out.utterances.append(
            Utterance(self.item_id, self._cut(self._utt_start, end), self._ms(self._utt_start), self._ms(end))
        )
        self._forget_before(end)
        self.item_id, self._quiet_since = None, None

    def detect(self, probs: np.ndarray, first_frame_sample: int, vad: VadParams) -> Happenings:
        """Advance turn detection over frames starting at absolute sample `first_frame_sample`."""
        out = Happenings()
        pad = vad.prefix_padding_ms * SAMPLE_RATE // 1000
        silence = vad.silence_duration_ms * SAMPLE_RATE // 1000
        for k, p in enumerate(probs):
            at = first_frame_sample + k * FRAME
            if self.item_id is None:
                if p >= vad.threshold:
                    self.item_id, self._utt_start, self._quiet_since = _new_item(), max(at - pad, 0), None
                    out.started.append((self.item_id, self._ms(self._utt_start)))
                else:
                    self._forget_before(at + FRAME - pad)  # keep only the prefix padding
                continue
            if p >= vad.threshold:
                self._quiet_since = None
            elif p < vad.threshold - EXIT_MARGIN and self._quiet_since is None:
                self._quiet_since = at
            if self._quiet_since is not None and at + FRAME - self._quiet_since >= silence:
                end = min(self._quiet_since + pad, at + FRAME)
                out.stopped.append((self.item_id, self._ms(end)))
                self._close(end, out)
            elif at + FRAME - self._utt_start >= self.max_samples:  # never-ending speech: cut, go on
                item = self.item_id
                self._close(at + FRAME, out)
                out.stopped.append((item, self._ms(at + FRAME)))
                self.item_id, self._utt_start = _new_item(), at + FRAME
                out.started.append((self.item_id, self._ms(self._utt_start)))
        return out

    def commit(self) -> Utterance | None:
        """Client commit (or end of session): everything buffered becomes one utterance."""
        out = Happenings()
        if self.item_id is None:
            if len(self._buf) == 0:
                return None
            self.item_id, self._utt_start = _new_item(), self._buf_start
        self._close(self.total, out)
        return out.utterances[0]

    def open_samples(self) -> int:
        """Samples of the open utterance so far (0 when none is open)."""
        return self.total - self._utt_start if self.item_id is not None else 0

    def open_audio(self) -> np.ndarray:
        """A copy of the open utterance so far: what a partial transcript decodes."""
        return self._cut(self._utt_start, self.total) if self.item_id is not None else np.zeros(0, np.float32)

    def over_limit(self) -> bool:
        """Without turn detection the buffer only grows until the client commits: past the cap we commit."""
        return self.item_id is None and len(self._buf) >= self.max_samples

    def clear(self) -> None:
        self._forget_before(self.total)
        self.item_id, self._quiet_since = None, None
