"""Run the real app (real funasr, tiny models) in-process through an ASGI client; read its metrics."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
from asr_inference.app import create_app
from asr_inference.config import Settings
from prometheus_client.parser import text_string_to_metric_families


@asynccontextmanager
async def serve(wait_ready: bool = True, **settings: Any) -> AsyncIterator[tuple[Any, httpx.AsyncClient]]:
    """Start the app (lifespan included) and yield (app, client). Waits for warm-up unless told not to."""
    settings.setdefault("log_format", "json")
    app = create_app(Settings(**settings))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver", timeout=120) as client:
            if wait_ready:
                await wait_until_ready(app)
            yield app, client


async def wait_until_ready(app: Any, timeout_s: float = 120.0) -> None:
    state = app.state.asr
    async with asyncio.timeout(timeout_s):
        while not state.ready.is_set():
            if state.load_error:
                raise AssertionError(f"model failed to load: {state.load_error}")
            await asyncio.sleep(0.05)


async def transcribe(client: httpx.AsyncClient, path: Path | bytes, **form: Any) -> httpx.Response:
    content = path if isinstance(path, bytes) else path.read_bytes()
    name = "audio.wav" if isinstance(path, bytes) else path.name
    return await client.post("/v1/audio/transcriptions", files={"file": (name, content)}, data=form)


async def metric_samples(client: httpx.AsyncClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = (await client.get("/metrics")).text
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def metric(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)
