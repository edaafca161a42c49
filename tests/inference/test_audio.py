"""Audio decoding: containers, rates and channels → 16 kHz mono; bad input → 4xx with a message."""

from __future__ import annotations

import io
import math
import struct
import tracemalloc
import wave
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from asr_inference import audio
from asr_inference.errors import InvalidAudio, PayloadTooLarge, UnsupportedMediaType
from serving import serve, transcribe

FFMPEG = audio.find_ffmpeg()


def _wav(samples: np.ndarray, rate: int = 16000, subtype: str = "PCM_16") -> bytes:
    buf = io.BytesIO()
    sf.write(buf, samples, rate, format="WAV", subtype=subtype)
    return buf.getvalue()


@pytest.mark.parametrize(
    ("name", "reference"),
    [
        ("sentence_d_44k_stereo.wav", "sentence_d.wav"),
        ("digits_b_22k.flac", "digits_b.wav"),
        ("command_c_48k.ogg", "command_c.wav"),
        ("digits_a.mp3", "digits_a.wav"),
        ("digits_a.m4a", "digits_a.wav"),
    ],
)
def test_decodes_to_16k_mono(name: str, reference: str, speech_files: dict[str, Path]) -> None:
    decoded = audio.decode(speech_files[name].read_bytes(), max_audio_s=60, ffmpeg=FFMPEG)
    ref = audio.decode(speech_files[reference].read_bytes(), max_audio_s=60, ffmpeg=FFMPEG)
    assert decoded.samples.dtype == np.float32 and decoded.samples.ndim == 1
    # same speech at a different rate/container: same length at 16 kHz (mp3 adds encoder padding)
    assert abs(decoded.duration_s - ref.duration_s) < (0.08 if name.endswith((".mp3", ".m4a")) else 0.01)
    n = min(len(decoded.samples), len(ref.samples))
    if not name.endswith((".mp3", ".m4a", ".ogg")):  # lossless: the resampled waveform follows the original closely
        corr = np.corrcoef(decoded.samples[:n], ref.samples[:n])[0, 1]
        assert corr > 0.95


def test_m4a_without_ffmpeg_is_415(speech_files: dict[str, Path]) -> None:
    """libsndfile reads wav/flac/ogg (and mp3 since 1.1); AAC in MP4 needs ffmpeg."""
    with pytest.raises(UnsupportedMediaType, match="ffmpeg"):
        audio.decode(speech_files["digits_a.m4a"].read_bytes(), max_audio_s=60, ffmpeg=None)


