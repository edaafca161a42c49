"""`create_app(settings)`: the FastAPI app, its lifespan (load + warm the model in the background so /healthz
answers at once and /readyz turns 200 when warm), the OpenAI-compatible routes, health, and metrics."""

from __future__ import annotations

import asyncio
import io
import logging
import re
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import FastAPI, File, Form, Request, UploadFile, WebSocket
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from . import api_docs, chunking, formats, model_source, playground, streaming, tempfiles
from .backends import Backend, DecodeOptions, ModelInfo, create_backend
from .config import Settings
from .cpus import usable_cpus
from .engine import Engine
from .error_handlers import install_error_handlers
from .errors import (
    InvalidRequest,
    ModelNotFound,
    NotReady,
    RequestTimeout,
    Unauthorized,
)
from .gpu_memory import refresh_gpu_memory
from .logging_setup import Sampler
from .metrics import Metrics
from .pipeline import Transcriber
from .realtime import KEY_SUBPROTOCOL, RealtimeHub
from .scratch import ScratchBudget, request_scratch_bytes
from .timing import server_timing
from .upload_guard import UploadGuard, require_api_key, token_matches
from .warmup import to_wav_bytes, warmup_samples

log = logging.getLogger("asr_inference.app")

_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:/+=@-]{1,64}")


def client_request_id(raw: bytes) -> str | None:
    """The client's X-Request-Id if it is a plain token (it goes into logs and back as a header); anything else
    (non-UTF-8 bytes, control characters, over 64 characters) is replaced rather than trusted or answered with 500."""
    return raw.decode("ascii") if _REQUEST_ID.fullmatch(raw) else None


access_log = logging.getLogger("asr_inference.access")
TRANSCRIBE_PATH = "/v1/audio/transcriptions"
CLIENT_CLOSED = 499  # nginx's code for "client closed the request"


@dataclass
class ServerState:
    settings: Settings
    metrics: Metrics
    model_name: str
    backend: Backend | None = None
    engine: Engine | None = None
    transcriber: Transcriber | None = None
    info: ModelInfo | None = None
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    load_error: str | None = None
    started_at: float = field(default_factory=time.monotonic)
    ready_after_s: float | None = None
    # called once when the model fails to load; `asr-serve` sets it to stop the server (exit 1) at once instead of
    # serving 503s until a startup probe gives up
    on_load_failure: Callable[[str], None] | None = None
    scratch: ScratchBudget = field(default_factory=lambda: ScratchBudget(None, tempfile.gettempdir()))  # no limit

    @property
    def names(self) -> list[str]:
        """Every name this server answers to; the first is its id."""
        return self.settings.served_names or [self.model_name]


