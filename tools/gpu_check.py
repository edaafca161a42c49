"""The GPU run in one command (`tools/gpu_check.sh`): what a machine with one GPU does with our server, written as
one JSON file and a short table, in a few minutes, with no network.

  1. the machine: torch, CUDA, the device, its memory;
  2. the raw ceiling (asr_bench.raw: our backend in this process, no HTTP): the padded forward at batch 1…N for
     fp32, fp32 with TF32 matmuls, fp16 and bf16 (autocast, as served), each with the warm-up gate's verdict
     (argmax agreement, CER against fp32);
  3. peak GPU memory of one batch of 16 in fp16 against fp32;
  4. served: asr-serve started as a pod starts it (cold start = process start → /readyz 200, whose body carries
     the gate's verdict and the graph mode), then closed-loop load at the given concurrencies on 10-s clips:
     real-time factor (audio seconds answered per wall second) and its share of the raw ceiling.

The model is SenseVoice-Small's real dimensions with random weights (asr_bench.make_model; timing does not depend
on the weights). `--cpu-smoke` runs the same code on this CPU with the embedded demo model and tiny sizes (a test
does, so the script is known to work before a GPU is ever lent).

  5. a torch.profiler trace (Chrome format, `trace.json`) of three batches of the served precision at the
     largest batch size, run by the backend in this process as the server's inference thread runs them, and its
     ten most expensive operators in the report.

  6. Whisper and GLM-ASR (issue 34): Whisper-small's and GLM-ASR-Nano's dimensions with random weights, ours
     batched vs ours one request per forward vs transformers' own way (Whisper's `pipeline`, GLM-ASR's model-card
     recipe) one request at a time, at c = 16 on 10-s clips.

Not measured yet (issue 31): weights cast once to fp16 and CUDA graphs (item 2, not implemented in the server).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import logging
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Plan:
    device: str
    model: str  # "demo" or a make_model kind
    precisions: tuple[tuple[str, str, bool], ...]  # (label, server precision, TF32 matmuls)
    max_batch_size: int
    clip_s: float
    clips: int
    concurrency: tuple[int, ...]
    cell_s: float
    raw_min_s: float
    whisper_dims: str  # asr_bench.make_whisper dimensions of the Whisper cells
    glm_dims: str  # asr_bench.make_glm_asr dimensions of the GLM-ASR cells
    transformers_concurrency: int  # of the Whisper and GLM-ASR cells

    @classmethod
    def gpu(cls, device: str) -> Plan:
        return cls(device, "sensevoice-small-random",
                   (("fp32", "fp32", False), ("tf32", "fp32", True), ("fp16", "fp16", False), ("bf16", "bf16", False)),
                   128, 10.0, 64, (32, 128), 30.0, 1.0, "small", "nano", 16)  # fmt: skip

    @classmethod
    def cpu_smoke(cls) -> Plan:
        return cls("cpu", "demo", (("fp32", "fp32", False), ("bf16", "bf16", False)), 4, 2.0, 6, (2, 4), 3.0, 0.2,
                   "tiny-test", "tiny-test", 2)  # fmt: skip


def environment(device: str) -> dict[str, Any]:
    import torch

    env: dict[str, Any] = {"python": platform.python_version(), "torch": torch.__version__,
                           "cuda_runtime": torch.version.cuda, "cpus": os.cpu_count(), "device": device}  # fmt: skip
    if device.startswith("cuda"):
        props = torch.cuda.get_device_properties(torch.device(device))
        env |= {"gpu": props.name, "gpu_memory_gib": round(props.total_memory / 2**30, 1),
                "capability": f"{props.major}.{props.minor}", "sms": props.multi_processor_count}  # fmt: skip
    return env


def make_clips(seconds: float, count: int) -> list[Any]:
    """`count` clips of `seconds` each, cut from the held-out demo speech laid end to end (no espeak or network
    on a GPU machine; the random-weight model's speed does not depend on what is said)."""
    from asr_bench.clips import CLIP_SETS, Clip, load_dir

    speech = np.concatenate([c.samples() for c in load_dir(CLIP_SETS["demo-heldout"])])
    n = int(seconds * 16000)
    clips = []
    for i in range(count):
        start = (i * 7919) % max(1, len(speech) - n)  # a different cut each time
        piece = np.resize(speech[start:], n)
        buf = io.BytesIO()
        sf.write(buf, piece, 16000, format="WAV", subtype="PCM_16")
        clips.append(Clip(f"cut-{i}", buf.getvalue(), seconds))
    return clips


def model_dir(plan: Plan, out: Path) -> Path:
    if plan.model == "demo":
        import asr_inference

        return Path(asr_inference.__file__).parent / "models" / "demo"
    from asr_bench.make_model import ensure

    return ensure(plan.model, out / "models")


def set_tf32(on: bool) -> None:
    import torch

    torch.backends.cuda.matmul.allow_tf32 = on
    torch.backends.cudnn.allow_tf32 = on


def raw_ceiling(plan: Plan, model: Path, clips: list[Any]) -> dict[str, Any]:
    from asr_bench.raw import measure_in_thread

    rows = {}
    for label, precision, tf32 in plan.precisions:
        set_tf32(tf32)
        try:
            rows[label] = measure_in_thread(model, clips, precision=precision, device=plan.device, ncpu=0,
                                            max_batch_size=plan.max_batch_size, min_s=plan.raw_min_s)  # fmt: skip
        finally:
            set_tf32(False)
        rows[label]["tf32"] = tf32
    return rows


def warm_backend(plan: Plan, model: Path, clips: list[Any], precision: str, batch: int) -> tuple[Any, list[Any]]:
    """The server's backend loaded in this process at `precision` (forced, as a ceiling measures it), warmed on a
    batch of `batch` clips; returns it and that batch."""
    from asr_inference.backends.funasr_backend import FunASRBackend
    from asr_inference.config import Settings

    backend = FunASRBackend(Settings(model=str(model), device=plan.device, precision=precision, force_precision=True))
    backend.load()
    prepared = [backend.prepare(clips[i % len(clips)].samples()) for i in range(batch)]
    backend.warm(prepared)
    return backend, prepared


def peak_memory(plan: Plan, model: Path, clips: list[Any], precision: str, batch: int = 16) -> int | None:
    """Most bytes allocated on the GPU while one batch of `batch` clips runs (after the model is loaded)."""
    if not plan.device.startswith("cuda"):
        return None
    import torch
    from asr_inference.backends import DecodeOptions

    backend, prepared = warm_backend(plan, model, clips, precision, batch)
    torch.cuda.synchronize(backend.device)
    torch.cuda.reset_peak_memory_stats(backend.device)
    backend.transcribe_batch(prepared, [DecodeOptions()] * batch)
    torch.cuda.synchronize(backend.device)
    peak = int(torch.cuda.max_memory_allocated(backend.device))
    del backend
    torch.cuda.empty_cache()
    return peak


def profile(plan: Plan, model: Path, clips: list[Any], precision: str, out: Path) -> dict[str, Any]:
    """Three batches of `plan.max_batch_size` under torch.profiler: the trace file and the top operators."""
    from asr_inference.backends import DecodeOptions
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    backend, batch = warm_backend(plan, model, clips, precision, plan.max_batch_size)
    options = [DecodeOptions()] * len(batch)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if plan.device.startswith("cuda") else [])
    with torch_profile(activities=activities) as prof:
        for _ in range(3):
            backend.transcribe_batch(batch, options)
    trace = out / "trace.json"
    prof.export_chrome_trace(str(trace))
    key = "self_device_time_total" if plan.device.startswith("cuda") else "self_cpu_time_total"
    top = sorted(prof.key_averages(), key=lambda e: getattr(e, key, 0.0), reverse=True)[:10]
    return {
        "precision": precision, "batch_size": len(batch), "trace": trace.name, "sorted_by": key,
        "top_ops": [{"op": e.key, "calls": e.count, "self_ms": round(getattr(e, key, 0.0) / 1000, 3)} for e in top],
    }  # fmt: skip


