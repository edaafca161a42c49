"""`asr-bench --overload`: what one server promises past its capacity, measured as ratios in one run.

One server (ours, batched, result cache off) and four phases, each its own function over one `OverloadPlan`:
  capacity   closed loop with CLIENTS clients: the answered requests/s this machine sustains; one client alone
             gives the unloaded latency the sweep compares with
  sweep      open loop (Poisson) at 0.5x, 1x, 2x and 5x capacity: goodput (answered/s, and against capacity),
             p50/p99 of answered requests (p99 against unloaded), share of 429s, and /metrics latency probed meanwhile
  slowloris  CLIENTS clients, alone and beside STALLED uploads that send their headers and a few bytes, then stall
  mixed      CLIENTS clients of short clips, alone and beside one client sending a long file: short p95 ratio

Closed-loop clients honour a 429's Retry-After (they wait it out, as well-behaved clients do); the open-loop sweep
sends on its schedule regardless. The /metrics prober runs in its own thread (httpx, one GET every 0.2 s) inside
this process: its latencies include this process's own scheduling, an upper bound on what a Prometheus on another
machine would see.
"""

from __future__ import annotations

import asyncio
import io
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

import httpx
import numpy as np
import soundfile as sf

from . import load, report
from .clips import Clip

SWEEP = (0.5, 1.0, 2.0, 5.0)
CLIENTS = 16
STALLED = 50
PROBE_EVERY_S = 0.2


@dataclass
class OverloadPlan:
    url: str
    clips: Sequence[Clip]
    long_clip: Clip
    cell_s: float
    clients: int = CLIENTS
    stalled: int = STALLED
    sweep: Sequence[float] = SWEEP
    results: dict[str, Any] = field(default_factory=dict)


def long_clip(clips: Sequence[Clip], seconds: float) -> Clip:
    """The clips played one after another until `seconds` of audio: a long file of real speech."""
    pieces, total = [], 0
    while total < seconds * 16000:
        for c in clips:
            samples = (c.samples() * 32767).astype(np.int16)
            pieces.append(samples)
            total += len(samples)
    audio = np.concatenate(pieces)[: int(seconds * 16000)]
    wav = io.BytesIO()
    sf.write(wav, audio, 16000, format="WAV", subtype="PCM_16")
    return Clip(f"long-{seconds / 60:g}min.wav", wav.getvalue(), len(audio) / 16000)


def _summary(res: load.CellResult) -> dict[str, Any]:
    ok = sum(1 for s in res.samples if s.status == 200)
    latency = report.latency_stats(res.samples)  # answered requests only
    duration = max(res.finished - res.started, 1e-9)
    codes: dict[str, int] = {}
    for s in res.samples:
        codes[str(s.status)] = codes.get(str(s.status), 0) + 1
    sent = len(res.samples) + res.dropped
    return {
        "sent": sent,
        "codes": codes,
        "goodput_rps": round(ok / duration, 3),
        "p50_s": latency["p50"],
        "p95_s": latency["p95"],
        "p99_s": latency["p99"],
        "share_429": round(codes.get("429", 0) / sent, 4) if sent else 0.0,
        "dropped_by_client": res.dropped,
    }


