"""The transcription upload's guard, before a byte of the body is parsed: the API key from the headers (a wrong key
with a large or stalled body gets 401 at once), the size limit counted while the body streams in (a chunked body
has no Content-Length to check up front), a read timeout for a stalled body, and a client that hangs up during the
upload counted as 499 (not the 400 of a body that failed to parse), and the scratch disk the upload may fill
reserved before its body is read (429 when the budget is taken: `scratch.py`), and the request admitted from the
queue's state before its body is parsed (429 queue_full, the body never read); it counts as arriving, which holds
a forming batch open for it, only once its body is complete.

Pure ASGI. The limits act inside `receive`: the exception it raises is a Starlette HTTPException, which FastAPI's
body parsing passes on unchanged (any other exception there becomes a 400), so the app's one error mapping renders
it in the envelope and the response closes the connection (the rest of the body is never read)."""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import (
    ASRError,
    ClientClosed,
    DeviceFailed,
    PayloadTooLarge,
    QueueFull,
    ScratchFull,
    Unauthorized,
    UploadTimeout,
)
from .scratch import ScratchBudget, request_scratch_bytes

if TYPE_CHECKING:
    from .engine import Engine

MULTIPART_OVERHEAD = 64 * 1024  # boundaries and form fields around the file


class BodyRefused(HTTPException):
    """Raised from `receive`: carries the typed error to render."""

    def __init__(self, error: ASRError) -> None:
        super().__init__(status_code=error.status_code, detail=error.message, headers={"connection": "close"})
        self.error = error


def token_matches(api_key: str, token: str) -> bool:
    """The key compared in constant time (a timing side channel would tell the key a byte at a time)."""
    return hmac.compare_digest(token.strip().encode(), api_key.encode())


def api_key_matches(api_key: str | None, authorization: str) -> bool:
    """`Authorization: Bearer <api_key>` (always true when no key is set)."""
    if api_key is None:
        return True
    scheme, _, token = authorization.partition(" ")
    return scheme.lower() == "bearer" and token_matches(api_key, token)


def require_api_key(api_key: str | None, connection: HTTPConnection) -> None:
    """Raise Unauthorized unless the request (HTTP or WebSocket) carries the key."""
    if not api_key_matches(api_key, connection.headers.get("authorization", "")):
        raise Unauthorized()


class UploadGuard:
    def __init__(
        self,
        app: ASGIApp,
        *,
        path: str,
        api_key: str | None,
        max_upload_mb: float,
        upload_timeout_s: float,
        scratch: ScratchBudget | None = None,
        max_audio_s: float = 3600.0,
        engine: Callable[[], Engine | None] | None = None,
    ) -> None:
        self.app = app
        self.engine = engine or (lambda: None)
        self.scratch = scratch or ScratchBudget(None, "")
        self.max_audio_s = max_audio_s
        self.path = path
        self.api_key = api_key
        self.max_upload_mb = max_upload_mb
        self.limit = int(max_upload_mb * 2**20) + MULTIPART_OVERHEAD
        self.timeout_s = upload_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != self.path:
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        if not api_key_matches(self.api_key, headers.get(b"authorization", b"").decode("latin-1")):
            await self._refuse(Unauthorized(), scope, receive, send)  # the body is never read
            return
        length = headers.get(b"content-length", b"").strip()
        if length.isdigit() and int(length) > self.limit:
            await self._refuse(self._too_large(), scope, receive, send)
            return
        # a chunked body may grow to the limit: its worst case is reserved
        reservation = request_scratch_bytes(int(length) if length.isdigit() else self.limit, self.max_audio_s)
        if not self.scratch.try_reserve(reservation):
            busy = ScratchFull("the server's scratch disk is taken by uploads in progress; retry shortly", 1)
            await self._refuse(busy, scope, receive, send)
            return
        ctx: dict[str, Any] = scope.setdefault("state", {}).setdefault("asr", {})
        engine = self.engine()
        try:
            if engine is not None:  # admitted from the queue's state before a byte of the body is parsed
                ctx["ticket"] = engine.ticket().admit()
        except (QueueFull, DeviceFailed) as refused:  # no room, or a device that cannot serve any more
            self.scratch.release(reservation)
            await self._refuse(refused, scope, receive, send)
            return
        try:
            await self.app(scope, self._guarded(scope, receive, engine), send)
        finally:
            self.scratch.release(reservation)
            if (ticket := ctx.get("ticket")) is not None:  # idempotent: the route releases it once an item is queued
                ticket.release()

    def _too_large(self) -> PayloadTooLarge:
        return PayloadTooLarge(f"upload exceeds {self.max_upload_mb:g} MB")

    async def _refuse(self, error: ASRError, scope: Scope, receive: Receive, send: Send) -> None:
        headers = {**error.headers, "connection": "close"}
        await JSONResponse(error.body(), status_code=error.status_code, headers=headers)(scope, receive, send)

    def _guarded(self, scope: Scope, receive: Receive, engine: Engine | None) -> Receive:
        received = 0
        body_done = False
        ctx: dict[str, Any] = scope["state"]["asr"]

        async def guarded_receive() -> Message:
            nonlocal received, body_done
            if body_done:  # after the body: the route waits for the disconnect, for as long as it takes
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), self.timeout_s)
            except TimeoutError:
                raise BodyRefused(UploadTimeout(f"the upload stalled: no data for {self.timeout_s:g} s")) from None
            if message["type"] == "http.disconnect":
                scope.setdefault("state", {}).setdefault("asr", {})["override_status"] = ClientClosed.status_code
                raise BodyRefused(ClientClosed("the client closed the connection during the upload"))
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                body_done = not message.get("more_body", False)
                if received > self.limit:
                    raise BodyRefused(self._too_large())
                if body_done and (ticket := ctx.get("ticket")) is not None:
                    # only a complete body is on its way to the queue: a slow upload never holds a batch open
                    ticket.arrive()
            return message

        return guarded_receive