@pytest.mark.parametrize(
    ("payload", "error", "message"),
    [
        (b"", InvalidAudio, "empty"),
        (b"RIFF\x24\x00\x00\x00WAVEfmt garbage follows" * 3, InvalidAudio, "could not decode"),
        (_wav(np.zeros(400, np.float32)), InvalidAudio, "too short"),
        (_wav(np.zeros(0, np.float32)), InvalidAudio, "no audio"),
        (_wav(np.array([0.1, np.nan] * 8000, np.float32), subtype="FLOAT"), InvalidAudio, "NaN"),
        (_wav(np.zeros(16000 * 12, np.float32)), PayloadTooLarge, "at most 10 s"),
    ],
    ids=["empty", "corrupt-wav", "too-short", "no-samples", "nan", "too-long"],
)
def test_bad_audio_is_rejected(payload: bytes, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        audio.decode(payload, max_audio_s=10, ffmpeg=FFMPEG)


def test_lying_header_decoding_to_a_few_samples_is_400() -> None:
    """A WAV header claiming a long data chunk over a truncated body decodes to a handful of samples."""
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(np.zeros(16000, np.int16).tobytes())
    truncated = buf.getvalue()[: 44 + 20]  # header says 1 s; 10 samples remain
    with pytest.raises(InvalidAudio, match="too short"):
        audio.decode(truncated, max_audio_s=10, ffmpeg=None)


def test_long_audio_is_memory_mapped_not_held(tmp_path: Path) -> None:
    """A one-hour upload decodes to a memory-mapped temp file; Python allocations stay at a few blocks."""
    path = tmp_path / "hour.wav"
    rate, seconds = 8000, 3600  # 8 kHz source: also exercises the streaming resampler
    tone = (0.1 * np.sin(2 * np.pi * 220 * np.arange(rate * 60) / rate)).astype(np.float32)
    with sf.SoundFile(path, "w", rate, 1, subtype="PCM_16") as f:
        for _ in range(seconds // 60):
            f.write(tone)
    tracemalloc.start()
    with path.open("rb") as fh:
        decoded = audio.decode(fh, max_audio_s=4000, ffmpeg=None)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    full_size = seconds * 16000 * 4
    assert isinstance(decoded.samples, np.memmap)
    assert math.isclose(decoded.duration_s, seconds, abs_tol=0.05)
    assert peak < full_size / 10, f"peak Python allocation {peak / 1e6:.1f} MB for a {full_size / 1e6:.0f} MB decode"
    decoded.close()


async def test_http_errors_are_json_4xx(sensevoice_dir: Path, speech_files: dict[str, Path]) -> None:
    async with serve(model=str(sensevoice_dir), max_audio_s=5, max_upload_mb=0.5) as (_, client):
        empty = await transcribe(client, b"")
        corrupt = await transcribe(client, b"RIFF" + bytes(range(200)))
        too_long = await transcribe(client, speech_files["longer_f.wav"])  # 7.9 s > 5 s
        under_limit = await transcribe(client, speech_files["sentence_d_44k_stereo.wav"])  # 468 kB < 0.5 MB
        huge = await transcribe(client, b"RIFF" + bytes(700_000))
        missing = await client.post("/v1/audio/transcriptions", data={"model": "x"})
    assert (empty.status_code, empty.json()["error"]["code"]) == (400, "invalid_audio")
    assert (corrupt.status_code, corrupt.json()["error"]["code"]) == (400, "invalid_audio")
    assert too_long.status_code == 413 and "at most 5 s" in too_long.json()["error"]["message"]
    assert under_limit.status_code == 200
    assert huge.status_code == 413 and huge.json()["error"]["code"] == "payload_too_large"
    assert missing.status_code == 400 and "file" in missing.json()["error"]["message"]


async def test_unsupported_format_without_ffmpeg_is_415(
    sensevoice_dir: Path, speech_files: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(audio, "find_ffmpeg", lambda: None)
    async with serve(model=str(sensevoice_dir)) as (_, client):
        m4a = await transcribe(client, speech_files["digits_a.m4a"])
        flac = await transcribe(client, speech_files["digits_b_22k.flac"])
    assert m4a.status_code == 415 and "ffmpeg" in m4a.json()["error"]["message"]
    assert flac.status_code == 200


def _wav_declaring(rate: int, seconds: float = 1.0) -> bytes:
    """16-bit mono PCM whose header claims `rate` (libsndfile cannot write the absurd ones itself)."""
    data = np.zeros(int(16000 * seconds), dtype="<i2").tobytes()
    fmt = struct.pack("<HHIIHH", 1, 1, rate, (rate * 2) & 0xFFFFFFFF, 2, 16)
    body = b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt + b"data" + struct.pack("<I", len(data)) + data
    return b"RIFF" + struct.pack("<I", len(body)) + body


@pytest.mark.parametrize("rate", [0, 1, 3999, 384_001, 4_000_000_000])
def test_absurd_sample_rates_are_refused_by_name(rate: int) -> None:
    """1 Hz read 1 s of samples as 4.4 h (413); 0 and 4 GHz reached ffmpeg and came back as 'invalid data'."""
    with pytest.raises(InvalidAudio, match=f"unsupported sample rate {rate} Hz"):
        audio.decode(_wav_declaring(rate), max_audio_s=3600, ffmpeg=audio.find_ffmpeg())


@pytest.mark.parametrize("rate", [4000, 8000, 384_000])
def test_sample_rates_at_the_edges_are_accepted(rate: int) -> None:
    decoded = audio.decode(_wav_declaring(rate, seconds=3.0), max_audio_s=3600, ffmpeg=None)
    assert decoded.duration_s == pytest.approx(3 * 16000 / rate, rel=1e-3)