class MetricsProber:
    """GET /metrics every PROBE_EVERY_S in a thread; the latencies of the answers (a failure counts as its time)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.latencies: list[float] = []
        self.failures = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> MetricsProber:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        with httpx.Client(timeout=10.0, trust_env=False) as client:
            while not self._stop.is_set():
                t0 = time.perf_counter()
                try:
                    client.get(self.url + "/metrics").raise_for_status()
                except httpx.HTTPError:
                    self.failures += 1
                self.latencies.append(time.perf_counter() - t0)
                self._stop.wait(PROBE_EVERY_S)

    def summary(self) -> dict[str, Any]:
        lat = self.latencies
        p50, p99 = (round(float(v), 4) for v in np.percentile(lat, [50, 99])) if lat else (None, None)
        return {"probes": len(lat), "failures": self.failures, "p50_s": p50, "p99_s": p99,
                "max_s": round(max(lat), 4) if lat else None, "over_100ms": sum(1 for x in lat if x > 0.1)}  # fmt: skip


async def _stalled_uploads(url: str, count: int, stop: asyncio.Event) -> int:
    """`count` uploads that send their headers and the first bytes of a 1 MB body, then nothing until `stop`."""
    parsed = urlparse(url)
    head = (
        f"POST {load.TRANSCRIBE} HTTP/1.1\r\nHost: {parsed.hostname}\r\n"
        "Content-Type: multipart/form-data; boundary=x\r\nContent-Length: 1000000\r\n\r\n"
        '--x\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\nRIFF'
    ).encode()
    writers = []
    for _ in range(count):
        try:
            _, writer = await asyncio.open_connection(parsed.hostname, parsed.port)
        except OSError:
            continue
        writer.write(head)
        await writer.drain()
        writers.append(writer)
    opened = len(writers)
    await stop.wait()
    for w in writers:
        w.close()
    return opened


async def _closed(plan: OverloadPlan, clients: int, clips: Sequence[Clip] | None = None) -> load.CellResult:
    return await load.closed_loop(plan.url, clips or plan.clips, {}, concurrency=clients, requests=10**9,
                                  max_s=plan.cell_s, timeout_s=600, honour_retry_after=True)  # fmt: skip


def phase_capacity(plan: OverloadPlan) -> None:
    alone = _summary(asyncio.run(_closed(plan, 1)))
    full = _summary(asyncio.run(_closed(plan, plan.clients)))
    plan.results["capacity"] = {"clients": plan.clients, "rps": full["goodput_rps"], "loaded": full,
                                "unloaded": alone}  # fmt: skip


def phase_sweep(plan: OverloadPlan) -> None:
    capacity = plan.results["capacity"]["rps"]
    unloaded_p99 = plan.results["capacity"]["unloaded"]["p99_s"]
    cells = []
    for i, factor in enumerate(plan.sweep):
        rate = round(factor * capacity, 2)
        with MetricsProber(plan.url) as prober:
            res = asyncio.run(
                load.open_loop(plan.url, plan.clips, {}, rate=rate, requests=10**9, max_s=plan.cell_s,
                               max_outstanding=4096, seed=i, timeout_s=600)
            )  # fmt: skip
        s = _summary(res)
        cells.append({
            "offered": f"{factor:g}x", "rate_rps": rate, **s, "metrics": prober.summary(),
            "goodput_vs_capacity": report._ratio(s["goodput_rps"], capacity),
            "p99_vs_unloaded_p99": report._ratio(s["p99_s"], unloaded_p99),
        })  # fmt: skip
    plan.results["sweep"] = cells


def phase_mixed(plan: OverloadPlan) -> None:
    async def beside_long() -> load.CellResult:
        longf = asyncio.create_task(load.single(plan.url, plan.long_clip, {}, timeout_s=7200))
        await asyncio.sleep(2.0)  # the long file is uploaded and being decoded before the measured load starts
        short = await _closed(plan, plan.clients)
        longf.cancel()  # the client hangs up; the server drops the rest of its work (or finishes it, unmeasured)
        return short

    async def with_batches(cell: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        """The cell's summary and what the server's batches held meanwhile (sizes, audio, stage times)."""
        before = await load.scrape(plan.url)
        summary = _summary(await cell)
        return summary, load.metrics_delta(before, await load.scrape(plan.url))

    alone, alone_batches = asyncio.run(with_batches(_closed(plan, plan.clients)))
    mixed, mixed_batches = asyncio.run(with_batches(beside_long()))
    plan.results["mixed"] = {
        "long_file_s": round(plan.long_clip.duration_s, 1), "short_alone": alone, "short_beside_long": mixed,
        "short_p95_ratio": report._ratio(mixed["p95_s"], alone["p95_s"]),
        "batches_alone": alone_batches, "batches_beside_long": mixed_batches,
    }  # fmt: skip


def phase_slowloris(plan: OverloadPlan) -> None:
    async def beside_stalled() -> tuple[load.CellResult, int]:
        stop = asyncio.Event()
        stalled = asyncio.create_task(_stalled_uploads(plan.url, plan.stalled, stop))
        await asyncio.sleep(0.5)  # the stalled uploads are in before the measured load starts
        res = await _closed(plan, plan.clients)
        stop.set()
        return res, await stalled

    alone = _summary(asyncio.run(_closed(plan, plan.clients)))
    res, opened = asyncio.run(beside_stalled())
    beside = _summary(res)
    plan.results["slowloris"] = {
        "stalled_uploads": opened, "alone": alone, "beside_stalled": beside,
        "p95_ratio": report._ratio(beside["p95_s"], alone["p95_s"]),
    }  # fmt: skip


PHASES = (phase_capacity, phase_sweep, phase_slowloris, phase_mixed)  # mixed last: it leaves a long decode behind


def select_phases(names: Sequence[str] | None) -> tuple[Any, ...]:
    """The phases named (all when None), in their fixed order; the sweep needs the capacity it is a multiple of."""
    known = {phase.__name__.removeprefix("phase_"): phase for phase in PHASES}
    if names is None:
        return PHASES
    if unknown := set(names) - set(known):
        raise ValueError(f"unknown overload phase(s) {sorted(unknown)}; known: {', '.join(known)}")
    wanted = set(names) | ({"capacity"} if "sweep" in names else set())
    return tuple(phase for name, phase in known.items() if name in wanted)


def run_phases(plan: OverloadPlan, progress: Any = None, phases: Sequence[Any] = PHASES) -> dict[str, Any]:
    for phase in phases:
        name = phase.__name__.removeprefix("phase_")
        if progress is not None:
            progress(name)
        phase(plan)
    return plan.results


def headline(results: dict[str, Any]) -> list[str]:
    """One line per cell, ratios first: what docs/performance.md quotes."""
    lines = []
    if "capacity" in results:
        cap = results["capacity"]
        lines.append(f"capacity: {cap['rps']:.1f} answered/s with {cap['clients']} clients")
    for c in results.get("sweep", []):
        m = c["metrics"]
        lines.append(
            f"offered {c['offered']:>4}: goodput {c['goodput_vs_capacity']}x capacity, p50 {c['p50_s']} s, "
            f"p99 {c['p99_vs_unloaded_p99']}x unloaded, 429s {100 * c['share_429']:.1f} %, "
            f"/metrics p99 {m['p99_s']} s (max {m['max_s']}, {m['over_100ms']}/{m['probes']} over 100 ms)"
        )
    if "mixed" in results:
        mx = results["mixed"]
        lines.append(f"mixed: short p95 {mx['short_p95_ratio']}x beside a {mx['long_file_s'] / 60:.0f}-min file")
    if "slowloris" in results:
        sl = results["slowloris"]
        lines.append(f"slowloris: p95 {sl['p95_ratio']}x beside {sl['stalled_uploads']} stalled uploads")
    return lines


def run(args: Any, model: Any, clips: Sequence[Clip]) -> dict[str, Any]:
    """Start one server (unless --url), run the phases, return the result (cli.main writes and prints it)."""
    from .servers import ServerProcess, standard_configs

    phases = select_phases(getattr(args, "overload_phases", None))  # before a server starts: a typo fails at once
    cell_s = args.cell_seconds or (3.0 if args.quick else 20.0)
    long_s = 60.0 * (args.long_file_minutes if args.long_file_minutes is not None else (0.5 if args.quick else 30))
    server: ServerProcess | None = None
    if args.url:
        url = args.url.rstrip("/")
    else:
        # the long file must not be cut off by the server's own request timeout: what it costs the others is the point
        extra = ["--request-timeout-s", "7200"]
        cfg = standard_configs(args.max_batch_size, args.max_wait_ms, [*args.server_arg, *extra])["ours-batched-fp32"]
        ncpu = args.ncpu or len(os.sched_getaffinity(0))
        server = ServerProcess(cfg, model=model, device=args.device, ncpu=ncpu, log_dir=args.out.resolve())
        server.start(args.start_timeout)
        url = server.url
    plan = OverloadPlan(url, clips, long_clip(clips, long_s), cell_s,
                        clients=4 if args.quick else CLIENTS, stalled=5 if args.quick else STALLED,
                        sweep=(1.0, 5.0) if args.quick else SWEEP)  # fmt: skip
    try:
        results = run_phases(plan, lambda name: print(f"asr-bench: overload phase {name}", flush=True), phases)
    finally:
        if server is not None:
            server.stop()
    return {"schema": "asr-bench-overload/1", "server": url if args.url else server and server.command(),
            "cell_seconds": cell_s, "results": results, "headline": headline(results)}  # fmt: skip
