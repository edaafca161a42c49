"""Audio decoding: any upload → 16 kHz mono float32, with the checks that keep bad input away from the model.

wav/flac/ogg/aiff decode in-process through libsndfile (soundfile); anything else goes through ffmpeg when it is
installed (else 415). Resampling uses soxr (fast, no JIT warm-up). Long audio is decoded into a temporary file
and memory-mapped, so a one-hour upload never sits in the process's memory at once: only the windows being
worked on are paged in.
"""

from __future__ import annotations

import contextlib
import io
import os
import resource
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np
import soundfile as sf
import soxr

from .errors import ASRError, InvalidAudio, PayloadTooLarge, UnsupportedMediaType
from .tempfiles import process_temp_dir

SAMPLE_RATE = 16_000
MIN_SAMPLE_RATE, MAX_SAMPLE_RATE = 4_000, 384_000  # telephone-band to studio; anything else is a broken header
MIN_AUDIO_S = 0.1  # shorter input (a truncated or lying header) makes funasr's frontend crash
# Containers libsndfile reads; their magic bytes tell a corrupt file (400) from an unknown format (415).
_SNDFILE_MAGIC = (b"RIFF", b"RF64", b"fLaC", b"OggS", b"FORM")
_IN_MEMORY_MAX_S = 120.0  # decode longer audio to a memory-mapped temp file
_BLOCK_FRAMES = 16_000 * 10


@dataclass
class Audio:
    """Decoded 16 kHz mono audio. `samples` may be a read-only memory map for long inputs."""

    samples: np.ndarray
    _tmp_path: str | None = None

    @property
    def duration_s(self) -> float:
        return len(self.samples) / SAMPLE_RATE

    def close(self) -> None:
        if self._tmp_path is not None:
            self.samples = np.zeros(0, dtype=np.float32)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._tmp_path)
            self._tmp_path = None


def find_ffmpeg() -> str | None:
    """ffmpeg from PATH, else the binary the `imageio-ffmpeg` wheel ships (when installed)."""
    exe = shutil.which("ffmpeg")
    if exe:
        return exe
    try:
        import imageio_ffmpeg

        return str(imageio_ffmpeg.get_ffmpeg_exe())
    except Exception:
        return None


def decode(
    data: bytes | BinaryIO,
    *,
    max_audio_s: float,
    ffmpeg: str | None,
    tmp_dir: str | None = None,
) -> Audio:
    """Decode an upload (bytes, or a seekable binary file) to 16 kHz mono float32, validating it.

    Raises InvalidAudio (400), UnsupportedMediaType (415) or PayloadTooLarge (413). Temp files go to `tmp_dir`,
    by default this process' own directory (removed at exit, swept at the next start if the process was killed).
    """
    tmp_dir = tmp_dir or process_temp_dir()
    f: BinaryIO = io.BytesIO(data) if isinstance(data, bytes | bytearray) else data
    f.seek(0)
    head = f.read(12)
    f.seek(0)
    if not head:
        raise InvalidAudio("the uploaded file is empty")
    sndfile_type = head[:4] in _SNDFILE_MAGIC
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        _check_rate(_wav_declared_rate(f))  # before libsndfile/ffmpeg, which fail on 0 Hz with a vague message
    try:
        info = sf.info(f)
        f.seek(0)
    except Exception as exc:
        f.seek(0)
        if ffmpeg is None:
            if sndfile_type:
                raise InvalidAudio(f"could not decode audio: {_short(exc)}") from exc
            raise UnsupportedMediaType(
                "unsupported audio format: wav, flac and ogg are decoded natively; mp3, m4a, webm and others "
                "need ffmpeg, which is not installed on this server"
            ) from exc
        try:
            audio = _decode_ffmpeg(f, ffmpeg=ffmpeg, max_audio_s=max_audio_s, tmp_dir=tmp_dir)
        except UnsupportedMediaType as unknown:
            if sndfile_type:  # an audio container's magic over bytes nobody can read: damaged audio, not a format
                raise InvalidAudio(f"could not decode audio: {_short(exc)}") from unknown
            raise
    else:
        _check_rate(info.samplerate)
        if info.frames > 0 and info.samplerate > 0 and info.frames / info.samplerate > max_audio_s:
            raise PayloadTooLarge(
                f"audio is {info.frames / info.samplerate:.1f} s long; this server accepts at most {max_audio_s:g} s"
            )
        audio = _decode_sndfile(f, max_audio_s=max_audio_s, tmp_dir=tmp_dir)
    try:
        _validate(audio, max_audio_s)
    except Exception:
        audio.close()
        raise
    return audio


