"""Run the real app (real funasr, tiny models) in-process through an ASGI client; read its metrics."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
from asr_inference.app import create_app
from asr_inference.config import Settings
from prometheus_client.parser import text_string_to_metric_families


@asynccontextmanager
async def serve(wait_ready: bool = True, **settings: Any) -> AsyncIterator[tuple[Any, httpx.AsyncClient]]:
    """Start the app (lifespan included) and yield (app, client). Waits for warm-up unless told not to."""
    settings.setdefault("log_format", "json")
    app = create_app(Settings(**settings))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver", timeout=120) as client:
            if wait_ready:
                await wait_until_ready(app)
            yield app, client


@asynccontextmanager
async def serve_http(**settings: Any) -> AsyncIterator[tuple[Any, str]]:
    """The app behind a real uvicorn server on a loopback port, with `asr-serve`'s uvicorn config, in this event
    loop (so a test can reach into the engine). Yields (app, base_url) once the model is warm."""
    import uvicorn
    from asr_inference.cli import uvicorn_config

    settings.setdefault("log_format", "json")
    settings.update(host="127.0.0.1", port=_free_port())
    app = create_app(Settings(**settings))
    server = uvicorn.Server(uvicorn_config(app, app.state.asr.settings))
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(120):
            while not server.started:
                assert not task.done(), "uvicorn did not start"
                await asyncio.sleep(0.02)
        await wait_until_ready(app)
        yield app, f"http://127.0.0.1:{settings['port']}"
    finally:
        server.should_exit = True
        await task


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def wait_until_ready(app: Any, timeout_s: float = 120.0) -> None:
    state = app.state.asr
    async with asyncio.timeout(timeout_s):
        while not state.ready.is_set():
            if state.load_error:
                raise AssertionError(f"model failed to load: {state.load_error}")
            await asyncio.sleep(0.05)


async def transcribe(client: httpx.AsyncClient, path: Path | bytes, **form: Any) -> httpx.Response:
    content = path if isinstance(path, bytes) else path.read_bytes()
    name = "audio.wav" if isinstance(path, bytes) else path.name
    return await client.post("/v1/audio/transcriptions", files={"file": (name, content)}, data=form)


async def prompt_beside_a_neighbour(
    model_dir: Path, speech_files: dict[str, Path], prompt: str
) -> tuple[httpx.Response, httpx.Response, httpx.Response]:
    """A request with `prompt` and a plain one in the same batch, then the plain one alone: (prompted, beside,
    alone) — for the families whose prompts are model input (Whisper, GLM-ASR)."""
    neighbour = speech_files["digits_a.wav"]
    async with serve(model=str(model_dir), max_batch_size=2, max_wait_ms=1500, cache_entries=0) as (_, client):
        prompted, beside = await asyncio.gather(
            transcribe(client, speech_files["sentence_d.wav"], prompt=prompt), transcribe(client, neighbour)
        )
        alone = await transcribe(client, neighbour)
    return prompted, beside, alone


async def metric_samples(client: httpx.AsyncClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = (await client.get("/metrics")).text
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def metric(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


BOUNDARY = "asr-test-boundary"


def multipart_file(audio: bytes, boundary: str = BOUNDARY) -> bytes:
    """A multipart/form-data body with one `file` part."""
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n'
        "Content-Type: audio/wav\r\n\r\n"
    ).encode()
    return head + audio + f"\r\n--{boundary}--\r\n".encode()


def request_head(length: int | None, *, extra: str = "", boundary: str = BOUNDARY) -> bytes:
    """The request line and headers of a raw transcription POST: Content-Length, or chunked when `length` is None."""
    framing = f"Content-Length: {length}\r\n" if length is not None else "Transfer-Encoding: chunked\r\n"
    return (
        "POST /v1/audio/transcriptions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\n{framing}{extra}\r\n"
    ).encode()


def host_port(base_url: str) -> tuple[str, int]:
    host, _, port = base_url.removeprefix("http://").partition(":")
    return host, int(port)


ANSWER_WITHIN_S = 60  # bounds a hang only


def exchange_blocking(base: str, data: bytes, *, hang_up: bool) -> tuple[int, dict[str, str], dict] | None:
    """Send `data` on a fresh connection, then read the one answer. A plain socket, not asyncio's streams: when the
    server answers early and closes with our bytes unread, the kernel resets the connection, and a StreamReader
    then raises instead of handing over the answer it already received; recv() hands the answer over first."""
    with socket.create_connection(host_port(base), timeout=ANSWER_WITHIN_S) as sock:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError, TimeoutError):
            sock.sendall(data)  # the server may stop reading (and close) before all of it is sent
        if hang_up:
            return None
        received = b""
        with contextlib.suppress(ConnectionResetError):
            while b"\r\n\r\n" not in received or len(received) < answer_length(received):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
    return int(lines[0].split()[1]), headers, json.loads(body[: int(headers["content-length"])])


def answer_length(received: bytes) -> int:
    head, _, _ = received.partition(b"\r\n\r\n")
    length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
    return len(head) + 4 + (int(length.group(1)) if length else 0)
