"""The built-in playground: a static page (plain HTML/JS/CSS in `playground/`) at `/` and `/playground`.

It talks to the same API as every other client (POST /v1/audio/transcriptions, /readyz, /metrics), so it needs
no server-side state of its own beyond `/playground/config.json` (whether an API key is needed, the languages the
model accepts). The page itself is served without the key; its API calls send the key the user types in.
`--no-playground` leaves the routes out (404). Nothing it loads comes from another origin (works offline and
in-cluster), which the Content-Security-Policy below also enforces in the browser.
"""

from __future__ import annotations

from importlib import resources
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, FastAPI
from fastapi.responses import JSONResponse, Response

from . import formats
from .errors import NotFound

if TYPE_CHECKING:
    from .app import ServerState

STATIC_PREFIX = "/playground/static/"
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
}
# Same-origin only; blob: for the recorded/uploaded audio the page plays back.
CSP = (
    "default-src 'self'; img-src 'self' data: blob:; media-src 'self' blob:; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'none'"
)


def _load_files() -> dict[str, bytes]:
    """Every file of the page, read once at start: a fixed set of names, so a request can never name a path."""
    root = resources.files(__package__).joinpath("playground")
    return {
        entry.name: entry.read_bytes()
        for entry in root.iterdir()
        if entry.is_file() and any(entry.name.endswith(ext) for ext in CONTENT_TYPES)
    }


def _response(name: str, body: bytes) -> Response:
    media_type = next(t for ext, t in CONTENT_TYPES.items() if name.endswith(ext))
    headers = {"Cache-Control": "no-cache", "Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff"}
    return Response(body, media_type=media_type, headers=headers)


def build_router(state: ServerState) -> APIRouter:
    files = _load_files()
    router = APIRouter(include_in_schema=False)

    async def index() -> Response:
        return _response("index.html", files["index.html"])

    router.add_api_route("/", index, methods=["GET"])
    router.add_api_route("/playground", index, methods=["GET"])

    @router.get(STATIC_PREFIX + "{name}")
    async def static(name: str) -> Response:
        if name not in files:
            raise NotFound(f"no playground file {name!r}")
        return _response(name, files[name])

    @router.get("/playground/config.json")
    async def config() -> Response:
        languages = state.backend.languages if state.backend is not None else None
        body: dict[str, Any] = {
            "api_key_required": state.settings.api_key is not None,
            "model": state.model_name,
            "languages": sorted(languages) if languages is not None else None,
            "response_formats": list(formats.RESPONSE_FORMATS),
            "max_batch_size": state.settings.max_batch_size,
        }
        return JSONResponse(body, headers={"Cache-Control": "no-cache"})

    return router


def install(app: FastAPI, state: ServerState) -> None:
    """Add the playground's routes unless `--no-playground`."""
    if state.settings.playground:
        app.include_router(build_router(state))
