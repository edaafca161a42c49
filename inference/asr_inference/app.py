"""`create_app(settings)`: the FastAPI app, its lifespan (load + warm the model in the background so /healthz
answers at once and /readyz turns 200 when warm) and the middleware around every transcription request. The routes
are in `routes.py`, loading in `loading.py`."""

from __future__ import annotations

import asyncio
import logging
import re
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from . import api_docs, model_source, playground, tempfiles
from .backends import Backend, ModelInfo
from .config import Settings
from .cpus import usable_cpus
from .engine import Engine
from .error_handlers import install_error_handlers
from .loading import Loaded, load_and_warm
from .logging_setup import Sampler
from .metrics import Metrics
from .pipeline import Transcriber
from .realtime import RealtimeHub
from .routes import TRANSCRIBE_PATH, add_routes
from .scratch import ScratchBudget, request_scratch_bytes
from .timing import server_timing
from .upload_guard import UploadGuard

log = logging.getLogger("asr_inference.app")

_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:/+=@-]{1,64}")


def client_request_id(raw: bytes) -> str | None:
    """The client's X-Request-Id if it is a plain token (it goes into logs and back as a header); anything else
    (non-UTF-8 bytes, control characters, over 64 characters) is replaced rather than trusted or answered with 500."""
    return raw.decode("ascii") if _REQUEST_ID.fullmatch(raw) else None


access_log = logging.getLogger("asr_inference.access")


@dataclass
class ServerState:
    settings: Settings
    metrics: Metrics
    model_name: str
    loaded: Loaded | None = None  # set once, when the model is loaded and warm
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    load_error: str | None = None
    started_at: float = field(default_factory=time.monotonic)
    ready_after_s: float | None = None
    # called once when the model fails to load; `asr-serve` sets it to stop the server (exit 1) at once instead of
    # serving 503s until a startup probe gives up
    on_load_failure: Callable[[str], None] | None = None
    scratch: ScratchBudget = field(default_factory=lambda: ScratchBudget(None, tempfile.gettempdir()))  # no limit
    realtime: RealtimeHub = field(init=False)  # the realtime sessions (drained at shutdown, before the sockets close)
    drain_deadline: float | None = None  # monotonic; set when the drain starts (asr-serve, on SIGTERM)

    def __post_init__(self) -> None:
        self.realtime = RealtimeHub(self.settings, self.metrics)

    def drain_left_s(self) -> float:
        """What is left of --drain-timeout-s for the next step of the drain (all of it before the drain starts)."""
        if self.drain_deadline is None:
            return self.settings.drain_timeout_s
        return max(self.drain_deadline - time.monotonic(), 0.0)

    @property
    def names(self) -> list[str]:
        """Every name this server answers to; the first is its id."""
        return self.settings.served_names or [self.model_name]

    # the parts of `loaded`, None until then (the upload guard, the playground and tests read them)
    @property
    def engine(self) -> Engine | None:
        return self.loaded.engine if self.loaded else None

    @property
    def backend(self) -> Backend | None:
        return self.loaded.backend if self.loaded else None

    @property
    def transcriber(self) -> Transcriber | None:
        return self.loaded.transcriber if self.loaded else None

    @property
    def info(self) -> ModelInfo | None:
        return self.loaded.info if self.loaded else None


async def _load(state: ServerState, pool: ThreadPoolExecutor) -> None:
    state.loaded = await load_and_warm(state.settings, state.metrics, pool)
    info = state.loaded.info
    state.ready_after_s = time.monotonic() - state.started_at
    state.metrics.model_ready.set(1)
    state.ready.set()
    log.info(
        "ready",
        extra={"model": info.name, "family": info.family, "device": info.device, "precision": info.precision,
               "runtime": info.runtime, "graph_mode": info.graph_mode, "startup_s": round(state.ready_after_s, 2)},
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
    # the autoscaling signal, computed at every scrape: queued work plus what the realtime streams bring
    metrics.load.set_function(
        lambda: (state.loaded.engine.queue.live_count() if state.loaded else 0) + state.realtime.stream_load()
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        tempfiles.sweep_stale()  # what servers killed before they could clean up left in the temp dir
        pool = ThreadPoolExecutor(max_workers=settings.decode_workers or usable_cpus(), thread_name_prefix="asr-decode")
        state.started_at = time.monotonic()

        async def guarded() -> None:
            try:
                await _load(state, pool)
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
                drained = await state.engine.drain(state.drain_left_s())
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
    add_routes(app, state)
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
