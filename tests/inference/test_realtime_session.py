"""A realtime session's audio bookkeeping on its own (realtime_session.py): turn detection knobs having effect, the
buffer bounds, commits. Synthetic VAD probabilities, one per 32-ms frame; no model."""

from __future__ import annotations

import numpy as np
from asr_inference.realtime_session import AudioTimeline
from asr_inference.vad import FRAME, VadParams

MS_PER_FRAME = FRAME * 1000 // 16000  # 32


def _feed(timeline: AudioTimeline, probs: list[float], vad: VadParams) -> list:
    """Append one frame of audio per probability and run turn detection over it; every Happenings in order."""
    out = []
    for p in probs:
        start = timeline.total
        timeline.append(np.full(FRAME, 0.1, np.float32))
        out.append(timeline.detect(np.array([p], np.float32), start, vad))
    return out


def _utterances(happenings: list) -> list:
    return [u for h in happenings for u in h.utterances]


def test_threshold_decides_what_is_speech() -> None:
    probs = [0.0] * 20 + [0.6] * 30 + [0.0] * 40
    low = _feed(AudioTimeline(30), probs, VadParams(threshold=0.5, silence_duration_ms=500))
    high = _feed(AudioTimeline(30), probs, VadParams(threshold=0.7, silence_duration_ms=500))
    assert len(_utterances(low)) == 1 and _utterances(high) == []


def test_prefix_padding_moves_the_start_back_and_the_end_out() -> None:
    probs = [0.0] * 40 + [0.9] * 30 + [0.0] * 40
    spans = {}
    for padding in (0, 320):
        (utt,) = _utterances(_feed(AudioTimeline(30), probs, VadParams(prefix_padding_ms=padding)))
        spans[padding] = (utt.start_ms, utt.end_ms, len(utt.samples))
    assert spans[0][0] == 40 * MS_PER_FRAME and spans[320][0] == 40 * MS_PER_FRAME - 320
    assert spans[320][1] - spans[0][1] == 320  # as much kept after the speech as before it
    assert spans[320][2] - spans[0][2] == 2 * 320 * 16  # samples: 320 ms more on each side


def test_silence_keeps_only_the_prefix_padding_in_memory() -> None:
    timeline = AudioTimeline(30)
    vad = VadParams(prefix_padding_ms=300)
    _feed(timeline, [0.0] * 2000, vad)  # 64 s of silence
    assert len(timeline._buf) <= 300 * 16 + FRAME
    assert timeline.open_samples() == 0 and len(timeline.open_audio()) == 0


def test_never_ending_speech_is_cut_at_the_cap_and_goes_on_as_a_new_item() -> None:
    timeline = AudioTimeline(2.0)  # max utterance 2 s = 62.5 frames
    happenings = _feed(timeline, [0.0] * 5 + [0.9] * 200, VadParams(prefix_padding_ms=0))
    cut = _utterances(happenings)
    assert len(cut) >= 2 and all(len(u.samples) <= 2 * 16000 + FRAME for u in cut)
    started = [item for h in happenings for item, _ in h.started]
    assert len(set(started)) == len(started) == len(cut) + 1  # each cut opens a new item; the last is still open
    assert timeline.item_id == started[-1] and 0 < timeline.open_samples() <= 2 * 16000


def test_commit_without_turn_detection_takes_everything_buffered() -> None:
    timeline = AudioTimeline(30)
    timeline.append(np.ones(16000, np.float32))
    assert timeline.over_limit() is False
    utt = timeline.commit()
    assert utt is not None and len(utt.samples) == 16000 and utt.start_ms == 0
    assert timeline.commit() is None  # nothing left
