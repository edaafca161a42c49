"""The one place exceptions become HTTP responses: status + `{"error": {"message", "type", "code"}}` for our typed
errors, request validation, and Starlette's own 404/405/413/400 (and the upload guard's refusals)."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from .errors import ASRError, InvalidRequest, MethodNotAllowed, NotFound, PayloadTooLarge
from .upload_guard import BodyRefused


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ASRError)
    async def _asr_error(request: Request, exc: ASRError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _starlette_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        err = exc.error if isinstance(exc, BodyRefused) else _http_error(exc.status_code, str(exc.detail), request)
        return JSONResponse(err.body(), status_code=err.status_code, headers={**(exc.headers or {}), **err.headers})

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'][1:])}: {e['msg']}" for e in exc.errors())
        err = InvalidRequest(f"invalid request: {problems}")
        return JSONResponse(err.body(), status_code=err.status_code)


def _http_error(status: int, detail: str, request: Request) -> ASRError:
    if status == 404:
        return NotFound(f"no such endpoint: {request.method} {request.url.path}")
    if status == 405:
        return MethodNotAllowed(f"{request.method} is not allowed on {request.url.path}")
    if status == 413:
        return PayloadTooLarge(detail)
    if 400 <= status < 500:
        return InvalidRequest(detail)
    err = ASRError(detail)
    err.status_code = status
    return err
