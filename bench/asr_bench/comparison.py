"""`asr-bench`'s comparison: batched vs per-request serving, ours vs FunASR's own server, and the raw model ceiling,
on one machine in one run.

Every configuration is started once (process start → ready timed), then load cells are interleaved: for each
repetition and each concurrency level the configs run one after another in a rotating order, so the ratios
compare the same machine state. Then open-loop (Poisson) cells, then the raw model in this process with every
server stopped. One `BenchPlan` is what every phase reads; every load cell, closed or open loop, is measured by one
function (`measure_cell`: server CPU, client CPU, /metrics delta, load average). Writes `bench.json` and
`bench.png` to --out.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import shlex
import sys
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import clips as clips_mod
from . import load, machine_state, report
from . import raw as raw_mod
from .model_dirs import model_info, resolve_model
from .servers import ServerConfig, ServerProcess, parse_variant, standard_configs

DEFAULT_CONFIGS = ["ours-batched-fp32", "ours-per-request-fp32", "ours-batched-bf16", "funasr-server"]
QUICK_CONFIGS = ["ours-batched-fp32", "ours-per-request-fp32"]

Cells = dict[str, dict[str, list[load.CellResult]]]  # config → level (concurrency or rate) → repetitions
CellLoad = Coroutine[Any, Any, load.CellResult]  # one cell's load generator, run by measure_cell


class Progress:
    def __init__(self, total: int, disable: bool) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=total, unit="req", disable=disable, dynamic_ncols=True, smoothing=0.05)

    def step(self) -> None:
        self.bar.update(1)

    def describe(self, text: str) -> None:
        self.bar.set_description_str(text[:60])

    def close(self) -> None:
        self.bar.close()


@dataclass
class BenchPlan:
    """What the run measures (from the command line) and what it has started."""

    args: argparse.Namespace
    out: Path
    model: Path
    clip_set: str
    clips: list[clips_mod.Clip]
    configs: list[ServerConfig]
    concurrency: list[int]
    requests: int
    cell_s: float
    repeats: int
    ncpu: int
    servers: dict[str, ServerProcess] = field(default_factory=dict)
    urls: dict[str, str] = field(default_factory=dict)
    progress: Progress | None = None

    @property
    def quick(self) -> bool:
        return bool(self.args.quick)

    @property
    def variants(self) -> dict[str, str]:
        return {c.name: c.base for c in self.configs if c.base}

    def step(self) -> None:
        if self.progress is not None:
            self.progress.step()

    def describe(self, text: str) -> None:
        if self.progress is not None:
            self.progress.describe(text)


def make_plan(args: argparse.Namespace) -> BenchPlan:
    out: Path = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    if args.url:
        from urllib.parse import urlparse

        if urlparse(args.url).hostname not in ("127.0.0.1", "localhost", "::1"):
            raise SystemExit("asr-bench: --url must point at 127.0.0.1 (this tool only loads loopback servers)")
    model = resolve_model(args.model, args.models_dir)
    default_clips = "demo-heldout" if clips_mod.CLIP_SETS["demo-heldout"].is_dir() else "speech"
    clip_set, clip_list = clips_mod.load(args.clips or default_clips, out)
    quick = args.quick
    return BenchPlan(
        args, out, model, clip_set, list(clip_list), _configs(args),
        concurrency=args.concurrency or ([1, 4] if quick else [1, 4, 16]),
        requests=args.requests or (8 if quick else 240),
        cell_s=args.cell_seconds or (5.0 if quick else 20.0),
        repeats=args.repeats or (1 if quick else 2),
        ncpu=args.ncpu or len(os.sched_getaffinity(0)),
    )  # fmt: skip


def _configs(args: argparse.Namespace) -> list[ServerConfig]:
    if args.url:
        return [ServerConfig("external", "external", f"already running server at {args.url}")]
    catalogue = standard_configs(args.max_batch_size, args.max_wait_ms, args.server_arg)
    names = args.configs or (QUICK_CONFIGS if args.quick else DEFAULT_CONFIGS)
    if unknown := [n for n in names if n not in catalogue]:
        raise SystemExit(f"asr-bench: unknown config(s) {unknown}; choose from {sorted(catalogue)}")
    configs = [] if args.raw_only else [catalogue[n] for n in names]
    try:
        return configs + [parse_variant(v, catalogue) for v in args.variant]
    except ValueError as exc:
        raise SystemExit(f"asr-bench: {exc}") from exc


def describe_run(plan: BenchPlan) -> dict[str, Any]:
    """The record's header: command, machine, model, clips, settings, server code."""
    args, durations = plan.args, [c.duration_s for c in plan.clips]
    return {
        "schema": "asr-bench/1",
        "started_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": "asr-bench " + shlex.join(args.argv),
        "quick": plan.quick,
        "machine": {
            **machine_state.machine(args.device),
            "loadavg_start": machine_state.loadavg(),
            "other_busy_processes_start": machine_state.busy_processes({os.getpid()}),
        },
        "model": model_info(plan.model),
        "clips": {
            "set": plan.clip_set, "count": len(plan.clips), "total_s": round(sum(durations), 3),
            "mean_s": round(sum(durations) / len(durations), 3), "min_s": round(min(durations), 3),
            "max_s": round(max(durations), 3), "files": [c.name for c in plan.clips],
        },
        "settings": {
            "concurrency": plan.concurrency, "requests_per_cell": plan.requests, "cell_seconds": plan.cell_s,
            "repeats": plan.repeats, "ncpu": plan.ncpu, "max_batch_size": args.max_batch_size,
            "max_wait_ms": args.max_wait_ms, "server_args": args.server_arg,
            "peer_threads": "stock (4)" if args.peer_stock else plan.ncpu, "cache_entries": 0,
            "warmup_requests": args.warmup_requests,
        },
        "server_source": machine_state.git_state(),
    }  # fmt: skip


