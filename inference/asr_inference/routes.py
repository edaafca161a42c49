"""The HTTP routes: health, readiness and metrics on their own path (never behind the request queue), then the
OpenAI-compatible API (models, transcriptions, realtime)."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import FastAPI, File, Form, Request, UploadFile, WebSocket
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import HTTPConnection

from . import api_docs, chunking, formats, streaming
from .backends import DecodeOptions
from .errors import InvalidRequest, ModelNotFound, NotReady, RequestTimeout, Unauthorized
from .gpu_memory import refresh_gpu_memory
from .realtime import KEY_SUBPROTOCOL
from .upload_guard import require_api_key, token_matches

if TYPE_CHECKING:
    from .app import ServerState
    from .loading import Loaded

TRANSCRIBE_PATH = "/v1/audio/transcriptions"
CLIENT_CLOSED = streaming.CLIENT_CLOSED


def add_routes(app: FastAPI, state: ServerState) -> None:
    _add_health_routes(app, state)
    _add_api_routes(app, state)


# ---------------------------------------------------------------------------------------------- health
def _add_health_routes(app: FastAPI, state: ServerState) -> None:
    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> Response:
        if state.load_error is not None:
            return JSONResponse({"status": "error", "error": state.load_error}, status_code=503)
        if state.loaded is not None and state.loaded.engine.device_failure:  # only a restart gives a working device
            return JSONResponse({"status": "error", "error": state.loaded.engine.device_failure}, status_code=503)
        return JSONResponse({"status": "ok"})

    @app.get("/readyz", include_in_schema=False)
    async def readyz() -> Response:
        loaded = state.loaded
        if loaded is not None and loaded.engine.device_failure:
            return JSONResponse({"status": "error", "error": loaded.engine.device_failure}, status_code=503)
        if loaded is None or not state.ready.is_set():
            body = {"status": "loading" if state.load_error is None else "error", "model": state.model_name}
            if state.load_error:
                body["error"] = state.load_error
            return JSONResponse(body, status_code=503)
        return JSONResponse(_ready_body(state, loaded))

    @app.get("/metrics", include_in_schema=False)
    async def metrics_endpoint() -> Response:
        if state.loaded is not None:
            state.loaded.engine.queue.drop_abandoned()
            refresh_gpu_memory(state.metrics, getattr(state.loaded.backend, "device", None))
        return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)


def _ready_body(state: ServerState, loaded: Loaded) -> dict[str, Any]:
    info = loaded.info
    return {
        "status": "ready",
        "model": info.name,
        "family": info.family,
        "device": info.device,
        "workers": [w.label for w in loaded.engine.workers],  # one per device (every GPU of the pod)
        "precision": info.precision,
        "requested_precision": info.requested_precision,
        "precision_fallback_reason": info.precision_fallback_reason,
        "precision_check": {
            "argmax_agreement": info.precision_agreement,
            "cer": info.precision_cer,
            "failure": info.precision_check_failure,
            "forced": info.precision_forced,
        },
        "runtime": info.runtime,
        "requested_runtime": info.requested_runtime,
        "quantize": info.quantize,
        "runtime_fallback_reason": info.runtime_fallback_reason,
        "runtime_check": {
            "argmax_agreement": info.runtime_agreement,
            "cer": info.runtime_cer,
            "forced": info.runtime_forced,
        },
        "graph_mode": info.graph_mode,
        "graph_fallback_reason": info.graph_fallback_reason,
        "tf32": info.tf32,
        "max_batch_size": state.settings.max_batch_size,
        "scratch": state.scratch.report(),
        "startup_seconds": round(state.ready_after_s or 0.0, 3),
    }


# ---------------------------------------------------------------------------------------------- OpenAI API
def _add_api_routes(app: FastAPI, state: ServerState) -> None:
    settings = state.settings

    def check_auth(request: HTTPConnection) -> None:
        require_api_key(settings.api_key, request)

    @app.get("/v1/models")
    async def list_models(request: Request) -> dict[str, Any]:
        check_auth(request)
        return {
            "object": "list",
            "data": [{"id": name, "object": "model", "created": 0, "owned_by": "asr-platform"} for name in state.names],
        }

    @app.websocket("/v1/realtime")
    async def realtime(websocket: WebSocket) -> None:
        def authorized() -> bool:
            keys = [p.removeprefix(KEY_SUBPROTOCOL) for p in websocket.scope.get("subprotocols", [])]
            if settings.api_key is not None and any(token_matches(settings.api_key, k) for k in keys):
                return True  # browsers cannot set headers on a WebSocket: OpenAI's key subprotocol
            try:
                check_auth(websocket)
            except Unauthorized:
                return False
            return True

        ready = state.loaded.transcriber if state.loaded is not None and state.ready.is_set() else None
        await state.realtime.handle(websocket, ready, state.model_name, authorized)

    @app.post(TRANSCRIBE_PATH, response_model=None, responses=api_docs.error_responses(api_docs.TRANSCRIBE_ERRORS))
    async def transcriptions(
        request: Request,
        file: Annotated[UploadFile, File(description="Audio file")],
        model: Annotated[str | None, Form()] = None,
        language: Annotated[str | None, Form()] = None,
        prompt: Annotated[str | None, Form()] = None,
        response_format: Annotated[formats.ResponseFormat, Form()] = "json",
        temperature: Annotated[float, Form(ge=0.0, le=1.0)] = 0.0,
        timestamp_granularities: Annotated[list[str] | None, Form(alias="timestamp_granularities[]")] = None,
        stream: Annotated[bool, Form()] = False,
    ) -> Response:
        check_auth(request)
        if (parts := len((await request.form()).getlist("file"))) > 1:  # parsed already: FastAPI keeps the form
            raise InvalidRequest(f"send one `file` part; this request has {parts}")
        loaded = state.loaded
        if loaded is None or not state.ready.is_set():
            raise NotReady()
        if model and settings.strict_model_name and model not in state.names:
            raise ModelNotFound(f"model {model!r} is not served here; this server serves {', '.join(state.names)}")
        granularities = set(timestamp_granularities or [])
        if not granularities <= {"segment", "word"}:
            raise InvalidRequest("timestamp_granularities[] accepts 'segment' and 'word'")
        lang = (language or "auto").strip().lower()
        loaded.transcriber.check_language(lang)
        options = DecodeOptions(language=lang, use_itn=False, prompt=prompt or None, temperature=temperature)
        cutting = chunking.parse(await request.form(), settings)
        ctx = request.scope["state"]["asr"]
        if stream:
            return await streaming.sse_response(
                loaded.transcriber,
                loaded.engine,
                file.file,
                options,
                cutting,
                ctx,
                lambda: _wait_for_disconnect(request),
            )
        result = await _transcribe(request, state, loaded, file, options, cutting)
        if isinstance(result, Response):
            return result
        transcript, cached = result
        ctx.update(audio_s=transcript.duration, batch_size=transcript.max_batch_size, cache=cached)
        ctx["timing"] = {"queue_s": transcript.queue_s, "inference_s": transcript.inference_s}
        return _render(transcript, response_format, words="word" in granularities, model=state.model_name)


async def _transcribe(
    request: Request,
    state: ServerState,
    loaded: Loaded,
    file: UploadFile,
    options: DecodeOptions,
    cutting: chunking.Chunking,
) -> tuple[formats.Transcript, bool] | Response:
    """Run the transcription within the request's time budget; a client that leaves cancels its queued items."""
    ctx = request.scope["state"]["asr"]
    ticket = ctx.get("ticket") or loaded.engine.ticket().admit()  # the upload guard admitted it before the parse
    timeout_s = state.settings.request_timeout_s
    try:
        budget = timeout_s - (time.perf_counter() - ctx["t0"])
        work = asyncio.create_task(
            loaded.transcriber.transcribe(file.file, options, on_queued=ticket.release, chunking=cutting)
        )
        watcher = asyncio.create_task(_wait_for_disconnect(request))
        done, _ = await asyncio.wait({work, watcher}, timeout=max(budget, 0.001), return_when="FIRST_COMPLETED")
    finally:
        ticket.release()
    watcher.cancel()
    if work in done:
        return work.result()
    work.cancel()  # cancels its queued items: the batcher skips them
    if watcher in done:
        ctx["override_status"] = CLIENT_CLOSED
        return Response(status_code=CLIENT_CLOSED)
    raise RequestTimeout(f"transcription did not finish within {timeout_s:g} s")


async def _wait_for_disconnect(request: Request) -> None:
    """Returns when the client goes away. Only called after the body is fully read."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


def _render(
    transcript: formats.Transcript, response_format: formats.ResponseFormat, words: bool, model: str
) -> Response:
    if response_format == "text":
        return PlainTextResponse(transcript.text)
    if response_format == "srt":
        return PlainTextResponse(formats.to_srt(transcript), media_type="application/x-subrip")
    if response_format == "vtt":
        return PlainTextResponse(formats.to_vtt(transcript), media_type="text/vtt")
    if response_format == "verbose_json":
        return JSONResponse(formats.to_verbose_json(transcript, words=words, model=model))
    return JSONResponse(formats.to_json(transcript))
