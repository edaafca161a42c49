"""Admission from the headers, and arrival only with the whole body (behind real uvicorn, raw sockets).

- A full queue answers 429 queue_full before a byte of the body is read (the body here is never even sent).
- A request whose body is still uploading does not count as arriving: forming batches do not wait for a slow
  client; it counts once its body is complete. Checked on the engine's own counters, no timing.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from pathlib import Path

import httpx
from asr_inference.logging_setup import Sampler
from serving import BOUNDARY, exchange_blocking, host_port, request_head, serve_http

SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "demo.wav"


def _part_head() -> bytes:
    return (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n'
        "Content-Type: audio/wav\r\n\r\n"
    ).encode()


def _body() -> bytes:
    return _part_head() + SAMPLE.read_bytes() + f"\r\n--{BOUNDARY}--\r\n".encode()


async def _post(base: str) -> httpx.Response:
    async with httpx.AsyncClient(timeout=120) as client:
        files = {"file": ("demo.wav", SAMPLE.read_bytes(), "audio/wav")}
        return await client.post(f"{base}/v1/audio/transcriptions", files=files)


async def _until(check, what: str) -> None:  # type: ignore[no-untyped-def]
    async with asyncio.timeout(60):
        while not check():
            await asyncio.sleep(0.02)


async def test_a_full_queue_refuses_from_the_headers_without_reading_the_body() -> None:
    settings = {"max_batch_size": 1, "max_queue_size": 1, "upload_timeout_s": 300, "cache_entries": 0}
    async with serve_http(**settings) as (app, base):
        engine = app.state.asr.engine
        device_free = threading.Event()
        blocker = asyncio.create_task(engine.run_on_device(device_free.wait, 60))
        # two requests: one waits for the held device in its batch, the other's item fills the queue of 1
        first = asyncio.create_task(_post(base))
        await _until(lambda: engine._busy or len(engine.queue) == 1, "the first request taken")
        second = asyncio.create_task(_post(base))
        await _until(lambda: len(engine.queue) == 1 and engine._reserved == 0, "the queue full")

        # headers promising a body that never comes: answered at once (a parse would wait for it until the
        # upload timeout, 300 s, and the socket's 60-s timeout would fail this test)
        head = request_head(len(_body())) + _part_head()
        answer = await asyncio.to_thread(exchange_blocking, base, head, hang_up=False)
        assert answer is not None
        status, headers, error = answer
        assert status == 429 and error["error"]["code"] == "queue_full" and int(headers["retry-after"]) >= 1

        device_free.set()
        await blocker
        assert (await first).status_code == 200 and (await second).status_code == 200
        assert engine._reserved == 0 and engine._arriving == 0  # every admission and arrival returned


async def test_a_slow_upload_counts_as_arriving_only_once_its_body_is_complete() -> None:
    async with serve_http(upload_timeout_s=120) as (app, base):
        engine, body = app.state.asr.engine, _body()
        with socket.create_connection(host_port(base), timeout=60) as sock:
            sock.sendall(request_head(len(body)) + body[:100])  # headers and the start of the body
            await _until(lambda: engine._reserved == 1, "the request admitted")
            assert engine._arriving == 0  # still uploading: batches do not wait for it
            sock.sendall(body[100:])
            received = b""
            while b"\r\n\r\n" not in received:
                received += await asyncio.to_thread(sock.recv, 65536)
        assert received.startswith(b"HTTP/1.1 200"), received[:200]
        await _until(lambda: engine._arriving == 0 and engine._reserved == 0, "everything returned")


def test_refusal_log_lines_are_sampled_with_a_count_of_those_left_out() -> None:
    now = [0.0]
    sampler = Sampler(1.0, clock=lambda: now[0])
    assert sampler.take() == 0  # the first line is written
    assert [sampler.take() for _ in range(5)] == [None] * 5  # the rest of that second is counted, not written
    now[0] = 1.0
    assert sampler.take() == 5  # the next line carries the count
    assert sampler.take() is None