# ---------------------------------------------------------------------------------------------- phases
def phase_start(plan: BenchPlan) -> dict[str, Any]:
    """Start every server, one at a time so each cold start is timed alone; time each one's first request."""
    cold: dict[str, Any] = {}
    for cfg in plan.configs:
        if cfg.kind == "external":
            plan.urls[cfg.name] = plan.args.url.rstrip("/")
            continue
        sp = ServerProcess(
            cfg, model=plan.model, device=plan.args.device, ncpu=plan.ncpu, log_dir=plan.out,
            peer_stock=plan.args.peer_stock,
        )  # fmt: skip
        print(f"asr-bench: starting {cfg.name}: {shlex.join(sp.command())}", file=sys.stderr)
        ready_s = sp.start(plan.args.start_timeout)
        plan.servers[cfg.name], plan.urls[cfg.name] = sp, sp.url
        first = asyncio.run(load.single(sp.url, plan.clips[0], cfg.form))
        cold[cfg.name] = {
            "command": sp.command(),
            "process_start_to_ready_s": round(ready_s, 3),
            "ready_body": sp.ready_body,
            "first_request_s": round(first.latency_s, 4),
            "first_request_status": first.status,
        }
        print(f"asr-bench: {cfg.name} ready in {ready_s:.1f} s; first request {first.latency_s * 1000:.0f} ms",
              file=sys.stderr)  # fmt: skip
    return cold


def phase_warm(plan: BenchPlan) -> None:
    """A few unmeasured requests per server so lazy imports and first-shape work are done before any cell."""
    args = plan.args
    n = args.warmup_requests if args.warmup_requests is not None else (8 if plan.quick else 2 * args.max_batch_size)
    for cfg in plan.configs:
        if n > 0:
            asyncio.run(
                load.closed_loop(plan.urls[cfg.name], plan.clips, cfg.form, concurrency=min(4, n), requests=n,
                                 max_s=120.0)
            )  # fmt: skip


def phase_closed(plan: BenchPlan) -> tuple[list[dict[str, Any]], Cells]:
    """Closed-loop cells: every repetition × concurrency, the configs in a rotating order."""
    profile_target = tuple(plan.args.profile.split("@")) if plan.args.profile else None
    records: list[dict[str, Any]] = []
    cells: Cells = {c.name: {} for c in plan.configs}
    for rep in range(plan.repeats):
        for li, conc in enumerate(plan.concurrency):
            for cfg in _rotated(plan.configs, rep + li):
                plan.describe(f"{cfg.name} c={conc} rep {rep + 1}/{plan.repeats}")
                profiled = profile_target == (cfg.name, str(conc)) and rep == 0

                def closed(cfg: ServerConfig = cfg, conc: int = conc, rep: int = rep) -> CellLoad:
                    return load.closed_loop(plan.urls[cfg.name], plan.clips, cfg.form, concurrency=conc,
                                            requests=plan.requests, max_s=plan.cell_s, on_done=plan.step,
                                            offset=rep * 7)  # fmt: skip

                record, res = measure_cell(plan, cfg, closed, profile=f"c{conc}" if profiled else None)
                records.append({"config": cfg.name, "concurrency": conc, "repeat": rep, **record})
                cells[cfg.name].setdefault(str(conc), []).append(res)
    return records, cells