def served(
    plan: Plan,
    model: Path,
    clips: list[Any],
    precision: str,
    out: Path,
    *,
    config: Any = None,
    concurrency: tuple[int, ...] | None = None,
) -> dict[str, Any]:
    """`config` (an asr_bench ServerConfig) started as a pod starts it, then closed-loop cells; default: ours at
    `precision` with the plan's batch size."""
    from asr_bench.load import closed_loop
    from asr_bench.report import latency_stats
    from asr_bench.servers import ServerConfig, ServerProcess

    if config is None:
        config = ServerConfig(f"gpu-check-{precision}", "ours", "asr-serve as a pod runs it", plan.max_batch_size,
                              precision, ["--max-wait-ms", "10"])  # fmt: skip
    server = ServerProcess(config, model=model, device=plan.device, ncpu=0, log_dir=out)
    cold_start_s = server.start(timeout_s=900)
    cells = []
    try:
        for c in concurrency or plan.concurrency:
            asyncio.run(closed_loop(server.url, clips, config.form, concurrency=c, requests=2 * c, max_s=60))  # warm
            cell = asyncio.run(closed_loop(server.url, clips, config.form, concurrency=c, requests=10**9,
                                           max_s=plan.cell_s))  # fmt: skip
            ok = [s for s in cell.samples if s.status == 200]
            wall = cell.finished - cell.started
            latency = latency_stats(cell.samples)  # of the answered requests
            cells.append({
                "concurrency": c, "requests": len(cell.samples), "ok": len(ok), "wall_s": round(wall, 2),
                "rtfx": round(sum(s.audio_s for s in ok) / wall, 1), "p50_s": latency["p50"], "p95_s": latency["p95"],
            })  # fmt: skip
    finally:
        server.stop()
    return {"precision": precision, "cold_start_s": round(cold_start_s, 2), "readyz": server.ready_body,
            "cells": cells}  # fmt: skip


