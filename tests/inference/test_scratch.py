"""The scratch-disk budget: an upload reserves its worst case (body + ffmpeg's copy + decoded samples) before its
body is read; one that does not fit is 429 scratch_full with Retry-After, and the reservation is returned when the
request ends, however it ends. /readyz reports the need. Behind real uvicorn, over a raw socket for the held upload."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import httpx
from asr_inference.scratch import DECODED_BYTES_PER_S, ScratchBudget, request_scratch_bytes
from serving import BOUNDARY, exchange_blocking, host_port, request_head, serve_http

MB = 2**20
SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "demo.wav"


def test_request_scratch_is_body_copy_and_samples_capped_by_the_audio_limit() -> None:
    assert request_scratch_bytes(MB, 3600) == 2 * MB + 64 * MB  # a compressed body may decode 64-fold
    assert request_scratch_bytes(100 * MB, 60) == 200 * MB + 60 * DECODED_BYTES_PER_S  # capped by max_audio_s


def test_budget_refuses_what_does_not_fit_but_never_a_request_alone() -> None:
    budget = ScratchBudget(100, "/tmp")
    assert budget.try_reserve(60) and not budget.try_reserve(50) and budget.try_reserve(40)
    budget.release(60)
    budget.release(40)
    assert budget.in_use_bytes == 0 and budget.try_reserve(500)  # alone: runs (serialised, not refused for ever)
    assert ScratchBudget(None, "/tmp").try_reserve(10**15)


def _part_head() -> bytes:
    return (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n'
        "Content-Type: audio/wav\r\n\r\n"
    ).encode()


async def _readyz_scratch(base: str) -> dict:
    async with httpx.AsyncClient(timeout=60) as client:  # the server runs in this event loop: never block it
        return dict((await client.get(f"{base}/readyz")).json()["scratch"])


async def _transcribe(base: str) -> httpx.Response:
    async with httpx.AsyncClient(timeout=60) as client:
        files = {"file": ("demo.wav", SAMPLE.read_bytes(), "audio/wav")}
        return await client.post(f"{base}/v1/audio/transcriptions", files=files, data={"model": "x"})


async def test_a_held_upload_holds_its_scratch_until_it_ends() -> None:
    held_bytes = request_scratch_bytes(1 * MB, 3600)  # 66 MiB reserved for the held 1-MiB upload
    scratch_mb = (held_bytes + 2 * MB) / MB  # room left: 2 MiB, less than the sample's worst case
    assert request_scratch_bytes(SAMPLE.stat().st_size, 3600) > 2 * MB
    async with serve_http(scratch_mb=scratch_mb, upload_timeout_s=60) as (app, base):
        ready = await _readyz_scratch(base)
        assert ready["limit_bytes"] == int(scratch_mb * MB) and ready["in_use_bytes"] == 0
        assert ready["per_request_max_bytes"] == request_scratch_bytes(200 * MB, 3600) and ready["free_bytes"] > 0

        sock = socket.create_connection(host_port(base))
        try:  # promises 1 MiB, sends a few bytes of it, and waits
            sock.sendall(request_head(1 * MB) + _part_head() + b"RIFF")
            for _ in range(200):
                if app.state.asr.scratch.in_use_bytes:
                    break
                await asyncio.sleep(0.05)
            assert app.state.asr.scratch.in_use_bytes == held_bytes

            body = _part_head() + SAMPLE.read_bytes() + f"\r\n--{BOUNDARY}--\r\n".encode()
            answer = await asyncio.to_thread(exchange_blocking, base, request_head(len(body)) + body, hang_up=False)
            assert answer is not None
            status, headers, error = answer  # answered before its body is read
            assert status == 429 and error["error"]["code"] == "scratch_full" and headers["retry-after"] == "1"
        finally:
            sock.close()  # the held upload ends (client gone): its reservation is returned
        for _ in range(200):
            if not app.state.asr.scratch.in_use_bytes:
                break
            await asyncio.sleep(0.05)
        served = await _transcribe(base)
        assert served.status_code == 200, served.text
        assert app.state.asr.scratch.in_use_bytes == 0


async def test_no_budget_by_default() -> None:
    async with serve_http() as (_app, base):
        assert (await _readyz_scratch(base))["limit_bytes"] is None
        assert (await _transcribe(base)).status_code == 200