def _check_rate(rate: int | None) -> None:
    """A header's rate outside what real audio uses (a 1 Hz header makes 1 s of samples read as hours) is refused."""
    if rate is not None and not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
        raise InvalidAudio(
            f"unsupported sample rate {rate} Hz: this server accepts {MIN_SAMPLE_RATE}-{MAX_SAMPLE_RATE} Hz"
        )


def _wav_declared_rate(f: BinaryIO) -> int | None:
    """The sample rate in a RIFF/WAVE file's `fmt ` chunk (None if there is none in the first 4 KiB)."""
    head = f.read(4096)
    f.seek(0)
    pos = 12
    while pos + 8 <= len(head):
        chunk, size = head[pos : pos + 4], int.from_bytes(head[pos + 4 : pos + 8], "little")
        if chunk == b"fmt ":  # a well-formed one only (16/18/40 bytes); a garbled header is "could not decode"
            ok = size in (16, 18, 40) and pos + 16 <= len(head)
            return int.from_bytes(head[pos + 12 : pos + 16], "little") if ok else None
        pos += 8 + size + (size & 1)
    return None


def _short(exc: BaseException) -> str:
    """libsndfile's reason without what it opened ("Error opening <file object or path>: ...")."""
    text = str(exc).strip()
    if not text:
        return type(exc).__name__
    first = text.splitlines()[0]
    if first.startswith("Error opening ") and ": " in first:
        first = first.rsplit(": ", 1)[1]
    return first[:200]


def _to_mono(block: np.ndarray) -> np.ndarray:
    return block.mean(axis=1, dtype=np.float32) if block.ndim == 2 else block.astype(np.float32, copy=False)


def _decode_sndfile(f: BinaryIO, *, max_audio_s: float, tmp_dir: str | None) -> Audio:
    try:
        with sf.SoundFile(f) as snd:
            rate = snd.samplerate
            if snd.frames / max(rate, 1) <= _IN_MEMORY_MAX_S:
                block = snd.read(dtype="float32", always_2d=False)
                mono = _to_mono(block)
                if rate != SAMPLE_RATE and len(mono):
                    mono = soxr.resample(mono, rate, SAMPLE_RATE).astype(np.float32, copy=False)
                return Audio(np.ascontiguousarray(mono))
            return _stream_to_memmap(
                (_to_mono(b) for b in snd.blocks(blocksize=_BLOCK_FRAMES, dtype="float32", always_2d=True)),
                rate,
                max_audio_s=max_audio_s,
                tmp_dir=tmp_dir,
            )
    except (PayloadTooLarge, InvalidAudio):
        raise
    except Exception as exc:
        raise InvalidAudio(f"could not decode audio: {_short(exc)}") from exc


def _stream_to_memmap(blocks: Iterator[np.ndarray], rate: int, *, max_audio_s: float, tmp_dir: str | None) -> Audio:
    """Resample block by block into a temp file, then memory-map it: memory stays at one block."""
    fd, path = tempfile.mkstemp(prefix="asr-audio-", suffix=".f32", dir=tmp_dir)
    written = 0
    limit = int(max_audio_s * SAMPLE_RATE) + SAMPLE_RATE
    try:
        stream = soxr.ResampleStream(rate, SAMPLE_RATE, 1, dtype="float32") if rate != SAMPLE_RATE else None
        with os.fdopen(fd, "wb") as out:
            for block in blocks:
                chunk = stream.resample_chunk(block) if stream is not None else block
                out.write(np.ascontiguousarray(chunk, dtype=np.float32).tobytes())
                written += len(chunk)
                if written > limit:
                    raise PayloadTooLarge(f"audio is longer than {max_audio_s:g} s, the most this server accepts")
            if stream is not None:
                tail = stream.resample_chunk(np.zeros(0, dtype=np.float32), last=True)
                out.write(np.ascontiguousarray(tail, dtype=np.float32).tobytes())
                written += len(tail)
        samples = np.memmap(path, dtype=np.float32, mode="r") if written else np.zeros(0, np.float32)
        return Audio(samples, _tmp_path=path)
    except BaseException:
        os.unlink(path)
        raise


