"""Hostile uploads (tests/hostile_corpus.py) against the real app behind real uvicorn: files that try to make the
decoder read server-local files or the network, files that are not audio, and damaged audio. Each gets a 4xx in the
one error envelope, never a 5xx, never a transcript of another file, never a server path in the message; no temp
file is left behind; requests batched beside them are unharmed."""

from __future__ import annotations

import asyncio
import json
import tempfile
from collections.abc import Iterator
from pathlib import Path

import hostile_corpus
import httpx
import pytest
from asr_inference import audio
from asr_inference.errors import UnsupportedMediaType
from serving import serve_http

EXPECTED = (hostile_corpus.ROOT / "samples" / "demo.txt").read_text().strip()
MAX_AUDIO_S = 600  # the corpus' 60-minute FLAC is over it: 413


@pytest.fixture()
def upload_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The server's temp directory for this test (tempfile's default, as in production)."""
    d = tmp_path / "server-tmp"
    d.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(d))
    yield d


def _sse_error(response: httpx.Response) -> dict | None:
    """A `stream=true` response that started (200): its `error` event's body, if it ended with one."""
    events = [json.loads(line[6:]) for line in response.text.splitlines() if line.startswith("data: {")]
    errors = [e for e in events if e.get("type") == "error"]
    return errors[-1] if errors else None


def _problems(name: str, kind: str, response: httpx.Response, secret_dir: Path, upload_dir: Path) -> list[str]:
    out = []
    status = response.status_code
    streamed_error = _sse_error(response) if status == 200 else None
    if kind == "streamed" and status == 200 and streamed_error is None:
        return []
    if streamed_error is None and not 400 <= status < 500:
        out.append(f"{name}: HTTP {status} {response.text[:200]}")
    if kind in ("reach", "foreign") and status != 415:
        out.append(f"{name} ({kind}): HTTP {status}, not 415: {response.text[:200]}")
    try:
        error = (streamed_error or response.json())["error"]
        assert set(error) == {"message", "type", "code"}
        assert error["type"] != "server_error", "a server error"
    except Exception as failed:
        return [*out, f"{name}: not the error envelope of a client error ({failed}): {response.text[:200]}"]
    message = error["message"]
    for leak in (str(secret_dir), str(upload_dir), "/tmp", "asr-upload-", "asr-audio-", hostile_corpus.SECRET_NAME):
        if leak in message:
            out.append(f"{name}: the message names a server path ({leak!r}): {message}")
    if EXPECTED in response.text:
        out.append(f"{name}: another file's transcript came back")
    return out


def _sse_done_text(response: httpx.Response) -> str | None:
    events = [json.loads(line[6:]) for line in response.text.splitlines() if line.startswith("data: {")]
    return next((e["text"] for e in events if e.get("type") == "transcript.text.done"), None)


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_hostile_corpus_gets_4xx_and_leaves_nothing_behind(
    tmp_path: Path, upload_dir: Path, stream: bool
) -> None:
    """With `stream=true` too: a refusal before the stream starts is the same 4xx; one after it (the 200 is sent)
    is the `error` event with the same envelope, a client error, and no server path either."""
    secret_dir = tmp_path / "secret"
    secret_dir.mkdir()
    corpus = hostile_corpus.build(secret_dir, str(upload_dir))
    assert len(corpus) >= 40
    good = hostile_corpus.SAMPLE.read_bytes()
    async with (
        serve_http(max_audio_s=MAX_AUDIO_S, cache_entries=0) as (_app, base),
        httpx.AsyncClient(base_url=base, timeout=300) as client,
    ):

        async def post(name: str, data: bytes) -> httpx.Response:
            form = {"stream": "true"} if stream else {}
            return await client.post("/v1/audio/transcriptions", files={"file": (name, data)}, data=form)

        hostile = [post(name, data) for name, (data, _) in corpus.items()]
        mates = [post("demo.wav", good) for _ in range(8)]  # batched beside the hostile ones
        responses = await asyncio.gather(*hostile, *mates)
    problems = []
    for (name, (_, kind)), response in zip(corpus.items(), responses, strict=False):
        problems += _problems(name, kind, response, secret_dir, upload_dir)
    for response in responses[len(corpus) :]:
        text = _sse_done_text(response) if stream else response.json().get("text")
        if response.status_code != 200 or text != EXPECTED:
            problems.append(f"a batch-mate was harmed: HTTP {response.status_code} {response.text[:200]}")
    left = sorted(str(p.relative_to(upload_dir)) for p in upload_dir.rglob("*") if p.is_file())
    if left:
        problems.append(f"temp files left behind: {left}")
    assert not problems, "\n".join(problems)


def test_ffconcat_naming_a_local_file_is_415(tmp_path: Path) -> None:
    """The decoder alone: a playlist that names a speech file next to the upload is refused, not transcribed."""
    (tmp_path / "secret.wav").write_bytes(hostile_corpus.SAMPLE.read_bytes())
    ffmpeg = audio.find_ffmpeg()
    assert ffmpeg, "ffmpeg is required (apt-get install ffmpeg, or the imageio-ffmpeg wheel)"
    with pytest.raises(UnsupportedMediaType) as raised:
        audio.decode(b"ffconcat version 1.0\nfile secret.wav\n", max_audio_s=60, ffmpeg=ffmpeg, tmp_dir=str(tmp_path))
    assert str(tmp_path) not in raised.value.message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["secret.wav"]


def test_ffmpeg_runs_with_format_and_protocol_whitelists_and_a_cpu_cap() -> None:
    cmd = audio._ffmpeg_command("ffmpeg", "/in", "/out", 60)
    formats = cmd[cmd.index("-format_whitelist") + 1].split(",")
    assert cmd[cmd.index("-protocol_whitelist") + 1] == "file"
    assert not {"concat", "hls", "dash", "image2", "sdp", "rtp", "tty", "subfile", "lavfi"} & set(formats)
    assert cmd.index("-format_whitelist") < cmd.index("-i")  # input options go before the input
    # the limit is set on the running child (prlimit): the child polls until it sees one (for at most ~10 s)
    poll = 'for i in $(seq 200); do l=$(ulimit -t); [ "$l" != unlimited ] && break; sleep 0.05; done; echo "$l"'
    limited = audio._run_capped(["sh", "-c", poll], timeout_s=30)
    assert limited.stdout.decode().strip() == str(audio.FFMPEG_CPU_S)
