"""The upload guard behind real uvicorn, over raw sockets: a chunked body over the limit is answered 413 at the limit
(not read to the end), a stalled body is cut (408), a wrong key is answered before the body, a client that hangs up
during the upload is a 499; Starlette's own errors come in the one envelope."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
from asr_inference.upload_guard import api_key_matches
from serving import BOUNDARY, exchange_blocking, metric, metric_samples, request_head, serve, serve_http

MB = 2**20
ANSWER_WITHIN_S = 60  # bounds a hang only: the server must answer without the rest of the body


def _part_head() -> bytes:
    return (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n'
        "Content-Type: audio/wav\r\n\r\n"
    ).encode()


async def _exchange(base: str, data: bytes) -> tuple[int, dict[str, str], dict]:
    answer = await asyncio.to_thread(exchange_blocking, base, data, hang_up=False)
    assert answer is not None
    return answer


def _chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


async def test_chunked_body_over_the_limit_is_413_without_reading_the_rest() -> None:
    async with serve_http(max_upload_mb=1) as (_app, base):
        # 3 MiB in 64 KiB chunks, then the client stops without ending the body
        data = request_head(None) + _chunk(_part_head()) + _chunk(b"\0" * (64 * 1024)) * (3 * 16)
        status, headers, body = await _exchange(base, data)
    assert status == 413 and body["error"]["code"] == "payload_too_large"
    assert headers.get("connection") == "close"


async def test_stalled_upload_is_cut_by_the_read_timeout() -> None:
    async with serve_http(upload_timeout_s=1) as (_app, base):
        # promises 1 MiB, sends 4 bytes of it
        status, _, body = await _exchange(base, request_head(1 * MB) + _part_head() + b"RIFF")
    assert status == 408 and body["error"]["code"] == "upload_timeout"


async def test_wrong_key_is_answered_before_the_body() -> None:
    async with serve_http(api_key="right-key", upload_timeout_s=600) as (_app, base):
        # 10 MiB promised, none of it sent: only the headers can have decided
        data = request_head(10 * MB, extra="Authorization: Bearer wrong-key\r\n") + _part_head()
        status, headers, body = await _exchange(base, data)
    assert status == 401 and body["error"]["code"] == "invalid_api_key"
    assert headers.get("www-authenticate") == "Bearer"


async def test_client_hanging_up_during_the_upload_is_499() -> None:
    async with serve_http(upload_timeout_s=600) as (app, base):
        data = request_head(1 * MB) + _part_head() + b"\0" * 4096
        await asyncio.to_thread(exchange_blocking, base, data, hang_up=True)
        registry = app.state.asr.metrics.registry
        async with asyncio.timeout(ANSWER_WITHIN_S):
            while registry.get_sample_value("asr_requests_total", {"code": "499"}) != 1:
                await asyncio.sleep(0.02)
        async with httpx.AsyncClient(base_url=base) as client:
            samples = await metric_samples(client)
    assert metric(samples, "asr_requests_total", code="400") == 0


async def test_starlettes_own_errors_use_the_envelope(sensevoice_dir: Path) -> None:
    async with serve(model=str(sensevoice_dir)) as (_app, client):
        missing = await client.get("/v1/no-such-thing")
        wrong_method = await client.get("/v1/audio/transcriptions")
    for response, status, code in ((missing, 404, "not_found"), (wrong_method, 405, "method_not_allowed")):
        assert response.status_code == status
        assert response.json() == {"error": {"message": response.json()["error"]["message"],
                                             "type": response.json()["error"]["type"], "code": code}}  # fmt: skip


def test_api_key_comparison() -> None:
    assert api_key_matches(None, "")
    assert api_key_matches("k-1", "Bearer k-1") and api_key_matches("k-1", "bearer  k-1 ")
    assert not api_key_matches("k-1", "Bearer k-2") and not api_key_matches("k-1", "Basic k-1")
    assert not api_key_matches("k-1", "") and not api_key_matches("k-1", "Bearer ")


async def test_api_description_and_head(sensevoice_dir: Path, speech_files: dict[str, Path]) -> None:
    """The OpenAPI document lists the statuses the endpoint returns, in the envelope, and no 422; /docs and
    /openapi.json need the key when one is set (--public-docs opens them); HEAD is answered where GET is; a second
    `file` part is a 400, not silently the last one."""
    key = {"Authorization": "Bearer k-1"}
    clip = speech_files["digits_a.wav"].read_bytes()
    async with serve(model=str(sensevoice_dir), api_key="k-1") as (_app, client):
        closed = [(await client.get(p)).status_code for p in ("/openapi.json", "/docs")]
        doc = (await client.get("/openapi.json", headers=key)).json()
        docs_page = await client.get("/docs", headers=key)
        heads = {p: (await client.head(p, headers=key)).status_code for p in ("/healthz", "/readyz", "/v1/models")}
        two_files = await client.post(
            "/v1/audio/transcriptions", headers=key, files=[("file", ("a.wav", clip)), ("file", ("b.wav", clip))]
        )
    async with serve(model=str(sensevoice_dir), api_key="k-1", public_docs=True) as (_app, client):
        public = [(await client.get(p)).status_code for p in ("/openapi.json", "/docs")]
    assert closed == [401, 401] and public == [200, 200] and docs_page.status_code == 200
    responses = doc["paths"]["/v1/audio/transcriptions"]["post"]["responses"]
    assert {"400", "401", "404", "413", "415", "429", "503", "504"} <= set(responses) and "422" not in responses
    assert responses["415"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}
    assert doc["components"]["schemas"]["Error"]["required"] == ["error"]
    assert not [p for p, ops in doc["paths"].items() for o in ops.values() if "422" in o.get("responses", {})]
    assert heads == {"/healthz": 200, "/readyz": 200, "/v1/models": 200}
    assert two_files.status_code == 400 and "one `file` part" in two_files.json()["error"]["message"]


async def test_request_head_over_the_cap_is_431_and_closed() -> None:
    head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 8000 + b"\r\n"
    # 40 more headers of 1 KiB, the head never ends: only the cap can answer
    endless = head + b"".join(f"X-More-{i}: ".encode() + b"b" * 1024 + b"\r\n" for i in range(40))
    async with serve_http(max_header_kb=16) as (_app, base):
        status, headers, body = await _exchange(base, endless)
        ok, _, _ = await _exchange(base, head + b"\r\n")  # a head under the cap is served
    assert status == 431 and body["error"]["code"] == "headers_too_large" and headers["connection"] == "close"
    assert ok == 200
