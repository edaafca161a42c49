"""The VAD segmenter (silero-vad) on the demo model: long uploads are cut at pauses, never inside speech."""

from __future__ import annotations

import itertools
import json
import tracemalloc
from pathlib import Path

import long_speech
import numpy as np
import pytest
from asr_inference.vad import FRAME_S, VadParams, plan_speech_segments
from requirements_check import import_or_skip
from serving import serve, transcribe

import_or_skip("silero_vad", "it comes with the inference extra (pip install -e '.[inference]')")


def test_plan_caps_length_and_merges_tiny_bursts() -> None:
    """Synthetic probabilities: a 20 s run of speech is cut (at its quietest frame) into pieces of at most
    `max_segment_s`; a 0.2 s burst next to a longer region joins it."""
    probs = np.zeros(int(40 / FRAME_S), np.float32)
    probs[int(1 / FRAME_S) : int(21 / FRAME_S)] = 0.9
    probs[int(11 / FRAME_S)] = 0.6  # the quietest point inside the long run
    probs[int(23 / FRAME_S) : int(23.2 / FRAME_S)] = 0.9
    probs[int(25 / FRAME_S) : int(27 / FRAME_S)] = 0.9
    windows = plan_speech_segments(probs, 40.0, VadParams(min_speech_ms=100), max_segment_s=12)
    assert all(w.end_s - w.start_s <= 12 + 1e-6 for w in windows)
    assert all(a.end_s <= b.start_s + 1e-9 for a, b in itertools.pairwise(windows))
    spans = [(round(w.start_s, 1), round(w.end_s, 1)) for w in windows]
    assert len(spans) == 3, spans  # [1, 11) [11, 21) and the burst merged with [25, 27)
    assert spans[0][1] == pytest.approx(11, abs=0.1)
    assert spans[2][0] < 23 and spans[2][1] > 27 - 0.1


async def test_long_upload_is_cut_at_pauses_with_original_timestamps() -> None:
    audio = long_speech.build(clips=8)
    async with serve(model=None, device="cpu", ncpu=1, segment_s=8, cache_entries=0) as (_, client):
        r = await transcribe(client, audio.wav(), response_format="verbose_json")
        slow_turns = json.dumps({"type": "server_vad", "silence_duration_ms": 3000})
        windows = await transcribe(client, audio.wav(), response_format="verbose_json", chunking_strategy=slow_turns)
    assert r.status_code == 200, r.text
    body = r.json()
    segments = body["segments"]
    # every clip lies whole inside one segment: cuts fall in pauses only (fixed 8 s windows would cut clips);
    # a clip with under 1 s of speech may share its segment with a neighbour (tiny segments are merged)
    for start, end in audio.spans:
        holders = [
            s for s in segments if s["start"] <= start + 0.6 and s["end"] >= end - 0.6
        ]  # clips have silence in them
        assert len(holders) == 1, (start, end, [(s["start"], s["end"]) for s in segments])
    assert len(audio.spans) - 2 <= len(segments) <= len(audio.spans)
    assert all(s["end"] - s["start"] <= 8 for s in segments)
    assert segments[-1]["end"] <= body["duration"]
    assert long_speech.wer(" ".join(audio.texts), body["text"]) <= 0.10
    # server_vad's silence_duration_ms is honoured: pauses shorter than 3 s no longer end speech, so the
    # segments are the 8 s cap's pieces of longer runs, not one per clip
    assert windows.status_code == 200
    assert len(windows.json()["segments"]) < len(segments)


async def test_chunking_strategy_is_validated() -> None:
    async with serve(model=None, device="cpu", ncpu=1) as (_, client):
        bad = await transcribe(client, long_speech.build(clips=1).wav(), chunking_strategy='{"type": "magic"}')
        knob = await transcribe(
            client, long_speech.build(clips=1).wav(), chunking_strategy='{"type": "server_vad", "threshold": 3}'
        )
        auto = await transcribe(client, long_speech.build(clips=1).wav(), chunking_strategy="auto")
    assert bad.status_code == 400 and "server_vad" in bad.json()["error"]["message"]
    assert knob.status_code == 400 and "threshold" in knob.json()["error"]["message"]
    assert auto.status_code == 200


def _whole_copy_probabilities(vad: object, samples: np.ndarray) -> np.ndarray:
    """The scoring it replaces: the whole recording copied into one padded float32 array first."""
    from asr_inference.vad import CONTEXT, FRAME, MAX_LANES, MIN_LANE_FRAMES

    n_frames = -(-len(samples) // FRAME)
    lanes = max(1, min(MAX_LANES, n_frames // MIN_LANE_FRAMES))
    per_lane = -(-n_frames // lanes)
    padded = np.zeros(lanes * per_lane * FRAME + CONTEXT, np.float32)
    padded[CONTEXT : CONTEXT + len(samples)] = samples
    probs, rnn = np.zeros((lanes, per_lane), np.float32), None
    starts = np.arange(lanes) * per_lane * FRAME
    for step in range(per_lane):
        frames = np.stack([padded[o : o + CONTEXT + FRAME] for o in starts + step * FRAME])
        probs[:, step], rnn = vad._forward(frames, rnn)  # type: ignore[attr-defined]
    return probs.reshape(-1)[:n_frames]


def test_vad_scores_a_memory_mapped_upload_without_copying_it(tmp_path: Path) -> None:
    """Ten minutes of speech with pauses, memory-mapped as uploads are: the probabilities equal those of the
    whole-copy scoring, and what the scoring allocates stays far below the recording's 37 MiB of float32."""
    from asr_inference.vad import SileroVad

    speech = long_speech.build(clips=4).samples
    ten_minutes = np.resize(speech, 600 * 16000).astype(np.float32)
    path = tmp_path / "upload.f32"
    ten_minutes.tofile(path)
    mapped = np.memmap(path, dtype=np.float32, mode="r")
    vad = SileroVad()
    expected = _whole_copy_probabilities(vad, ten_minutes)
    tracemalloc.start()
    probs = vad.probabilities(mapped)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    np.testing.assert_array_equal(probs, expected)
    assert (probs > 0.5).any() and (probs < 0.5).any()  # speech and pauses: the scores are real
    assert peak < 12 * 2**20, f"scoring allocated {peak / 2**20:.1f} MiB"  # a copy alone would be 37 MiB
