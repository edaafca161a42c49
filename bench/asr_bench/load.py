"""Load generators (aiohttp, async): closed loop (N clients, each sends its next request when the last returns) and
open loop (Poisson arrivals at a fixed rate, independent of answers), plus /metrics scraping.

The load generator shares the machine with the server it measures, so it is built to spend as little CPU per
request as it can: aiohttp (0.2 CPU-ms per request here, against 1.0 for httpx on the same loop) and each clip's
multipart body encoded once, not per request. Its CPU use is still measured and reported per cell."""

from __future__ import annotations

import asyncio
import json
import random
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import httpx

from .clips import Clip

TRANSCRIBE = "/v1/audio/transcriptions"
_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{([^}]*)\})?\s+(\S+)")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


@dataclass
class Sample:
    clip: str
    audio_s: float
    start: float  # perf_counter when sent (open loop: when it was due)
    end: float
    status: int  # HTTP status; 0: transport error / timeout
    error: str | None = None
    retry_after_s: float | None = None  # a 429's Retry-After

    @property
    def latency_s(self) -> float:
        return self.end - self.start


@dataclass
class CellResult:
    samples: list[Sample] = field(default_factory=list)
    started: float = 0.0
    finished: float = 0.0
    last_issued: float | None = None  # closed loop: when the last request was sent (all clients busy until then)
    dropped: int = 0  # open loop: arrivals not sent because too many were outstanding
    server_cpu_s: float | None = None  # CPU time (user+system, all threads) the server process used in the cell
    server_stage_cpu_s: dict[str, float] | None = None  # our server's inference-thread CPU per stage (/metrics)
    server_thread_cpu_s: dict[str, float] | None = None  # our server's CPU per thread group (/metrics)
    client_cpu_s: float | None = None  # CPU time this load generator used in the cell (it shares the machine)


def process_cpu_s(pid: int, tid: int | None = None) -> float | None:
    """User + system CPU seconds so far (Linux /proc) of a process, or of one of its threads."""
    import os

    stat = Path(f"/proc/{pid}/stat") if tid is None else Path(f"/proc/{pid}/task/{tid}/stat")
    try:
        fields = stat.read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def self_cpu_s() -> float:
    import resource

    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def _client(concurrency: int, timeout_s: float) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(limit=concurrency + 4, force_close=False)
    return aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=timeout_s))


_BODIES: dict[tuple[str, bytes, tuple[tuple[str, str], ...]], tuple[bytes, dict[str, str]]] = {}


def encoded_upload(clip: Clip, form: dict[str, str]) -> tuple[bytes, dict[str, str]]:
    """One clip's multipart/form-data request body and its content-type header, encoded once and reused."""
    key = (clip.name, clip.wav, tuple(sorted(form.items())))
    if key not in _BODIES:
        files = {"file": (clip.name, clip.wav, "audio/wav")}
        request = httpx.Request("POST", "http://127.0.0.1" + TRANSCRIBE, files=files, data=form)
        _BODIES[key] = (request.read(), {"Content-Type": request.headers["content-type"]})
    return _BODIES[key]


async def _send(client: aiohttp.ClientSession, url: str, clip: Clip, form: dict[str, str], start: float) -> Sample:
    body, headers = encoded_upload(clip, form)
    try:
        async with client.post(url + TRANSCRIBE, data=body, headers=headers) as r:
            status = r.status
            text = await r.text()
            retry_after = r.headers.get("Retry-After")
        error = None if status == 200 else text[:200]
        if status == 200:
            json.loads(text)  # a 200 must carry the transcript
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        status, error, retry_after = 0, f"{type(exc).__name__}: {exc}"[:200], None
    wait = float(retry_after) if retry_after and retry_after.isdigit() else None
    return Sample(clip.name, clip.duration_s, start, time.perf_counter(), status, error, wait)


async def single(url: str, clip: Clip, form: dict[str, str], timeout_s: float = 600.0) -> Sample:
    async with _client(1, timeout_s) as client:
        return await _send(client, url, clip, form, time.perf_counter())


async def closed_loop(
    url: str,
    clips: Sequence[Clip],
    form: dict[str, str],
    *,
    concurrency: int,
    requests: int,
    max_s: float,
    on_done: Callable[[], None] | None = None,
    timeout_s: float = 600.0,
    offset: int = 0,
    stop: Callable[[], bool] | None = None,
    honour_retry_after: bool = False,
) -> CellResult:
    """`concurrency` clients; stops issuing after `requests` requests or `max_s` seconds, whichever first (or once
    `stop()` is true: a caller that ends the load on an event, e.g. the e2e autoscaling scenario). With
    `honour_retry_after` a client refused with 429 waits its Retry-After (within the cell) before its next request,
    as a well-behaved client does; without, it sends at once.
    Clips go in a fixed order (`offset` rotates it), so every config gets the same sequence."""
    result = CellResult()
    issued = 0

    async with _client(concurrency, timeout_s) as client:

        async def worker() -> None:
            nonlocal issued
            while issued < requests and time.perf_counter() < deadline and not (stop and stop()):
                clip = clips[(offset + issued) % len(clips)]
                issued += 1
                result.last_issued = time.perf_counter()
                sample = await _send(client, url, clip, form, time.perf_counter())
                result.samples.append(sample)
                if on_done is not None:
                    on_done()
                if honour_retry_after and sample.status == 429 and sample.retry_after_s:
                    await asyncio.sleep(max(0.0, min(sample.retry_after_s, deadline - time.perf_counter())))

        result.started = time.perf_counter()
        deadline = result.started + max_s
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        result.finished = time.perf_counter()
    return result