async def _load_and_warm(state: ServerState, pool: ThreadPoolExecutor) -> None:
    settings, metrics = state.settings, state.metrics
    loop = asyncio.get_running_loop()
    backend = await loop.run_in_executor(None, create_backend, settings, metrics)
    await loop.run_in_executor(None, backend.load)
    engine = Engine(
        backend,
        metrics,
        max_batch_size=settings.max_batch_size,
        max_wait_ms=settings.max_wait_ms,
        max_batch_audio_s=settings.max_batch_audio_s,
        max_queue_size=settings.max_queue_size,
        max_queue_wait_s=settings.max_queue_wait_s,
    )
    # 1) precision check on a full batch, on the inference thread (fp32 vs the requested reduced precision)
    samples = warmup_samples(settings)
    prepared = [await loop.run_in_executor(pool, backend.prepare, s) for s in samples]
    info = await engine.run_on_device(backend.warm, prepared)
    if info.precision_fallback_reason is not None:
        metrics.precision_fallback_total.inc()
    # 2) the whole path — decode, features, queue, batch, forward, stitch — with the full batch at once
    engine.start()
    transcriber = Transcriber(settings, backend, engine, metrics, pool)
    uploads = [to_wav_bytes(s) for s in samples]
    engine.queue.max_wait_s = 60.0  # hold the batch until all warm-up items are in: one full-size forward
    tickets = [engine.ticket().arrive() for _ in uploads]  # not admitted: warm-up is never refused
    try:
        await asyncio.gather(
            *(
                transcriber.transcribe(io.BytesIO(u), DecodeOptions(), trusted=True, on_queued=t.release)
                for u, t in zip(uploads, tickets, strict=True)
            )
        )
    finally:
        engine.queue.max_wait_s = settings.max_wait_ms / 1000
        for t in tickets:
            t.release()
    state.backend, state.engine, state.transcriber, state.info = backend, engine, transcriber, info
    if info.device.startswith("cuda"):
        import torch

        metrics.gpu_memory_total_bytes.set(torch.cuda.get_device_properties(torch.device(info.device)).total_memory)
    state.ready_after_s = time.monotonic() - state.started_at
    metrics.model_ready.set(1)
    state.ready.set()
    log.info(
        "ready",
        extra={"model": info.name, "family": info.family, "device": info.device, "precision": info.precision,
               "graph_mode": info.graph_mode, "startup_s": round(state.ready_after_s, 2)},
    )  # fmt: skip


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    source = model_source.resolve(settings)  # a bad --model fails here, before any import or hub call
    metrics = Metrics()
    scratch = ScratchBudget(
        int(settings.scratch_mb * 2**20) or None,
        tempfile.gettempdir(),
        request_scratch_bytes(int(settings.max_upload_mb * 2**20), settings.max_audio_s),
    )
    state = ServerState(settings, metrics, source.name, scratch=scratch)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        tempfiles.sweep_stale()  # what servers killed before they could clean up left in the temp dir
        pool = ThreadPoolExecutor(max_workers=settings.decode_workers or usable_cpus(), thread_name_prefix="asr-decode")
        state.started_at = time.monotonic()

        async def guarded() -> None:
            try:
                await _load_and_warm(state, pool)
            except Exception as exc:
                state.load_error = f"{type(exc).__name__}: {exc}"
                log.critical("model failed to load: %s", state.load_error, exc_info=True)
                if state.on_load_failure is not None:
                    state.on_load_failure(state.load_error)

        loader = asyncio.create_task(guarded(), name="asr-load")
        try:
            yield
        finally:
            loader.cancel()
            if state.engine is not None:
                drained = await state.engine.drain(settings.drain_timeout_s)
                log.info("shutdown", extra={"drained": drained})
                await state.engine.stop()
            pool.shutdown(wait=False, cancel_futures=True)
            metrics.model_ready.set(0)

    app = FastAPI(
        title="asr-platform inference server", version="0.1.0", lifespan=lifespan,
        docs_url=None, redoc_url=None, openapi_url=None,  # api_docs serves them, behind the key when one is set
    )  # fmt: skip
    app.state.asr = state
    # inner first: the guard sees only transcription uploads, inside the request's log line and metrics
    app.add_middleware(
        UploadGuard, path=TRANSCRIBE_PATH, api_key=settings.api_key, max_upload_mb=settings.max_upload_mb,
        upload_timeout_s=settings.upload_timeout_s, scratch=state.scratch, max_audio_s=settings.max_audio_s,
        engine=lambda: state.engine,
    )  # fmt: skip
    app.add_middleware(RequestContextMiddleware, state=state)
    install_error_handlers(app)
    _add_routes(app, state)
    playground.install(app, state)  # / and /playground unless --no-playground
    api_docs.install(app, settings)
    return app


