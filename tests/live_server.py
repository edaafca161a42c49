"""A real `asr-serve` process on 127.0.0.1 (uvicorn, the embedded demo model unless told otherwise), for tests
that need a server other programs can reach: the browser test and the Prometheus test."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http_ok(url: str, proc: subprocess.Popen[bytes], timeout_s: float, what: str, log: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if proc.poll() is not None:
            raise AssertionError(f"{what} exited with {proc.returncode}:\n{log.read_text()[-4000:]}")
        time.sleep(0.2)
    raise AssertionError(f"{what} not ready at {url} after {timeout_s:g} s:\n{log.read_text()[-4000:]}")


@contextmanager
def asr_serve(*args: str, timeout_s: float = 180.0) -> Iterator[str]:
    """Start asr-serve with `args`, wait for /readyz 200, yield its base URL; SIGTERM (then kill) after."""
    port = free_port()
    exe = Path(sys.executable).parent / "asr-serve"
    with tempfile.TemporaryDirectory(prefix="asr-serve-") as tmp:
        log = Path(tmp) / "server.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [str(exe), "--host", "127.0.0.1", "--port", str(port), "--log-format", "text", *args],
                env=os.environ.copy(), stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
            base = f"http://127.0.0.1:{port}"
            try:
                wait_http_ok(f"{base}/readyz", proc, timeout_s, "asr-serve", log)
                yield base
            finally:
                proc.terminate()
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