def transformers_family(plan: Plan, family: str, clips: list[Any], precision: str, out: Path) -> dict[str, Any]:
    """Whisper (`plan.whisper_dims`) or GLM-ASR (`plan.glm_dims`), random weights, generation capped at what a
    10-s clip's transcript takes: ours batched, ours one request per forward, and transformers' own way (Whisper's
    pipeline, GLM-ASR's model-card recipe) one request at a time, at one concurrency."""
    from asr_bench.report import _ratio
    from asr_bench.servers import ServerConfig

    if family == "whisper":
        from asr_bench.make_whisper import build

        dims = plan.whisper_dims
        model = build(out / "models" / f"whisper-{dims}", dims, max_length=48)
    else:
        from asr_bench.make_glm_asr import build as build_glm

        dims = plan.glm_dims
        model = build_glm(out / "models" / f"glm-asr-{dims}", dims, max_new_tokens=44)
    level, wait = plan.transformers_concurrency, ["--max-wait-ms", "10"]
    configs = {
        "batched": ServerConfig(f"{family}-batched", "ours", "asr-serve", level, precision, wait),
        "per_request": ServerConfig(f"{family}-per-request", "ours", "asr-serve, batch 1", 1, precision, wait),
        "pipeline": ServerConfig(f"{family}-transformers", "transformers-pipeline", "transformers, one at a time"),
    }
    cells = {name: served(plan, model, clips, precision, out, config=c, concurrency=(level,))
             for name, c in configs.items()}  # fmt: skip
    rtfx = {name: cell["cells"][0]["rtfx"] for name, cell in cells.items()}
    return {"dims": dims, "concurrency": level, "precision": precision, **cells,
            "batched_over_pipeline": _ratio(rtfx["batched"], rtfx["pipeline"]),
            "batched_over_per_request": _ratio(rtfx["batched"], rtfx["per_request"])}  # fmt: skip


