"""A corpus of hostile uploads, generated (no hand-made binaries): files that try to make ffmpeg or libsndfile read
other files or the network (concat, playlists, HLS, DASH, SDP), files that are not audio at all (HTML, SVG, images,
archives, text), and real audio cut short or with lying headers.

`build(secret_dir)` returns {name: (bytes, kind)}: kind "reach" (names a server-local file or an address: must be
415 and never transcribed), "foreign" (not audio: 415), "broken" (damaged audio: a 4xx) or "streamed" (a WAV whose
data size is a placeholder, as streaming writers leave it: what is there is decoded, 200 allowed). `secret_dir` holds
the file the "reach" uploads point at, by absolute and by relative path.
"""

from __future__ import annotations

import gzip
import io
import os
import struct
import subprocess
import wave
import zipfile
import zlib
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SPEECH = ROOT / "tests" / "data" / "speech"
SAMPLE = ROOT / "samples" / "demo.wav"
SECRET_NAME = "asr-hostile-secret.wav"  # a speech file the "reach" uploads try to get transcribed


def _wav(rate: int, samples: np.ndarray) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())
    return buf.getvalue()


def _wav_declaring(rate: int) -> bytes:
    """A WAV whose header declares `rate` (0 Hz and 4 GHz cannot be written by the wave module)."""
    data = _wav(16_000, np.zeros(16_000, np.float32))
    return data[:24] + struct.pack("<I", rate) + struct.pack("<I", (rate * 2) & 0xFFFFFFFF) + data[32:]


def _ffmpeg(*args: str) -> bytes:
    """ffmpeg's output on stdout for `args` (inputs and output options)."""
    from asr_inference.audio import find_ffmpeg

    ffmpeg = find_ffmpeg()
    assert ffmpeg, "the hostile corpus needs ffmpeg (apt-get install ffmpeg, or the imageio-ffmpeg wheel)"
    cmd = [ffmpeg, "-nostdin", "-loglevel", "error", *args, "pipe:1"]
    return subprocess.run(cmd, capture_output=True, check=True, timeout=300).stdout


def _silent_flac(minutes: int) -> bytes:
    return _ffmpeg(
        "-f", "lavfi", "-i", "anullsrc=r=16000:cl=mono", "-t", str(minutes * 60), "-c:a", "flac", "-f", "flac"
    )


def _png() -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00\x00")) + chunk(b"IEND", b"")
    )


def _reach(secret_dir: Path, upload_dir: str) -> dict[str, bytes]:
    secret = secret_dir / SECRET_NAME
    relative = os.path.relpath(secret, upload_dir)
    return {
        "ffconcat-relative.txt": f"ffconcat version 1.0\nfile {relative}\n".encode(),
        "ffconcat-absolute.txt": f"ffconcat version 1.0\nfile {secret}\n".encode(),
        "ffconcat-file-url.txt": f"ffconcat version 1.0\nfile 'file:{secret}'\n".encode(),
        "ffconcat-traversal.txt": f"ffconcat version 1.0\nfile ../../../..{secret}\n".encode(),
        "hls-local.m3u8": f"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10,\n{secret}\n#EXT-X-ENDLIST\n".encode(),
        "hls-relative.m3u8": f"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10,\n{relative}\n#EXT-X-ENDLIST\n".encode(),
        "hls-loopback.m3u8": b"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10,\nhttp://127.0.0.1:9/a.ts\n#EXT-X-ENDLIST\n",
        "dash.mpd": (
            '<?xml version="1.0"?><MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="static" '
            'mediaPresentationDuration="PT3S"><Period><AdaptationSet mimeType="audio/wav"><Representation id="a" '
            f'bandwidth="256000"><BaseURL>file:{secret}</BaseURL></Representation></AdaptationSet></Period></MPD>'
        ).encode(),
        "session.sdp": b"v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=x\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        b"m=audio 9 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n",
        "subfile.txt": f"subfile,,start,0,end,0,,:{secret}".encode(),
    }