# ---------------------------------------------------------------------------------------------- middleware
class RequestContextMiddleware:
    """Pure ASGI (keeps `receive` intact for disconnect detection): request id, one JSON log line per
    transcription request, `asr_requests_total{code}` and request latency. Size, key and stall: `UploadGuard`."""

    def __init__(self, app: ASGIApp, state: ServerState) -> None:
        self.app = app
        self.state = state
        self.refusals = Sampler(1.0)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != TRANSCRIBE_PATH:
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        request_id = client_request_id(headers.get(b"x-request-id", b"")) or uuid.uuid4().hex
        ctx: dict[str, Any] = {"request_id": request_id, "t0": time.perf_counter(), "status": 500}
        scope.setdefault("state", {})["asr"] = ctx
        metrics = self.state.metrics

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                ctx["status"] = message["status"]
                message.setdefault("headers", []).append((b"x-request-id", request_id.encode()))
                if "timing" in ctx:
                    total_s = time.perf_counter() - ctx["t0"]
                    header = server_timing(**ctx["timing"], total_s=total_s, cached=bool(ctx.get("cache")))
                    message["headers"].append((b"server-timing", header.encode()))
            await send(message)

        metrics.inflight_requests.inc()
        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            metrics.inflight_requests.dec()
            elapsed = time.perf_counter() - ctx["t0"]
            status = ctx.get("override_status") or ctx["status"]
            metrics.requests_total.labels(code=str(status)).inc()
            metrics.request_duration_seconds.observe(elapsed)
            if status == 200 and ctx.get("audio_s"):
                metrics.audio_seconds_total.inc(ctx["audio_s"])
            # refusals of an overload: one line a second, with the count of those left out
            left_out = self.refusals.take() if status == 429 else 0
            if left_out is not None:
                sampled = {"left_out": left_out} if status == 429 else {}
                _log_request(request_id, scope, status, elapsed, ctx, sampled)


def _log_request(
    request_id: str, scope: Scope, status: int, elapsed: float, ctx: dict[str, Any], sampled: dict[str, int]
) -> None:
    """The one access-log line of a transcription request."""
    access_log.info(
        "request",
        extra={
            "request_id": request_id,
            "method": scope["method"],
            "path": scope["path"],
            "status": status,
            "duration_ms": round(elapsed * 1000, 2),
            "audio_s": round(ctx.get("audio_s", 0.0), 3),
            "batch_size": ctx.get("batch_size", 0),
            "cache": ctx.get("cache"),
            **sampled,
        },
    )