def phase_open(plan: BenchPlan, closed_summary: dict[str, Any]) -> dict[str, Any]:
    """Open-loop (Poisson) cells at --rate, or at 0.5x and 1.5x the slowest config's best closed-loop rate."""
    rates, rates_from = list(plan.args.rate or []), None
    if not rates:
        slowest = min(closed_summary, key=lambda n: max(s["rps"] for s in closed_summary[n].values()))
        base_cfg = "funasr-server" if "funasr-server" in closed_summary else slowest
        best = max(s["rps"] for s in closed_summary[base_cfg].values())
        rates = [round(0.5 * best, 2), round(1.5 * best, 2)]
        rates_from = f"0.5x and 1.5x {base_cfg}'s best closed-loop requests/s"
    records: list[dict[str, Any]] = []
    cells: Cells = {c.name: {} for c in plan.configs}
    for ri, rate in enumerate(rates):
        for cfg in _rotated(plan.configs, ri):
            plan.describe(f"{cfg.name} rate={rate:g}/s")

            def poisson(cfg: ServerConfig = cfg, rate: float = rate, seed: int = ri) -> CellLoad:
                return load.open_loop(plan.urls[cfg.name], plan.clips, cfg.form, rate=rate, requests=plan.requests,
                                      max_s=plan.cell_s, seed=seed, on_done=plan.step)  # fmt: skip

            record, res = measure_cell(plan, cfg, poisson)
            records.append({"config": cfg.name, "rate": rate, **record})
            cells[cfg.name].setdefault(f"{rate:g}", []).append(res)
    summary, per_rep = _summaries(cells)
    return {
        "rates": rates, "rates_from": rates_from, "cells": records, "summary": summary,
        "ratios": report.ratios(summary, per_rep, plan.variants),
    }  # fmt: skip


def phase_raw(plan: BenchPlan) -> dict[str, Any]:
    """The raw model in this process, every server stopped: the ceiling served throughput is compared with."""
    args, raw = plan.args, dict[str, Any]()
    if args.no_raw or args.url:
        return raw
    precisions = sorted({c.precision for c in plan.configs if c.kind == "ours"}) or ["fp32"]
    if args.raw_only:
        precisions = ["fp32", "bf16" if args.device == "cpu" else "fp16"]
    for precision in precisions:
        print(f"asr-bench: raw model ceiling ({precision}) ...", file=sys.stderr)
        raw[precision] = raw_mod.measure_in_thread(
            plan.model, plan.clips, precision=precision, device=args.device, ncpu=plan.ncpu,
            max_batch_size=2 if plan.quick else args.max_batch_size, min_s=0.2 if plan.quick else 2.0,
            min_reps=1 if plan.quick else 3,
        )  # fmt: skip
    return raw


# ---------------------------------------------------------------------------------------------- one cell
def measure_cell(
    plan: BenchPlan,
    cfg: ServerConfig,
    cell: Callable[[], CellLoad],
    profile: str | None = None,
) -> tuple[dict[str, Any], load.CellResult]:
    """Run one load cell against `cfg`'s server: its summary with the server's and this process's CPU seconds, the
    load average, the server's /metrics delta, and (`profile`: a file-name tag) a py-spy profile of the server."""
    url, server = plan.urls[cfg.name], plan.servers.get(cfg.name)
    pid = server.proc.pid if server is not None and server.proc is not None else None
    before = asyncio.run(load.scrape(url)) if cfg.has_metrics else None
    recorder = _start_profile(plan, cfg, pid, profile) if profile and pid else None
    cpu0, me0 = (load.process_cpu_s(pid) if pid else None), load.self_cpu_s()
    res = asyncio.run(cell())
    cpu1 = load.process_cpu_s(pid) if pid else None
    res.client_cpu_s = load.self_cpu_s() - me0
    res.server_cpu_s = cpu1 - cpu0 if cpu0 is not None and cpu1 is not None else None
    delta = load.metrics_delta(before, asyncio.run(load.scrape(url))) if before is not None else None
    if delta is not None and delta["cpu_s"]:
        res.server_stage_cpu_s, res.server_thread_cpu_s = delta["cpu_s"], delta["thread_cpu_s"]
    record: dict[str, Any] = {**report.summarize([res]), "loadavg": machine_state.loadavg()}
    if recorder is not None:
        record["profile"] = _stop_profile(recorder)
    if delta is not None:
        record["server"] = delta
    return record, res


def _start_profile(plan: BenchPlan, cfg: ServerConfig, pid: int, tag: str) -> Any:
    from .profile import Recorder

    gil = plan.args.profile_gil
    recorder = Recorder(pid, plan.out / f"profile-{cfg.name}-{tag}{'-gil' if gil else ''}.txt", gil=gil)
    time.sleep(0.5)
    return recorder


