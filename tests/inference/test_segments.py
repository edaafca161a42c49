"""Long audio: windows partition the timeline; stitched transcripts keep each token once."""

from __future__ import annotations

import io
import itertools
import threading
import weakref
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from asr_inference.backends import DecodeOptions, Prepared
from asr_inference.segments import MIN_TAIL_S, plan_windows
from hypothesis import given
from hypothesis import strategies as st
from serving import serve, transcribe


@given(
    duration=st.floats(0.1, 4000),
    segment=st.floats(1, 60),
    overlap=st.floats(0, 10),
)
def test_windows_partition_the_timeline(duration: float, segment: float, overlap: float) -> None:
    windows = plan_windows(duration, segment, overlap)
    assert windows[0].start_s == 0 and windows[0].own_start_s == 0
    assert windows[-1].end_s == pytest.approx(duration) and windows[-1].own_end_s == pytest.approx(duration)
    for w in windows:
        assert w.end_s - w.start_s <= segment + 1e-9
        assert w.start_s - 1e-9 <= w.own_start_s <= w.own_end_s <= w.end_s + 1e-9
        if len(windows) > 1:
            assert w.end_s - w.start_s >= min(MIN_TAIL_S, segment) - 1e-9
    for a, b in itertools.pairwise(windows):
        assert a.own_end_s == pytest.approx(b.own_start_s)  # owned parts tile [0, duration] with no gap
        assert b.start_s <= a.end_s + 1e-9  # neighbours touch or overlap


def _speech_with_pauses(speech_files: dict[str, Path], gap_s: float = 1.0) -> tuple[np.ndarray, int]:
    parts = []
    for name in ("digits_a.wav", "command_c.wav", "digits_b.wav", "sentence_d.wav", "sentence_e.wav"):
        clip, rate = sf.read(speech_files[name], dtype="float32")
        parts += [clip, np.zeros(int(gap_s * rate), np.float32)]
    return np.concatenate(parts), rate


async def test_split_audio_is_stitched_with_segment_timestamps(
    sensevoice_dir: Path, speech_files: dict[str, Path]
) -> None:
    samples, rate = _speech_with_pauses(speech_files)
    buf = io.BytesIO()
    sf.write(buf, samples, rate, format="WAV")
    async with serve(
        model=str(sensevoice_dir), segment_s=4, segment_overlap_s=1.0, max_batch_size=8, segmenter="windows"
    ) as (_, client):
        r = await transcribe(
            client, buf.getvalue(), response_format="verbose_json", **{"timestamp_granularities[]": "word"}
        )
    body = r.json()
    segments = body["segments"]
    assert len(segments) == len(plan_windows(len(samples) / rate, 4, 1.0)) > 3
    assert segments[0]["start"] == 0 and segments[-1]["end"] == pytest.approx(body["duration"], abs=0.01)
    for a, b in itertools.pairwise(segments):
        assert a["end"] == pytest.approx(b["start"], abs=0.002)
    # every word sits in the segment that owns its start, in time order, no word twice at the same time
    starts = [w["start"] for w in body["words"]]
    assert starts == sorted(starts) and len(set(starts)) == len(starts)
    # segments hold exactly the kept tokens, in order (a word cut by a boundary is split between two segments)
    assert "".join(s["text"] for s in segments).replace(" ", "") == body["text"].replace(" ", "")
    assert " ".join(w["word"] for w in body["words"]) == body["text"]


def _write_noise_wav(path: Path, minutes: int, rate: int = 16000) -> None:
    minute = (np.random.default_rng(0).standard_normal(rate * 60) * 0.05).astype(np.float32)
    with sf.SoundFile(path, "w", rate, 1, subtype="PCM_16") as f:
        for _ in range(minutes):
            f.write(minute)


async def test_one_hour_upload_stays_within_a_few_batches_of_memory(sensevoice_dir: Path, tmp_path: Path) -> None:
    """A one-hour upload is decoded to a memory map (test_audio.py checks that decoding allocates ~nothing) and
    fed through the model a few windows at a time: the windows whose features are alive at once — what would
    grow with the file if the bound broke — stay at a few batches' worth, not the hour's 63 windows."""
    hour = tmp_path / "hour.wav"
    _write_noise_wav(hour, 60)
    max_batch_size = 4
    async with serve(
        model=str(sensevoice_dir), segment_s=60, max_batch_size=max_batch_size, max_audio_s=4000, segmenter="windows"
    ) as (
        app,
        _,
    ):
        backend, transcriber = app.state.asr.backend, app.state.asr.transcriber
        lock, alive, peak = threading.Lock(), 0, 0
        prepare = backend.prepare

        def freed() -> None:
            nonlocal alive
            with lock:
                alive -= 1

        def counting_prepare(samples: np.ndarray) -> Prepared:
            nonlocal alive, peak
            prepared = prepare(samples)
            weakref.finalize(prepared, freed)  # runs when the item's features are garbage
            with lock:
                alive += 1
                peak = max(peak, alive)
            return prepared

        backend.prepare = counting_prepare
        with hour.open("rb") as fh:
            transcript, _ = await transcriber.transcribe(fh, DecodeOptions(), trusted=True)
    windows = plan_windows(3600, 60, app.state.asr.settings.segment_overlap_s)
    assert transcript.duration == pytest.approx(3600, abs=0.1)
    assert len(transcript.segments) == len(windows) == 63
    # in flight per request: max(2, max_batch_size) windows; plus the batch the batcher still holds
    assert peak <= 3 * max_batch_size, f"{peak} windows' features alive at once"
