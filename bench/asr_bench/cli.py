"""`asr-bench`: batched vs per-request serving, ours vs FunASR's own server, and the raw model ceiling, on one
machine in one run.

Every configuration is started once (process start → ready timed), then load cells are interleaved: for each
repetition and each concurrency level the configs run one after another in a rotating order, so the ratios
compare the same machine state. Then open-loop (Poisson) cells, then the raw model in this process with every
server stopped. Writes `bench.json` and `bench.png` to --out.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import clips as clips_mod
from . import load, report
from . import raw as raw_mod
from .servers import ServerConfig, ServerProcess, parse_variant, standard_configs

REPO = Path(__file__).resolve().parents[2]
DEMO_MODEL = REPO / "inference" / "asr_inference" / "models" / "demo"
DEFAULT_CONFIGS = ["ours-batched-fp32", "ours-per-request-fp32", "ours-batched-bf16", "funasr-server"]
QUICK_CONFIGS = ["ours-batched-fp32", "ours-per-request-fp32"]
BUILT_MODELS = {"sensevoice-small-random": "sensevoice-small", "paraformer-large-random": "paraformer-large"}


def _csv(kind: type) -> Any:
    def parse(v: str) -> list[Any]:
        return [kind(x) for x in v.split(",") if x.strip()]

    return parse


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="asr-bench", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--model",
        default=None,
        help="model directory; or 'sensevoice-small-random' / 'paraformer-large-random' (random weights, "
        "real dimensions, built under --models-dir on first use) [default: the embedded demo model]",
    )
    p.add_argument(
        "--models-dir",
        type=Path,
        default=Path("bench-results/models"),
        help="where the random real-dimension models are built [default: bench-results/models]",
    )
    p.add_argument(
        "--url",
        default=None,
        help="benchmark an already running server at this URL (127.0.0.1 only) instead of starting the configs",
    )
    p.add_argument(
        "--configs",
        type=_csv(str),
        default=None,
        help=f"comma list of {', '.join(standard_configs(16, 10, []))} [default: {','.join(DEFAULT_CONFIGS)}]",
    )
    p.add_argument("--concurrency", type=_csv(int), default=None, help="closed-loop levels [default: 1,4,16]")
    p.add_argument(
        "--rate",
        type=_csv(float),
        default=None,
        help="open-loop Poisson rates in requests/s [default: 0.5x and 1.5x funasr-server's (else the slowest "
        "config's) best closed-loop throughput, measured in this run]; 0 disables",
    )
    p.add_argument("--requests", type=int, default=None, help="most requests per cell [default: 240]")
    p.add_argument("--cell-seconds", type=float, default=None, help="most seconds per cell [default: 20]")
    p.add_argument("--repeats", type=int, default=None, help="repetitions of the interleaved cells [default: 2]")
    p.add_argument(
        "--clips",
        default=None,
        help="demo-heldout | speech | espeak (generated 5-15 s clips) | a directory "
        "[default: demo-heldout, else speech]",
    )
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N [default: cpu]")
    p.add_argument(
        "--ncpu",
        type=int,
        default=0,
        help="torch threads (and our decode workers) for every server "
        "and the raw measurement; 0 = the CPUs available [default: 0]",
    )
    p.add_argument("--max-batch-size", type=int, default=16, help="batched configs' --max-batch-size [default: 16]")
    p.add_argument("--max-wait-ms", type=float, default=10.0, help="our --max-wait-ms [default: 10]")
    p.add_argument(
        "--server-arg",
        action="append",
        default=[],
        help="extra asr-serve flag (repeatable), e.g. --server-arg=--segment-s=20",
    )
    p.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME=BASE,ARG,...",
        help="an extra config: standard config BASE plus asr-serve flags (and env:KEY=VALUE items), run interleaved "
        "with the others and compared with its base, e.g. ours-ncpu1=ours-batched-fp32,--ncpu=1 (repeatable)",
    )
    p.add_argument(
        "--peer-stock",
        action="store_true",
        help="run funasr-server unmodified (its AutoModel then uses 4 torch threads whatever --ncpu says)",
    )
    p.add_argument(
        "--warmup-requests",
        type=int,
        default=None,
        help="unmeasured requests per config before the cells [default: 2 x --max-batch-size; quick: 8]",
    )
    p.add_argument("--no-raw", action="store_true", help="skip the raw model ceiling")
    p.add_argument("--raw-only", action="store_true", help="only the raw model ceiling (fp32 and bf16), no servers")
    p.add_argument(
        "--profile",
        default=None,
        metavar="CONFIG@CONCURRENCY",
        help="py-spy record this config during this closed-loop cell (first repetition), e.g. ours-batched-fp32@16",
    )
    p.add_argument(
        "--profile-gil",
        action="store_true",
        help="with --profile: sample only the thread holding the GIL (py-spy --gil): who serialises whom",
    )
    p.add_argument("--start-timeout", type=float, default=900.0, help="seconds a server may take to be ready")
    p.add_argument(
        "--quick",
        action="store_true",
        help="a smoke run in seconds: two configs, concurrency 1,4, "
        "a few requests, no open loop, raw at two batch sizes",
    )
    p.add_argument("--out", type=Path, default=Path("bench-results"), help="output directory [default: bench-results]")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--overload",
        action="store_true",
        help="instead of the comparison: one server past its capacity (offered-load sweep to 5x, a long file beside "
        "short clips, stalled uploads); writes overload.json (asr_bench/overload.py)",
    )
    p.add_argument(
        "--long-file-minutes",
        type=float,
        default=None,
        help="--overload: the long file's length [default: 30; --quick: 0.5]",
    )
    return p


def _machine(device: str) -> dict[str, Any]:
    info: dict[str, Any] = {
        "device": device,
        "cpus": len(os.sched_getaffinity(0)),
        "cpu_model": "",
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu_model"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    from importlib.metadata import PackageNotFoundError, version

    for pkg in ("torch", "funasr", "aiohttp"):
        try:
            info[pkg] = version(pkg)
        except PackageNotFoundError:
            info[pkg] = None
    return info


def _busy_processes(exclude: set[int]) -> list[dict[str, Any]]:
    """Other processes using CPU right now (machine state for the record)."""
    try:
        out = subprocess.run(
            ["ps", "-eo", "pid,pcpu,etimes,args", "--sort=-pcpu"], capture_output=True, text=True, timeout=5
        ).stdout.splitlines()[1:8]
    except (OSError, subprocess.SubprocessError):
        return []
    rows = []
    for line in out:
        parts = line.split(None, 3)
        if len(parts) == 4 and int(parts[0]) not in exclude and float(parts[1]) >= 5.0:
            rows.append({"pid": int(parts[0]), "pcpu": float(parts[1]), "cmd": parts[3][:120]})
    return rows


def _git_state() -> dict[str, Any]:
    """Which server code was measured: the commit, and whether inference/ had uncommitted changes."""

    def git(*a: str) -> str:
        try:
            return subprocess.run(
                ["git", "-C", str(REPO), *a], capture_output=True, text=True, timeout=10
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    import hashlib
    import importlib.util

    spec = importlib.util.find_spec("asr_inference")
    pkg = Path(spec.origin).parent if spec is not None and spec.origin else None
    digest = hashlib.sha256()
    for f in sorted(pkg.rglob("*.py")) if pkg is not None else []:
        digest.update(f.read_bytes())
    return {
        "commit": git("rev-parse", "HEAD") or None,
        "inference_dirty": bool(git("status", "--porcelain", "--", "inference")),
        "asr_inference_path": str(pkg) if pkg is not None else None,  # a PYTHONPATH snapshot shows up here
        "asr_inference_sha256": digest.hexdigest()[:16],  # of its .py files: identifies the code measured
    }


def _loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


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


def _resolve_model(spec: str | None, models_dir: Path) -> Path:
    if spec is None:
        if not (DEMO_MODEL / "model.pt").is_file():
            raise SystemExit(f"asr-bench: the embedded demo model is missing ({DEMO_MODEL}); pass --model")
        return DEMO_MODEL
    if spec in BUILT_MODELS:
        from .make_model import ensure

        return ensure(BUILT_MODELS[spec], (models_dir / spec).resolve())
    path = Path(spec).expanduser().resolve()
    if not (path / "config.yaml").is_file():
        raise SystemExit(f"asr-bench: --model {spec!r} is not a model directory (no config.yaml)")
    return path


def _model_info(path: Path) -> dict[str, Any]:
    info: dict[str, Any] = {"path": str(path), "name": path.name}
    card = path / "BENCH_MODEL.json"
    if card.is_file():
        info.update(json.loads(card.read_text()))
    try:
        import yaml

        conf = yaml.safe_load((path / "config.yaml").read_text())
        info["architecture"] = conf.get("model")
        info["encoder_conf"] = {
            k: conf.get("encoder_conf", {}).get(k)
            for k in ("output_size", "attention_heads", "linear_units", "num_blocks", "tp_blocks")
        }
    except Exception:  # the model card is informational only
        pass
    return info


async def _warm_requests(server_url: str, cfg: ServerConfig, clip_list: Sequence[clips_mod.Clip], n: int) -> None:
    """A few requests so lazy imports and first-shape work are done before any measured cell."""
    await load.closed_loop(server_url, clip_list, cfg.form, concurrency=min(4, n), requests=n, max_s=120.0)


def run(args: argparse.Namespace) -> dict[str, Any]:
    out: Path = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    quick = args.quick
    concurrency = args.concurrency or ([1, 4] if quick else [1, 4, 16])
    requests = args.requests or (8 if quick else 240)
    cell_s = args.cell_seconds or (5.0 if quick else 20.0)
    repeats = args.repeats or (1 if quick else 2)
    ncpu = args.ncpu or len(os.sched_getaffinity(0))
    if args.url:
        from urllib.parse import urlparse

        host = urlparse(args.url).hostname
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise SystemExit("asr-bench: --url must point at 127.0.0.1 (this tool only loads loopback servers)")
    model = _resolve_model(args.model, args.models_dir)
    default_clips = "demo-heldout" if clips_mod.CLIP_SETS["demo-heldout"].is_dir() else "speech"
    clip_set, clip_list = clips_mod.load(args.clips or default_clips, out)
    durations = [c.duration_s for c in clip_list]

    catalogue = standard_configs(args.max_batch_size, args.max_wait_ms, args.server_arg)
    if args.url:
        configs = [ServerConfig("external", "external", f"already running server at {args.url}")]
    else:
        names = args.configs or (QUICK_CONFIGS if quick else DEFAULT_CONFIGS)
        unknown = [n for n in names if n not in catalogue]
        if unknown:
            raise SystemExit(f"asr-bench: unknown config(s) {unknown}; choose from {sorted(catalogue)}")
        configs = [] if args.raw_only else [catalogue[n] for n in names]
        try:
            configs += [parse_variant(v, catalogue) for v in args.variant]
        except ValueError as exc:
            raise SystemExit(f"asr-bench: {exc}") from exc

    variants = {c.name: c.base for c in configs if c.base}
    result: dict[str, Any] = {
        "schema": "asr-bench/1",
        "started_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": "asr-bench " + shlex.join(args.argv),
        "quick": quick,
        "machine": _machine(args.device),
        "model": _model_info(model),
        "clips": {
            "set": clip_set,
            "count": len(clip_list),
            "total_s": round(sum(durations), 3),
            "mean_s": round(sum(durations) / len(durations), 3),
            "min_s": round(min(durations), 3),
            "max_s": round(max(durations), 3),
            "files": [c.name for c in clip_list],
        },
        "settings": {
            "concurrency": concurrency,
            "requests_per_cell": requests,
            "cell_seconds": cell_s,
            "repeats": repeats,
            "ncpu": ncpu,
            "max_batch_size": args.max_batch_size,
            "max_wait_ms": args.max_wait_ms,
            "server_args": args.server_arg,
            "peer_threads": "stock (4)" if args.peer_stock else ncpu,
            "cache_entries": 0,
            "warmup_requests": args.warmup_requests,
        },
    }
    result["server_source"] = _git_state()
    result["machine"]["loadavg_start"] = _loadavg()
    result["machine"]["other_busy_processes_start"] = _busy_processes({os.getpid()})

    servers: dict[str, ServerProcess] = {}
    urls: dict[str, str] = {}
    cold: dict[str, Any] = {}
    try:
        # ---------------------------------------------------------------- start (one at a time: cold start timed alone)
        for cfg in configs:
            if cfg.kind == "external":
                urls[cfg.name] = args.url.rstrip("/")
                continue
            sp = ServerProcess(cfg, model=model, device=args.device, ncpu=ncpu, log_dir=out, peer_stock=args.peer_stock)
            print(f"asr-bench: starting {cfg.name}: {shlex.join(sp.command())}", file=sys.stderr)
            ready_s = sp.start(args.start_timeout)
            servers[cfg.name] = sp
            urls[cfg.name] = sp.url
            first = asyncio.run(load.single(sp.url, clip_list[0], cfg.form))
            cold[cfg.name] = {
                "command": sp.command(),
                "process_start_to_ready_s": round(ready_s, 3),
                "ready_body": sp.ready_body,
                "first_request_s": round(first.latency_s, 4),
                "first_request_status": first.status,
            }
            print(
                f"asr-bench: {cfg.name} ready in {ready_s:.1f} s; first request {first.latency_s * 1000:.0f} ms",
                file=sys.stderr,
            )
        for cfg in configs:
            n_warm = (
                args.warmup_requests if args.warmup_requests is not None else (8 if quick else 2 * args.max_batch_size)
            )
            if n_warm > 0:
                asyncio.run(_warm_requests(urls[cfg.name], cfg, clip_list, n_warm))

        # ---------------------------------------------------------------- closed loop, interleaved
        do_open = not quick and args.rate != [0.0] and bool(configs)
        rates: list[float] = list(args.rate or []) if do_open else []
        n_open = (len(rates) or 2) if do_open else 0
        total = repeats * len(concurrency) * len(configs) * requests + n_open * len(configs) * requests
        progress = Progress(total, args.no_progress)
        cells: list[dict[str, Any]] = []
        raw_cells: dict[str, dict[str, list[load.CellResult]]] = {c.name: {} for c in configs}
        profile_target = tuple(args.profile.split("@")) if args.profile else None
        for rep in range(repeats):
            for li, conc in enumerate(concurrency):
                shift = (rep + li) % max(1, len(configs))
                order = configs[shift:] + configs[:shift]
                for cfg in order:
                    progress.describe(f"{cfg.name} c={conc} rep {rep + 1}/{repeats}")
                    cell = _run_closed(
                        cfg,
                        urls[cfg.name],
                        clip_list,
                        conc,
                        requests,
                        cell_s,
                        progress,
                        rep,
                        servers.get(cfg.name),
                        profile_target,
                        out,
                        args.profile_gil,
                    )
                    cells.append(cell["record"])
                    raw_cells[cfg.name].setdefault(str(conc), []).append(cell["result"])
        summary = {
            name: {lvl: report.summarize(cs) for lvl, cs in levels.items()} for name, levels in raw_cells.items()
        }
        per_rep = {
            name: {lvl: [report.summarize([c]) for c in cs] for lvl, cs in levels.items()}
            for name, levels in raw_cells.items()
        }
        result["closed_loop"] = {"cells": cells, "summary": summary}

        # ---------------------------------------------------------------- open loop (Poisson), interleaved
        if do_open:
            if not rates:
                slowest = min(summary, key=lambda n: max(s["rps"] for s in summary[n].values()))
                base_cfg = "funasr-server" if "funasr-server" in summary else slowest
                best = max(s["rps"] for s in summary[base_cfg].values())
                rates = [round(0.5 * best, 2), round(1.5 * best, 2)]
                result["settings"]["rates_from"] = f"0.5x and 1.5x {base_cfg}'s best closed-loop requests/s"
            result["settings"]["rates"] = rates
            open_cells: list[dict[str, Any]] = []
            open_raw: dict[str, dict[str, list[load.CellResult]]] = {c.name: {} for c in configs}
            for ri, rate in enumerate(rates):
                shift = ri % len(configs)
                for cfg in configs[shift:] + configs[:shift]:
                    progress.describe(f"{cfg.name} rate={rate:g}/s")
                    before = asyncio.run(load.scrape(urls[cfg.name])) if cfg.has_metrics else None
                    proc_of = servers.get(cfg.name)
                    pid = proc_of.proc.pid if proc_of is not None and proc_of.proc is not None else None
                    cpu0, me0 = (load.process_cpu_s(pid) if pid else None), load.self_cpu_s()
                    res = asyncio.run(
                        load.open_loop(
                            urls[cfg.name],
                            clip_list,
                            cfg.form,
                            rate=rate,
                            requests=requests,
                            max_s=cell_s,
                            seed=ri,
                            on_done=progress.step,
                        )
                    )
                    cpu1 = load.process_cpu_s(pid) if pid else None
                    res.client_cpu_s = load.self_cpu_s() - me0
                    res.server_cpu_s = cpu1 - cpu0 if cpu0 is not None and cpu1 is not None else None
                    rec = {"config": cfg.name, "rate": rate, **report.summarize([res]), "loadavg": _loadavg()}
                    if before is not None:
                        rec["server"] = load.metrics_delta(before, asyncio.run(load.scrape(urls[cfg.name])))
                    open_cells.append(rec)
                    open_raw[cfg.name].setdefault(f"{rate:g}", []).append(res)
            open_summary = {n: {lvl: report.summarize(cs) for lvl, cs in lv.items()} for n, lv in open_raw.items()}
            open_per_rep = {
                n: {lvl: [report.summarize([c]) for c in cs] for lvl, cs in lv.items()} for n, lv in open_raw.items()
            }
            result["open_loop"] = {
                "cells": open_cells,
                "summary": open_summary,
                "ratios": report.ratios(open_summary, open_per_rep, variants),
            }
        else:
            result["open_loop"] = {"cells": [], "summary": {}, "ratios": {}}
        progress.close()
        result["machine"]["loadavg_after_load"] = _loadavg()
    finally:
        for sp in servers.values():
            sp.stop()

    # -------------------------------------------------------------------- cold start vs steady state
    for name, c in cold.items():
        steady = summary.get(name, {}).get(str(min(concurrency)), {}).get("latency_s", {}).get("p50")
        c["steady_p50_at_lowest_concurrency_s"] = steady
        c["first_request_vs_steady_p50"] = report._ratio(c["first_request_s"], steady)
    result["cold_start"] = cold

    # -------------------------------------------------------------------- raw model ceiling (servers stopped)
    raw: dict[str, Any] = {}
    if not args.no_raw and not args.url:
        precisions = sorted({c.precision for c in configs if c.kind == "ours"}) or ["fp32"]
        if args.raw_only:
            precisions = ["fp32", "bf16" if args.device == "cpu" else "fp16"]
        for precision in precisions:
            print(f"asr-bench: raw model ceiling ({precision}) ...", file=sys.stderr)
            raw[precision] = raw_mod.measure_in_thread(
                model,
                clip_list,
                precision=precision,
                device=args.device,
                ncpu=ncpu,
                max_batch_size=2 if quick else args.max_batch_size,
                min_s=0.2 if quick else 2.0,
                min_reps=1 if quick else 3,
            )
    result["raw"] = raw
    result["closed_loop"]["ratios"] = report.ratios(summary, per_rep, variants)
    result["serving_efficiency"] = report.served_vs_raw(summary, raw)
    result["machine"]["loadavg_end"] = _loadavg()
    result["machine"]["other_busy_processes_end"] = _busy_processes({os.getpid()})
    result["finished_at"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    result["headline"] = _headline(result, concurrency)

    json_path = out / "bench.json"
    json_path.write_text(json.dumps(result, indent=1))
    png_path = out / "bench.png"
    report.plot(result, png_path)
    result["files"] = {"json": str(json_path), "png": str(png_path)}
    json_path.write_text(json.dumps(result, indent=1))
    return result


def _run_closed(
    cfg: ServerConfig,
    url: str,
    clip_list: Sequence[clips_mod.Clip],
    conc: int,
    requests: int,
    cell_s: float,
    progress: Progress,
    rep: int,
    server: ServerProcess | None,
    profile_target: tuple[str, ...] | None,
    out: Path,
    gil: bool = False,
) -> dict[str, Any]:
    before = asyncio.run(load.scrape(url)) if cfg.has_metrics else None
    recorder = None
    profiled = profile_target == (cfg.name, str(conc)) and rep == 0 and server is not None and server.proc is not None
    if profiled and server is not None and server.proc is not None:
        from .profile import Recorder

        suffix = "-gil" if gil else ""
        recorder = Recorder(server.proc.pid, out / f"profile-{cfg.name}-c{conc}{suffix}.txt", gil=gil)
        time.sleep(0.5)
    pid = server.proc.pid if server is not None and server.proc is not None else None
    cpu0 = load.process_cpu_s(pid) if pid else None
    me0 = load.self_cpu_s()
    res = asyncio.run(
        load.closed_loop(
            url,
            clip_list,
            cfg.form,
            concurrency=conc,
            requests=requests,
            max_s=cell_s,
            on_done=progress.step,
            offset=rep * 7,
        )
    )
    cpu1 = load.process_cpu_s(pid) if pid else None
    res.client_cpu_s = load.self_cpu_s() - me0
    res.server_cpu_s = cpu1 - cpu0 if cpu0 is not None and cpu1 is not None else None
    record: dict[str, Any] = {
        "config": cfg.name,
        "concurrency": conc,
        "repeat": rep,
        **report.summarize([res]),
        "loadavg": _loadavg(),
    }
    if recorder is not None:
        err = recorder.stop()
        from .profile import summarize as summarize_profile

        try:
            record["profile"] = {"file": str(recorder.out), **summarize_profile(recorder.out)}
        except OSError:
            record["profile"] = {"error": err}
    if before is not None:
        record["server"] = load.metrics_delta(before, asyncio.run(load.scrape(url)))
    return {"record": record, "result": res}


def _headline(result: dict[str, Any], concurrency: list[int]) -> dict[str, Any]:
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
    return h


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    if args.quick and args.repeats is None:
        args.repeats = 1
    t0 = time.monotonic()
    if args.overload:
        return _overload(args)
    try:
        result = run(args)
    except RuntimeError as exc:
        print(f"asr-bench: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result["headline"], indent=1))
    print(
        f"asr-bench: wrote {result['files']['json']} and {result['files']['png']} in {time.monotonic() - t0:.0f} s",
        file=sys.stderr,
    )
    return 0


def _overload(args: argparse.Namespace) -> int:
    from . import overload

    args.out.mkdir(parents=True, exist_ok=True)
    model = _resolve_model(args.model, args.models_dir)
    default_clips = "demo-heldout" if clips_mod.CLIP_SETS["demo-heldout"].is_dir() else "speech"
    _, clip_list = clips_mod.load(args.clips or default_clips, args.out)
    try:
        result = overload.run(args, model, clip_list)
    except RuntimeError as exc:
        print(f"asr-bench: {exc}", file=sys.stderr)
        return 1
    result["command"] = "asr-bench " + shlex.join(args.argv)
    (args.out / "overload.json").write_text(json.dumps(result, indent=1))
    print("\n".join(result["headline"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
