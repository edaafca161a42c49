"""A realtime client for tests: the app under uvicorn on a loopback port and a client that streams a file through
`/v1/realtime?intent=transcription` (`websockets`), as the OpenAI Realtime API's clients do."""

from __future__ import annotations

import asyncio
import base64
import json
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import numpy as np
import uvicorn
import websockets
from asr_inference.app import create_app
from asr_inference.config import Settings

CHUNK_S = 0.1


@asynccontextmanager
async def live_server(model: str | None = None, **settings: Any) -> AsyncIterator[tuple[Any, str]]:
    """The app (the demo model by default) under uvicorn on a free loopback port; yields (app, ws url) once warm."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = create_app(Settings(model=model, device="cpu", ncpu=1, **settings))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, ws_max_size=1 << 24))
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(180):
            while not app.state.asr.ready.is_set():
                assert app.state.asr.load_error is None, app.state.asr.load_error
                await asyncio.sleep(0.05)
        yield app, f"ws://127.0.0.1:{port}/v1/realtime?intent=transcription"
    finally:
        server.should_exit = True
        await task


def pcm16_b64(samples: np.ndarray) -> str:
    return base64.b64encode((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes()).decode()


async def stream_file(url: str, samples: np.ndarray, rate: int, speedup: float = 10.0, **session: Any) -> list[dict]:
    """Send `samples` (at `rate`) in 100 ms appends at `speedup`× real time; return every server event until each
    committed item has its completed text."""
    events: list[dict] = []
    async with websockets.connect(url, max_size=1 << 24) as ws:
        update = {"type": "session.update", "session": {"type": "transcription",
                  "audio": {"input": {"format": {"type": "audio/pcm", "rate": rate}, **session}}}}  # fmt: skip
        await ws.send(json.dumps(update))
        step = int(rate * CHUNK_S)

        async def reader() -> None:
            async for raw in ws:
                events.append(json.loads(raw))

        reading = asyncio.create_task(reader())
        for a in range(0, len(samples), step):
            await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": pcm16_b64(samples[a : a + step])}))
            await asyncio.sleep(CHUNK_S / speedup)
        if session.get("turn_detection", "server_vad") is None:
            await ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
        async with asyncio.timeout(120):
            while True:
                await asyncio.sleep(0.05)
                committed = [e for e in events if e["type"] == "input_audio_buffer.committed"]
                done = [e for e in events if e["type"].endswith("input_audio_transcription.completed")]
                if committed and len(done) == len(committed):
                    break
        reading.cancel()
    return events