async def open_loop(
    url: str,
    clips: Sequence[Clip],
    form: dict[str, str],
    *,
    rate: float,
    requests: int,
    max_s: float,
    max_outstanding: int = 256,
    seed: int = 0,
    on_done: Callable[[], None] | None = None,
    timeout_s: float = 600.0,
) -> CellResult:
    """Poisson arrivals at `rate`/s (exponential gaps from a seeded RNG: every config sees the same schedule).
    Latency counts from the scheduled arrival, so a client that falls behind does not hide queueing."""
    rng = random.Random(seed)
    result = CellResult()
    tasks: list[asyncio.Task[None]] = []
    outstanding = 0

    async with _client(max_outstanding, timeout_s) as client:

        async def fire(clip: Clip, due: float) -> None:
            nonlocal outstanding
            outstanding += 1
            try:
                result.samples.append(await _send(client, url, clip, form, due))
            finally:
                outstanding -= 1
                if on_done is not None:
                    on_done()

        result.started = time.perf_counter()
        due = result.started
        for i in range(requests):
            due += rng.expovariate(rate)
            if due - result.started > max_s:
                break
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            if outstanding >= max_outstanding:
                result.dropped += 1
                if on_done is not None:
                    on_done()
                continue
            tasks.append(asyncio.create_task(fire(clips[i % len(clips)], due)))
        await asyncio.gather(*tasks)
        result.finished = time.perf_counter()
    return result


# ---------------------------------------------------------------------------------------------- /metrics
def parse_metrics(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Prometheus text format → {(name, sorted labels): value}."""
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        if m is None:
            continue
        labels = tuple(sorted(_LABEL.findall(m.group(2) or "")))
        try:
            out[(m.group(1), labels)] = float(m.group(3))
        except ValueError:
            continue
    return out


async def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    async with httpx.AsyncClient(timeout=10.0, trust_env=False) as client:
        r = await client.get(url + "/metrics")
        r.raise_for_status()
        return parse_metrics(r.text)


def metrics_delta(
    before: dict[tuple[str, tuple[tuple[str, str], ...]], float],
    after: dict[tuple[str, tuple[tuple[str, str], ...]], float],
) -> dict[str, Any]:
    """Batch-size distribution (from `asr_batch_size_bucket` deltas) and per-stage mean durations between two
    scrapes of our server."""

    def d(name: str, labels: tuple[tuple[str, str], ...] = ()) -> float:
        return after.get((name, labels), 0.0) - before.get((name, labels), 0.0)

    cumulative = sorted(
        ((float(dict(lab)["le"]), d(name, lab)) for (name, lab) in after if name == "asr_batch_size_bucket"),
        key=lambda x: x[0],
    )
    histogram: dict[str, int] = {}
    prev_le, prev_count = 0.0, 0.0
    for le, count in cumulative:
        label = f"{prev_le:g}<n<={le:g}" if le != float("inf") else f">{prev_le:g}"
        if le == 1.0:
            label = "1"
        histogram[label] = round(count - prev_count)
        prev_le, prev_count = le, count
    batches = d("asr_batch_size_count")
    stages: dict[str, dict[str, float]] = {}
    for (name, lab), _ in after.items():
        if name != "asr_stage_duration_seconds_count":
            continue
        stage = dict(lab)["stage"]
        count = d(name, lab)
        total = d("asr_stage_duration_seconds_sum", lab)
        stages[stage] = {
            "count": round(count),
            "total_s": round(total, 4),
            "mean_ms": round(1000 * total / count, 3) if count else 0.0,
        }
    return {
        "batches": round(batches),
        "items": round(d("asr_batch_size_sum")),
        "mean_batch_size": round(d("asr_batch_size_sum") / batches, 3) if batches else 0.0,
        "audio_s": round(d("asr_batch_audio_seconds_sum"), 3),  # audio in the batches (unpadded)
        "histogram": {k: v for k, v in histogram.items() if v},
        "stages": stages,
        # the inference thread's CPU seconds: "inference" (whole batches) includes "features"
        "cpu_s": {
            dict(lab)["stage"]: round(d(name, lab), 4) for (name, lab) in after if name == "asr_stage_cpu_seconds_total"
        },
        # CPU seconds per thread group (event loop, decode workers, inference threads, native: intra-op pools)
        "thread_cpu_s": {
            dict(lab)["threads"]: round(d(name, lab), 4)
            for (name, lab) in after
            if name == "asr_thread_cpu_seconds_total"
        },
    }
