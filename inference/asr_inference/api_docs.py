"""The API's own description: /openapi.json and /docs (behind the API key when one is set, unless --public-docs),
the error statuses the transcription endpoint really returns (in the one envelope; no 422, which it never sends),
and HEAD wherever GET is answered."""

from __future__ import annotations

import copy
from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.routing import APIRoute
from starlette.routing import BaseRoute

from .config import Settings
from .upload_guard import require_api_key

ENVELOPE = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type", "code"],
            "properties": {"message": {"type": "string"}, "type": {"type": "string"}, "code": {"type": "string"}},
        }
    },
}
TRANSCRIBE_ERRORS = {
    400: "invalid request or audio (empty, damaged, too short, non-finite samples; a second `file` part)",
    401: "missing or wrong API key",
    404: "unknown `model` (only with --strict-model-name)",
    408: "the upload stalled for --upload-timeout-s",
    413: "upload over --max-upload-mb or audio over --max-audio-s",
    415: "not audio in a format this server decodes",
    429: "queue full (Retry-After)",
    503: "model not loaded yet (Retry-After)",
    504: "not finished within --request-timeout-s",
}


def error_responses(statuses: dict[int, str]) -> dict[int | str, dict[str, Any]]:
    """`responses=` for a route: each status with its meaning and the error envelope."""
    return {
        status: {
            "description": text,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
        }
        for status, text in statuses.items()
    }


def _schema(app: FastAPI) -> dict[str, Any]:
    if app.openapi_schema is None:
        from fastapi.openapi.utils import get_openapi

        doc = get_openapi(title=app.title, version=app.version, routes=[_without_head(r) for r in app.routes])
        for path in doc.get("paths", {}).values():
            for operation in path.values():
                operation.get("responses", {}).pop("422", None)
        schemas = doc.setdefault("components", {}).setdefault("schemas", {})
        schemas.pop("HTTPValidationError", None)
        schemas.pop("ValidationError", None)
        schemas["Error"] = ENVELOPE
        app.openapi_schema = doc
    return app.openapi_schema


def _without_head(route: BaseRoute) -> BaseRoute:
    """The route as documented: HEAD (added below) is not an operation of its own."""
    if isinstance(route, APIRoute) and route.methods and "HEAD" in route.methods:
        documented = copy.copy(route)
        documented.methods = route.methods - {"HEAD"}
        return documented
    return route


def install(app: FastAPI, settings: Settings) -> None:
    """Call after every route is added (HEAD is added to the GET routes that exist then)."""
    protected = settings.api_key is not None and not settings.public_docs

    @app.get("/openapi.json", include_in_schema=False)
    async def openapi(request: Request) -> JSONResponse:
        if protected:
            require_api_key(settings.api_key, request)
        return JSONResponse(_schema(app))

    @app.get("/docs", include_in_schema=False)
    async def docs(request: Request) -> HTMLResponse:
        if protected:
            require_api_key(settings.api_key, request)
        return get_swagger_ui_html(openapi_url="/openapi.json", title=f"{app.title} — API")

    for route in app.routes:
        if isinstance(route, APIRoute) and route.methods and "GET" in route.methods:
            route.methods.add("HEAD")
