"""Token times cover the audio: the last token of a real clip ends near the clip's end, for every family."""

from __future__ import annotations

from pathlib import Path

import pytest
import soundfile as sf
from asr_inference.backends import DecodeOptions
from asr_inference.backends.funasr_backend import FunASRBackend
from asr_inference.config import Settings

CLIPS = ["sentence_d.wav", "longer_f.wav"]


@pytest.fixture(scope="module")
def paraformer(paraformer_dir: Path) -> FunASRBackend:
    backend = FunASRBackend(Settings(model=str(paraformer_dir), device="cpu", ncpu=1))
    backend.load()
    return backend


@pytest.mark.parametrize("clip", CLIPS)
def test_paraformer_last_token_ends_near_the_end_of_the_audio(
    paraformer: FunASRBackend, speech_files: dict[str, Path], clip: str
) -> None:
    """The CIF predictor fires at the encoder's 60 ms frames; timed as 20 ms frames (funasr's helper default,
    meant for BiCif's upsampled frames) the last token of a 7.89 s clip ended at 2.66 s."""
    samples, rate = sf.read(speech_files[clip], dtype="float32")
    duration = len(samples) / rate
    result = paraformer.transcribe_batch([paraformer.prepare(samples)], [DecodeOptions()])[0]
    assert result.tokens, "the tiny Paraformer's predictor fires on real speech"
    last = result.tokens[-1]
    assert 0.85 * duration <= last.end_s <= duration + 0.12  # one LFR frame of slack past the end
    assert all(0.0 <= t.start_s <= t.end_s for t in result.tokens)
    assert [t.start_s for t in result.tokens] == sorted(t.start_s for t in result.tokens)