def _foreign() -> dict[str, bytes]:
    return {
        "page.html": b"<!DOCTYPE html><html><head><title>x</title></head>"
        b"<body><audio src='/etc/hosts'></audio></body></html>",
        "image.svg": b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="1" height="1">'
        b'<rect width="1" height="1"/></svg>',
        "image.png": _png(),
        "img%03d.png": _png(),
        "image.gif": b"GIF89a\x01\x00\x01\x00\x00\x00\x00;",
        "image.jpg": b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00\xff\xd9",
        "notes.txt": b"hello world one two three\n" * 20,
        "data.json": b'{"file": "/etc/passwd", "text": "hello"}',
        "subs.srt": b"1\n00:00:00,000 --> 00:00:01,000\nhello\n",
        "subs.vtt": b"WEBVTT\n\n00:00.000 --> 00:01.000\nhello\n",
        "ansi.txt": b"\x1b[31mred\x1b[0m text\n" * 50,
        "archive.zip": _zip(),
        "audio.wav.gz": gzip.compress(SAMPLE.read_bytes()),
        "doc.pdf": b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n",
        "program.elf": b"\x7fELF\x02\x01\x01" + bytes(57),
        "random.bin": np.random.default_rng(7).integers(0, 256, 4096, dtype=np.uint8).tobytes(),
    }


def _zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("demo.wav", SAMPLE.read_bytes())
    return buf.getvalue()


def _broken() -> dict[str, bytes]:
    wav = (SPEECH / "digits_a.wav").read_bytes()
    flac = (SPEECH / "digits_b_22k.flac").read_bytes()
    ogg = (SPEECH / "command_c_48k.ogg").read_bytes()
    mp3 = (SPEECH / "digits_a.mp3").read_bytes()
    m4a = (SPEECH / "digits_a.m4a").read_bytes()
    webm = _ffmpeg("-i", str(SPEECH / "digits_a.wav"), "-c:a", "libopus", "-f", "webm")
    no_channels = wav[:22] + struct.pack("<H", 0) + wav[24:]
    rng = np.random.default_rng(3)
    return {
        "empty.wav": b"",
        "one-byte.wav": b"R",
        "wav-header-only.wav": wav[:44],
        "wav-cut-in-header.wav": wav[:20],
        "wav-zero-channels.wav": no_channels,
        "wav-1hz.wav": _wav(1, np.zeros(16_000, np.float32)),
        "wav-0hz.wav": _wav_declaring(0),
        "wav-4ghz.wav": _wav_declaring(4_000_000_000),
        "riff-noise.wav": b"RIFF\x24\x00\x00\x00WAVEfmt " + rng.integers(0, 256, 300, dtype=np.uint8).tobytes(),
        "flac-magic-only.flac": b"fLaC",
        "flac-cut.flac": flac[:100],
        "ogg-cut.ogg": ogg[:200],
        "oggs-noise.ogg": b"OggS" + rng.integers(0, 256, 500, dtype=np.uint8).tobytes(),
        "mp3-cut.mp3": mp3[:200],
        "id3-noise.mp3": b"ID3\x04\x00\x00\x00\x00\x00\x00" + rng.integers(0, 256, 500, dtype=np.uint8).tobytes(),
        "m4a-head.m4a": m4a[:100],
        "m4a-no-tail.m4a": m4a[: len(m4a) // 3],
        "webm-cut.webm": webm[:150],
        "silent-60min.flac": _silent_flac(60),
    }


def _placeholder_size_wav() -> bytes:
    wav = (SPEECH / "digits_a.wav").read_bytes()
    return wav[:40] + struct.pack("<I", 0xFFFFFFFF) + wav[44:]


def build(secret_dir: Path, upload_dir: str) -> dict[str, tuple[bytes, str]]:
    """The corpus; writes the secret speech file into `secret_dir`. `upload_dir`: where the server writes uploads
    (relative paths are made relative to it, as ffmpeg would resolve them)."""
    (secret_dir / SECRET_NAME).write_bytes(SAMPLE.read_bytes())
    corpus: dict[str, tuple[bytes, str]] = {}
    for kind, files in (("reach", _reach(secret_dir, upload_dir)), ("foreign", _foreign()), ("broken", _broken())):
        corpus.update({name: (data, kind) for name, data in files.items()})
    corpus["wav-placeholder-data-size.wav"] = (_placeholder_size_wav(), "streamed")
    return corpus