def _stop_profile(recorder: Any) -> dict[str, Any]:
    from .profile import summarize as summarize_profile

    err = recorder.stop()
    try:
        return {"file": str(recorder.out), **summarize_profile(recorder.out)}
    except OSError:
        return {"error": err}


def _rotated(configs: list[ServerConfig], shift: int) -> list[ServerConfig]:
    shift %= max(1, len(configs))
    return configs[shift:] + configs[:shift]


def _summaries(cells: Cells) -> tuple[dict[str, Any], dict[str, Any]]:
    """Per config and level: the repetitions pooled, and each repetition alone (for the ratios' spread)."""
    summary = {name: {lvl: report.summarize(cs) for lvl, cs in levels.items()} for name, levels in cells.items()}
    per_rep = {
        name: {lvl: [report.summarize([c]) for c in cs] for lvl, cs in levels.items()} for name, levels in cells.items()
    }
    return summary, per_rep


# ---------------------------------------------------------------------------------------------- the run
def run(args: argparse.Namespace) -> dict[str, Any]:
    plan = make_plan(args)
    result = describe_run(plan)
    do_open = not plan.quick and args.rate != [0.0] and bool(plan.configs)
    n_open = (len(args.rate or []) or 2) if do_open else 0
    total = (plan.repeats * len(plan.concurrency) + n_open) * len(plan.configs) * plan.requests
    try:
        cold = phase_start(plan)
        phase_warm(plan)
        plan.progress = Progress(total, args.no_progress)
        records, cells = phase_closed(plan)
        summary, per_rep = _summaries(cells)
        result["closed_loop"] = {"cells": records, "summary": summary}
        result["open_loop"] = phase_open(plan, summary) if do_open else {"cells": [], "summary": {}, "ratios": {}}
        if do_open:
            result["settings"]["rates"] = result["open_loop"].pop("rates")
            if rates_from := result["open_loop"].pop("rates_from"):
                result["settings"]["rates_from"] = rates_from
        plan.progress.close()
        result["machine"]["loadavg_after_load"] = machine_state.loadavg()
    finally:
        for sp in plan.servers.values():
            sp.stop()
    result["cold_start"] = _cold_vs_steady(cold, summary, min(plan.concurrency))
    result["raw"] = raw = phase_raw(plan)
    result["closed_loop"]["ratios"] = report.ratios(summary, per_rep, plan.variants)
    result["serving_efficiency"] = report.served_vs_raw(summary, raw)
    result["machine"]["loadavg_end"] = machine_state.loadavg()
    result["machine"]["other_busy_processes_end"] = machine_state.busy_processes({os.getpid()})
    result["finished_at"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    result["headline"] = headline(result, plan.concurrency)
    return _write(result, plan.out)


def _cold_vs_steady(cold: dict[str, Any], summary: dict[str, Any], lowest: int) -> dict[str, Any]:
    for name, c in cold.items():
        steady = summary.get(name, {}).get(str(lowest), {}).get("latency_s", {}).get("p50")
        c["steady_p50_at_lowest_concurrency_s"] = steady
        c["first_request_vs_steady_p50"] = report._ratio(c["first_request_s"], steady)
    return cold


def _write(result: dict[str, Any], out: Path) -> dict[str, Any]:
    json_path, png_path = out / "bench.json", out / "bench.png"
    json_path.write_text(json.dumps(result, indent=1))
    report.plot(result, png_path)
    result["files"] = {"json": str(json_path), "png": str(png_path)}
    json_path.write_text(json.dumps(result, indent=1))
    return result


def headline(result: dict[str, Any], concurrency: list[int]) -> dict[str, Any]:
    """The few numbers a reader wants first, at the highest concurrency."""
    top = str(max(concurrency))
    h: dict[str, Any] = {"concurrency": int(top)}
    for name, r in result["closed_loop"]["ratios"].items():
        lv = r["by_level"].get(top)
        if lv:
            h[name] = {"throughput": lv["throughput"], "p95_latency": lv["latency_p95"]}
    eff = result["serving_efficiency"].get("ours-batched-fp32", {}).get(top)
    if eff:
        h["served_vs_raw_fp32"] = eff
    for name, s in result["closed_loop"]["summary"].items():
        if top in s:
            h.setdefault("rtfx", {})[name] = s[top]["rtfx"]
            if (outside := s[top]["cpu"].get("outside_forward_ms_per_audio_s")) is not None:
                h.setdefault("server_cpu_outside_forward", {})[name] = {
                    "ms_per_audio_s": outside,
                    "ms_per_request": s[top]["cpu"]["outside_forward_ms_per_request"],
                    "rtfx_ceiling_per_core": s[top]["cpu"]["rtfx_ceiling_per_core"],
                }
    return h