def run(plan: Plan, out: Path) -> dict[str, Any]:
    from asr_bench.report import _ratio

    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    model = model_dir(plan, out)
    clips = make_clips(plan.clip_s, plan.clips)
    report: dict[str, Any] = {"plan": plan.__dict__, "environment": environment(plan.device)}
    report["raw"] = raw_ceiling(plan, model, clips)
    report["peak_memory_batch16"] = {p: peak_memory(plan, model, clips, p) for p in ("fp32", "fp16")}
    serve_precision = "fp16" if plan.device.startswith("cuda") else "fp32"
    report["profile"] = profile(plan, model, clips, serve_precision, out)
    report["served"] = served(plan, model, clips, serve_precision, out)
    for family in ("whisper", "glm-asr"):
        report[family] = transformers_family(plan, family, clips, serve_precision, out)
    ceiling = report["raw"].get(serve_precision, {}).get("best_features_forward_rtfx")
    best = max((c["rtfx"] for c in report["served"]["cells"]), default=None)
    fp16, fp32 = report["peak_memory_batch16"]["fp16"], report["peak_memory_batch16"]["fp32"]
    report["summary"] = {
        "served_rtfx": best,
        "raw_ceiling_rtfx": ceiling,
        "served_share_of_ceiling": _ratio(best, ceiling),
        "fp16_over_fp32_peak_memory": _ratio(fp16, fp32),
        "gate": {k: report["raw"][k]["precision_check"] for k in report["raw"]},
        "whisper_batched_over_pipeline": report["whisper"]["batched_over_pipeline"],
        "glm_asr_batched_over_transformers": report["glm-asr"]["batched_over_pipeline"],
        "seconds": round(time.monotonic() - started, 1),
    }
    (out / "gpu_check.json").write_text(json.dumps(report, indent=1, default=str))
    (out / "gpu_check.txt").write_text(table(report))
    return report


def table(report: dict[str, Any]) -> str:
    lines = [f"{k}: {v}" for k, v in report["environment"].items()]
    lines.append("raw ceiling (features + forward, x real time) by batch size:")
    for label, raw in report["raw"].items():
        by_bs = " ".join(f"{r['batch_size']}:{r['features_forward_rtfx']}" for r in raw["by_batch_size"])
        used = raw["precision_used"] + (" (TF32)" if raw["tf32"] else "")
        lines.append(f"  {label:5} used {used:12} {by_bs}  gate {raw['precision_check']}")
        features = " ".join(f"{r['batch_size']}:{r['features_ms_per_audio_s']}" for r in raw["by_batch_size"])
        lines.append(f"        features on the device, ms per audio s by batch size: {features}")
    s = report["served"]
    lines.append(f"served {s['precision']}: cold start {s['cold_start_s']} s")
    for c in s["cells"]:
        lines.append(f"  c={c['concurrency']}: {c['rtfx']}x real time, p50 {c['p50_s']} s, p95 {c['p95_s']} s, "
                     f"{c['ok']}/{c['requests']} ok")  # fmt: skip
    for family in ("whisper", "glm-asr"):
        w = report[family]
        lines.append(f"{family}-{w['dims']} {w['precision']} at c={w['concurrency']}: "
                     + ", ".join(f"{k} {w[k]['cells'][0]['rtfx']}x" for k in ("batched", "per_request", "pipeline"))
                     + f"; batched / transformers {w['batched_over_pipeline']}")  # fmt: skip
    prof = report["profile"]
    lines.append(f"profile ({prof['precision']}, 3 batches of {prof['batch_size']}, {prof['sorted_by']}): "
                 + ", ".join(f"{o['op']} {o['self_ms']} ms" for o in prof["top_ops"][:5]))  # fmt: skip
    lines.append(f"summary: {json.dumps(report['summary'])}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO / "bench-results" / "gpu-check")
    parser.add_argument("--device", default="cuda", help="cuda | cuda:N (ignored with --cpu-smoke)")
    parser.add_argument("--cpu-smoke", action="store_true", help="the same steps on CPU, demo model, tiny sizes")
    args = parser.parse_args(argv)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per readiness poll otherwise
    plan = Plan.cpu_smoke() if args.cpu_smoke else Plan.gpu(args.device)
    report = run(plan, args.out)
    sys.stdout.write(table(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
