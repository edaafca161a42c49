"""Server configurations under test and their processes: start, wait for readiness (timed), stop."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import httpx

HOST = "127.0.0.1"


@dataclass
class ServerConfig:
    """One side of the comparison."""

    name: str
    kind: str  # "ours" | "funasr-server" | "funasr-onnx" | "sherpa-onnx" | "transformers-pipeline" | "external"
    description: str
    max_batch_size: int = 1
    precision: str = "fp32"
    extra_args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    base: str | None = None  # a --variant: the standard config it modifies

    @property
    def ready_path(self) -> str:
        peers = ("funasr-server", "funasr-onnx", "sherpa-onnx", "transformers-pipeline")
        return "/health" if self.kind in peers else "/readyz"

    @property
    def form(self) -> dict[str, str]:
        """Form fields of a transcription request (funasr-server serves a --model-path as model=custom)."""
        return {"model": "custom"} if self.kind == "funasr-server" else {"response_format": "json"}

    @property
    def has_metrics(self) -> bool:
        return self.kind in ("ours", "external")


def standard_configs(max_batch_size: int, max_wait_ms: float, server_args: list[str]) -> dict[str, ServerConfig]:
    common = ["--max-wait-ms", f"{max_wait_ms:g}", *server_args]
    return {
        "ours-batched-fp32": ServerConfig(
            "ours-batched-fp32",
            "ours",
            f"asr-serve, dynamic batching up to {max_batch_size}, fp32",
            max_batch_size,
            "fp32",
            common,
        ),
        "ours-per-request-fp32": ServerConfig(
            "ours-per-request-fp32",
            "ours",
            "asr-serve --max-batch-size 1 (one request per forward), fp32",
            1,
            "fp32",
            common,
        ),
        "ours-batched-bf16": ServerConfig(
            "ours-batched-bf16",
            "ours",
            f"asr-serve, dynamic batching up to {max_batch_size}, bf16 autocast (CPU) / requested reduced precision",
            max_batch_size,
            "bf16",
            common,
        ),
        "ours-batched-fp16": ServerConfig(
            "ours-batched-fp16",
            "ours",
            f"asr-serve, dynamic batching up to {max_batch_size}, fp16 autocast (GPU only; CPU falls back to fp32)",
            max_batch_size,
            "fp16",
            common,
        ),
        "funasr-server": ServerConfig(
            "funasr-server", "funasr-server", "FunASR's own funasr-server (AutoModel.generate, one request at a time)"
        ),
        "funasr-onnx": ServerConfig(
            "funasr-onnx", "funasr-onnx", "FunASR's ONNX runtime (funasr-onnx) on FunASR's own export, one at a time"
        ),
        "transformers-pipeline": ServerConfig(
            "transformers-pipeline",
            "transformers-pipeline",
            "transformers per request, one at a time: Whisper's pipeline, GLM-ASR's model-card recipe",
        ),
        "sherpa-onnx": ServerConfig(
            "sherpa-onnx",
            "sherpa-onnx",
            "sherpa-onnx's offline SenseVoice recognizer (C++ features, ONNX Runtime, CTC) on the model's export, "
            "one at a time",
        ),
        "sherpa-onnx-int8": ServerConfig(
            "sherpa-onnx-int8",
            "sherpa-onnx",
            "sherpa-onnx's offline SenseVoice recognizer on ONNX Runtime's dynamic INT8 of the export, one at a time",
            extra_args=["--quantize"],
        ),
        "funasr-onnx-int8": ServerConfig(
            "funasr-onnx-int8",
            "funasr-onnx",
            "FunASR's ONNX runtime (funasr-onnx) on FunASR's own INT8 export (model_quant.onnx), one at a time",
            extra_args=["--quantize"],
        ),
    }


def parse_variant(spec: str, catalogue: dict[str, ServerConfig]) -> ServerConfig:
    """`NAME=BASE,ARG,ARG,...`: a copy of standard config BASE with extra asr-serve flags appended (later flags
    win) and `env:KEY=VALUE` items set in its environment (e.g. `env:PYTHONPATH=/scratch` to run a modified copy
    of the server). Example: `ours-ncpu1=ours-batched-fp32,--ncpu=1`."""
    name, sep, rest = spec.partition("=")
    parts = [p for p in rest.split(",") if p]
    if not sep or not name or not parts or parts[0] not in catalogue or catalogue[parts[0]].kind != "ours":
        raise ValueError(f"--variant {spec!r}: expected NAME=BASE[,ARG...] with BASE one of our configs")
    base = catalogue[parts[0]]
    args = [p for p in parts[1:] if not p.startswith("env:")]
    env = dict(p[4:].split("=", 1) for p in parts[1:] if p.startswith("env:") and "=" in p)
    return ServerConfig(
        name, base.kind, f"{base.description}; variant: {' '.join(parts[1:])}", base.max_batch_size, base.precision,
        [*base.extra_args, *args], env, base.name,
    )  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


class ServerProcess:
    """A server started by the benchmark. `start()` returns once it answers its readiness probe with 200."""

    def __init__(
        self,
        config: ServerConfig,
        *,
        model: Path,
        device: str,
        ncpu: int,
        log_dir: Path,
        peer_stock: bool = False,
    ) -> None:
        self.config = config
        self.model = model
        self.device = device
        self.ncpu = ncpu
        self.port = free_port()
        self.url = f"http://{HOST}:{self.port}"
        self.log_path = log_dir / f"server-{config.name}.log"
        self.peer_stock = peer_stock
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: TextIO | None = None
        self.ready_s: float | None = None
        self.ready_body: dict[str, Any] | None = None

    def command(self) -> list[str]:
        bindir = Path(sys.executable).parent
        c = self.config
        if c.kind == "ours":
            exe = bindir / "asr-serve"
            return [
                str(exe) if exe.exists() else "asr-serve",
                "--model",
                str(self.model),
                "--host",
                HOST,
                "--port",
                str(self.port),
                "--device",
                self.device,
                "--precision",
                c.precision,
                "--max-batch-size",
                str(c.max_batch_size),
                "--ncpu",
                str(self.ncpu),
                "--decode-workers",
                str(self.ncpu),
                "--cache-entries",
                "0",  # the clips repeat: a result cache would answer them without the model
                "--log-level",
                "warning",
                "--log-format",
                "text",
                *c.extra_args,
            ]
        if c.kind == "funasr-onnx":  # no server of its own: a thin one around its Python API (onnx_peer.py)
            return [sys.executable, "-m", "asr_bench.onnx_peer", "--model", str(self.model), "--ncpu", str(self.ncpu),
                    "--host", HOST, "--port", str(self.port), *c.extra_args]  # fmt: skip
        if c.kind == "sherpa-onnx":  # its Python API behind the same thin server (sherpa_peer.py)
            return [sys.executable, "-m", "asr_bench.sherpa_peer", "--model", str(self.model), "--ncpu", str(self.ncpu),
                    "--host", HOST, "--port", str(self.port), *c.extra_args]  # fmt: skip
        if c.kind == "transformers-pipeline":  # no server of its own either (hf_peer.py)
            return [sys.executable, "-m", "asr_bench.hf_peer", "--model", str(self.model), "--ncpu", str(self.ncpu),
                    "--device", self.device, "--host", HOST, "--port", str(self.port), *c.extra_args]  # fmt: skip
        peer_args = ["--host", HOST, "--port", str(self.port), "--device", self.device, "--model-path", str(self.model)]
        if self.peer_stock:
            exe = bindir / "funasr-server"
            return [str(exe) if exe.exists() else "funasr-server", *peer_args]
        # funasr-server has no thread flag and its AutoModel resets torch to 4 threads on every generate():
        # this wrapper runs the same server with ncpu = ours, so both sides use the same number of threads.
        return [sys.executable, "-m", "asr_bench.peer", "--ncpu", str(self.ncpu), "--", *peer_args]

    def start(self, timeout_s: float) -> float:
        env = dict(os.environ)
        env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", MODELSCOPE_OFFLINE="1", PYTHONUNBUFFERED="1")
        env.setdefault("OMP_NUM_THREADS", str(self.ncpu))
        env.update(self.config.env)
        self._log = self.log_path.open("w")
        t0 = time.monotonic()
        self.proc = subprocess.Popen(
            self.command(), stdout=self._log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        deadline = t0 + timeout_s
        with httpx.Client(timeout=2.0, trust_env=False) as client:
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(
                        f"{self.config.name} exited ({self.proc.returncode}) before it was ready; see {self.log_path}"
                    )
                with contextlib.suppress(httpx.HTTPError):
                    r = client.get(self.url + self.config.ready_path)
                    if r.status_code == 200:
                        self.ready_s = time.monotonic() - t0
                        with contextlib.suppress(ValueError):
                            self.ready_body = r.json()
                        return self.ready_s
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"{self.config.name} not ready after {timeout_s:g} s; see {self.log_path}")
                time.sleep(0.1)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        if self._log is not None:
            self._log.close()
            self._log = None
