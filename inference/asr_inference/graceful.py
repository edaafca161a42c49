"""SIGTERM in two steps. uvicorn's own shutdown closes every WebSocket at once with 1012, so a realtime client
would lose the speech it has sent but not yet got text for. `DrainingServer` runs `before_exit` first (the
realtime sessions end their open utterances and close themselves), then lets uvicorn shut down as usual (queued
uploads drained by the app's lifespan). A second signal skips the wait, as uvicorn's does."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from types import FrameType
from typing import Any

import uvicorn

log = logging.getLogger("asr_inference.graceful")


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, before_exit: Callable[[], Coroutine[Any, Any, object]]) -> None:
        super().__init__(config)
        self._before_exit = before_exit
        self._exit_requested = False
        self._draining: asyncio.Task[object] | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._exit_requested or self.should_exit:
            super().handle_exit(sig, frame)  # a second signal: shut down now
            return
        self._exit_requested = True  # the main loop's next tick starts the drain (signal handlers cannot await)

    async def on_tick(self, counter: int) -> bool:
        if self._exit_requested and self._draining is None:
            log.info("draining realtime sessions before shutdown")
            self._draining = asyncio.create_task(self._before_exit(), name="asr-drain-streams")
        if self._draining is not None and self._draining.done():
            self.should_exit = True
        return await super().on_tick(counter)