# ffmpeg guesses the input format from the content, and several of its demuxers open other files or URLs (concat,
# HLS, DASH, image2, playlists): an upload must only ever be read as one of these audio/video containers. Names are
# ffmpeg demuxer names; a demuxer with several names (mov,mp4,m4a,...) is allowed when any of them is listed.
FFMPEG_FORMATS = (
    "aac", "ac3", "aiff", "amr", "ape", "asf", "au", "avi", "caf", "eac3", "flac", "flv", "matroska", "mov", "mp3",
    "mpeg", "mpegts", "ogg", "tta", "voc", "w64", "wav", "wv",
)  # fmt: skip
FFMPEG_CPU_S = 60  # CPU seconds one decode may use (RLIMIT_CPU): a hostile file cannot hold a core for long
_FFMPEG_UNKNOWN = ("Format not on whitelist", "Invalid data found when processing input", "could not find codec")
_FORMATS_HINT = "wav, flac, ogg/opus, mp3, m4a/mp4/aac, webm/mkv, wma, amr, aiff"


def _ffmpeg_command(ffmpeg: str, src: str, dst: str, max_audio_s: float) -> list[str]:
    return [
        ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "error", "-y",
        "-protocol_whitelist", "file", "-format_whitelist", ",".join(FFMPEG_FORMATS), "-i", src,
        "-t", str(max_audio_s + 1), "-vn", "-sn", "-dn", "-ac", "1", "-ar", str(SAMPLE_RATE),
        "-f", "f32le", "-acodec", "pcm_f32le", dst,
    ]  # fmt: skip


def _run_capped(cmd: list[str], timeout_s: float) -> subprocess.CompletedProcess[bytes]:
    """Run ffmpeg with a CPU-time limit set on the child right after it starts (prlimit, not a preexec_fn: this
    runs in worker threads, where preexec_fn can deadlock)."""
    with subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
        with contextlib.suppress(OSError, AttributeError):  # gone already / not Linux: the wall-clock timeout holds
            resource.prlimit(proc.pid, resource.RLIMIT_CPU, (FFMPEG_CPU_S, FFMPEG_CPU_S))
        try:
            out, err = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def _ffmpeg_failure(returncode: int, stderr: bytes) -> ASRError:
    """The error for a failed decode. Never quotes ffmpeg's output: it names server paths."""
    text = stderr.decode(errors="replace")
    if any(marker in text for marker in _FFMPEG_UNKNOWN):
        return UnsupportedMediaType(
            f"unsupported media type: the upload is not audio in a format this server decodes ({_FORMATS_HINT})"
        )
    if returncode < 0 or "CPU time limit" in text:
        return InvalidAudio("could not decode audio: the decoder ran out of time")
    return InvalidAudio("could not decode audio: the file is damaged or holds no decodable audio stream")


def _decode_ffmpeg(f: BinaryIO, *, ffmpeg: str, max_audio_s: float, tmp_dir: str | None) -> Audio:
    """Let ffmpeg do container + codec + resampling; raw f32le goes to a temp file that is memory-mapped."""
    with tempfile.NamedTemporaryFile(prefix="asr-upload-", dir=tmp_dir) as src:
        shutil.copyfileobj(f, src, 1 << 20)
        src.flush()
        fd, path = tempfile.mkstemp(prefix="asr-audio-", suffix=".f32", dir=tmp_dir)
        os.close(fd)
        try:
            proc = _run_capped(_ffmpeg_command(ffmpeg, src.name, path, max_audio_s), max(60.0, max_audio_s / 10))
        except subprocess.TimeoutExpired as exc:
            os.unlink(path)
            raise InvalidAudio("could not decode audio: the decoder ran out of time") from exc
        if proc.returncode != 0:
            os.unlink(path)
            raise _ffmpeg_failure(proc.returncode, proc.stderr)
    size = os.path.getsize(path)
    if size == 0:
        os.unlink(path)
        raise InvalidAudio("the upload holds no audio stream")
    return Audio(np.memmap(path, dtype=np.float32, mode="r"), _tmp_path=path)


def _validate(audio: Audio, max_audio_s: float) -> None:
    n = len(audio.samples)
    if n == 0:
        raise InvalidAudio("the upload decodes to no audio samples")
    if n < MIN_AUDIO_S * SAMPLE_RATE:
        raise InvalidAudio(f"audio is too short ({n / SAMPLE_RATE:.3f} s); at least {MIN_AUDIO_S:g} s is needed")
    if audio.duration_s > max_audio_s + 0.5:
        raise PayloadTooLarge(f"audio is {audio.duration_s:.1f} s long; this server accepts at most {max_audio_s:g} s")
    for start in range(0, n, _BLOCK_FRAMES * 6):  # chunked so a memory map is not paged in whole
        if not np.isfinite(audio.samples[start : start + _BLOCK_FRAMES * 6]).all():
            raise InvalidAudio("audio contains NaN or infinite samples")