# ---------------------------------------------------------------------------------------------- routes
async def _wait_for_disconnect(request: Request) -> None:
    """Returns when the client goes away. Only called after the body is fully read."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


def _add_routes(app: FastAPI, state: ServerState) -> None:
    settings = state.settings

    def check_auth(request: HTTPConnection) -> None:
        require_api_key(settings.api_key, request)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> Response:
        if state.load_error is not None:
            return JSONResponse({"status": "error", "error": state.load_error}, status_code=503)
        if state.engine is not None and state.engine.device_failure:  # only a restart gives a working device
            return JSONResponse({"status": "error", "error": state.engine.device_failure}, status_code=503)
        return JSONResponse({"status": "ok"})

    @app.get("/readyz", include_in_schema=False)
    async def readyz() -> Response:
        if state.engine is not None and state.engine.device_failure:
            return JSONResponse({"status": "error", "error": state.engine.device_failure}, status_code=503)
        if not state.ready.is_set() or state.info is None:
            body = {"status": "loading" if state.load_error is None else "error", "model": state.model_name}
            if state.load_error:
                body["error"] = state.load_error
            return JSONResponse(body, status_code=503)
        info = state.info
        return JSONResponse(
            {
                "status": "ready",
                "model": info.name,
                "family": info.family,
                "device": info.device,
                "precision": info.precision,
                "requested_precision": info.requested_precision,
                "precision_fallback_reason": info.precision_fallback_reason,
                "precision_check": {
                    "argmax_agreement": info.precision_agreement,
                    "cer": info.precision_cer,
                    "failure": info.precision_check_failure,
                    "forced": info.precision_forced,
                },
                "graph_mode": info.graph_mode,
                "graph_fallback_reason": info.graph_fallback_reason,
                "tf32": info.tf32,
                "max_batch_size": settings.max_batch_size,
                "scratch": state.scratch.report(),
                "startup_seconds": round(state.ready_after_s or 0.0, 3),
            }
        )

    @app.get("/metrics", include_in_schema=False)
    async def metrics_endpoint() -> Response:
        if state.engine is not None:
            state.engine.queue.drop_abandoned()
        if state.backend is not None:
            refresh_gpu_memory(state.metrics, getattr(state.backend, "device", None))
        return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/models")
    async def list_models(request: Request) -> dict[str, Any]:
        check_auth(request)
        return {
            "object": "list",
            "data": [{"id": name, "object": "model", "created": 0, "owned_by": "asr-platform"} for name in state.names],
        }

    hub = RealtimeHub(settings, state.metrics)

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

        ready = state.transcriber if state.ready.is_set() else None
        await hub.handle(websocket, ready, state.model_name, authorized)

    @app.post(TRANSCRIBE_PATH, response_model=None, responses=api_docs.error_responses(api_docs.TRANSCRIBE_ERRORS))
    async def transcriptions(
        request: Request,
        file: Annotated[UploadFile, File(description="Audio file")],
        model: Annotated[str | None, Form()] = None,
        language: Annotated[str | None, Form()] = None,
        prompt: Annotated[str | None, Form()] = None,
        response_format: Annotated[str, Form()] = "json",
        temperature: Annotated[float, Form(ge=0.0, le=1.0)] = 0.0,
        timestamp_granularities: Annotated[list[str] | None, Form(alias="timestamp_granularities[]")] = None,
        stream: Annotated[bool, Form()] = False,
    ) -> Response:
        check_auth(request)
        if (parts := len((await request.form()).getlist("file"))) > 1:  # parsed already: FastAPI keeps the form
            raise InvalidRequest(f"send one `file` part; this request has {parts}")
        ctx = request.scope["state"]["asr"]
        if not state.ready.is_set() or state.transcriber is None or state.engine is None:
            raise NotReady()
        if model and settings.strict_model_name and model not in state.names:
            raise ModelNotFound(f"model {model!r} is not served here; this server serves {', '.join(state.names)}")
        if response_format not in formats.RESPONSE_FORMATS:
            raise InvalidRequest(
                f"response_format must be one of {', '.join(formats.RESPONSE_FORMATS)}, not {response_format!r}"
            )
        granularities = set(timestamp_granularities or [])
        if not granularities <= {"segment", "word"}:
            raise InvalidRequest("timestamp_granularities[] accepts 'segment' and 'word'")
        lang = (language or "auto").strip().lower()
        languages = state.backend.languages if state.backend is not None else None
        if languages is not None and lang not in languages:
            raise InvalidRequest(f"language {lang!r} is not supported by this model; use one of {sorted(languages)}")
        options = DecodeOptions(language=lang, use_itn=False, prompt=prompt or None)
        cutting = chunking.parse(await request.form(), settings)
        if stream:
            return streaming.sse_response(state.transcriber, state.engine, file.file, options, cutting, ctx)
        ticket = ctx.get("ticket") or state.engine.ticket().admit()  # the upload guard admitted it before the parse
        try:
            budget = settings.request_timeout_s - (time.perf_counter() - ctx["t0"])
            work = asyncio.create_task(
                state.transcriber.transcribe(file.file, options, on_queued=ticket.release, chunking=cutting)
            )
            watcher = asyncio.create_task(_wait_for_disconnect(request))
            done, _ = await asyncio.wait({work, watcher}, timeout=max(budget, 0.001), return_when="FIRST_COMPLETED")
        finally:
            ticket.release()
        if work not in done:
            work.cancel()  # cancels its queued items: the batcher skips them
            watcher.cancel()
            if watcher in done:
                ctx["override_status"] = CLIENT_CLOSED
                return Response(status_code=CLIENT_CLOSED)
            raise RequestTimeout(f"transcription did not finish within {settings.request_timeout_s:g} s")
        watcher.cancel()
        transcript, cached = work.result()
        ctx.update(audio_s=transcript.duration, batch_size=transcript.max_batch_size, cache=cached)
        ctx["timing"] = {"queue_s": transcript.queue_s, "inference_s": transcript.inference_s}

        if response_format == "text":
            return PlainTextResponse(transcript.text)
        if response_format == "srt":
            return PlainTextResponse(formats.to_srt(transcript), media_type="application/x-subrip")
        if response_format == "vtt":
            return PlainTextResponse(formats.to_vtt(transcript), media_type="text/vtt")
        if response_format == "verbose_json":
            return JSONResponse(
                formats.to_verbose_json(transcript, words="word" in granularities, model=state.model_name)
            )
        return JSONResponse(formats.to_json(transcript))
