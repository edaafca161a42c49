"""Summaries, ratios and the plot."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .load import CellResult, Sample

# (name in the JSON, numerator config, denominator config)
RATIO_PAIRS = [
    ("batched_vs_per_request", "ours-batched-fp32", "ours-per-request-fp32"),
    ("batched_vs_funasr_server", "ours-batched-fp32", "funasr-server"),
    ("per_request_vs_funasr_server", "ours-per-request-fp32", "funasr-server"),
    ("bf16_vs_fp32", "ours-batched-bf16", "ours-batched-fp32"),
    ("fp16_vs_fp32", "ours-batched-fp16", "ours-batched-fp32"),
    ("best_reduced_vs_funasr_server", "ours-batched-bf16", "funasr-server"),
]


def latency_stats(samples: Sequence[Sample]) -> dict[str, float | None]:
    lat = np.array([s.latency_s for s in samples if s.status == 200])
    if lat.size == 0:
        return {"p50": None, "p95": None, "p99": None, "mean": None, "max": None}
    p50, p95, p99 = np.percentile(lat, [50, 95, 99])
    return {
        "p50": round(float(p50), 5),
        "p95": round(float(p95), 5),
        "p99": round(float(p99), 5),
        "mean": round(float(lat.mean()), 5),
        "max": round(float(lat.max()), 5),
    }


def _steady(cell: CellResult) -> tuple[list[Sample], float]:
    """Closed loop: the successful requests that finished while every client was still sending (up to the last
    send), over that window. The drain after it (fewer and fewer requests in flight, a slow straggler) would
    otherwise count as capacity the server did not have. Open loop: everything, over the whole cell."""
    ok = [s for s in cell.samples if s.status == 200]
    if cell.last_issued is None or cell.last_issued <= cell.started:
        return ok, cell.finished - cell.started
    done = [s for s in ok if s.end <= cell.last_issued]
    if len(done) < max(4, len(ok) // 2):  # too short a window (very slow cells): whole cell instead
        return ok, cell.finished - cell.started
    return done, cell.last_issued - cell.started


def around_the_forward(
    server_cpu_s: float, stage_cpu_s: dict[str, float], thread_cpu_s: dict[str, float], ok: int, audio_s: float
) -> dict[str, Any]:
    """The server's CPU outside the model forward (decode, features, HTTP, batching, postprocess): process CPU minus
    the forwards' CPU — the inference threads' CPU in batches less their features', plus the native threads (torch's
    intra-op pool doing a CPU forward's math) — per request, per audio second, the real-time factor one core spent
    on that work alone caps a pod at, and every thread group's CPU per request."""
    features = stage_cpu_s.get("features", 0.0)
    forward = stage_cpu_s.get("inference", 0.0) - features + thread_cpu_s.get("native", 0.0)
    outside = max(server_cpu_s - forward, 0.0)
    return {
        "forward_ms_per_audio_s": round(1000 * forward / audio_s, 3),
        "features_ms_per_audio_s": round(1000 * features / audio_s, 3),
        "outside_forward_ms_per_request": round(1000 * outside / ok, 3),
        "outside_forward_ms_per_audio_s": round(1000 * outside / audio_s, 3),
        "rtfx_ceiling_per_core": round(audio_s / outside, 1) if outside > 0 else float("inf"),
        "threads_ms_per_request": {k: round(1000 * v / ok, 3) for k, v in sorted(thread_cpu_s.items())},
    }


def _pooled(per_cell: Sequence[dict[str, float] | None]) -> dict[str, float]:
    pooled: dict[str, float] = {}
    for values in per_cell:
        for k, v in (values or {}).items():
            pooled[k] = pooled.get(k, 0.0) + v
    return pooled


def summarize(cells: Sequence[CellResult]) -> dict[str, Any]:
    """Pooled over repetitions. Throughput (`rps`, `rtfx`) over the steady window of each cell (see `_steady`);
    `*_whole_cell` over the whole cell, drain included. Latency percentiles over every request."""
    samples = [s for c in cells for s in c.samples]
    ok = [s for s in samples if s.status == 200]
    steady = [_steady(c) for c in cells]
    steady_ok = [s for done, _ in steady for s in done]
    steady_wall = sum(w for _, w in steady)
    wall = sum(c.finished - c.started for c in cells)
    errors: dict[str, int] = {}
    for s in samples:
        if s.status != 200:
            errors[str(s.status)] = errors.get(str(s.status), 0) + 1
    audio = sum(s.audio_s for s in ok)
    cpu: dict[str, Any] = {}
    for who in ("server", "client"):
        values = [getattr(c, f"{who}_cpu_s") for c in cells]
        if values and all(v is not None for v in values) and ok:
            total = float(sum(v for v in values if v is not None))
            cpu[f"{who}_s"] = round(total, 3)
            cpu[f"{who}_ms_per_request"] = round(1000 * total / len(ok), 3)
            cpu[f"{who}_ms_per_audio_s"] = round(1000 * total / audio, 3) if audio else None
            cpu[f"{who}_cores_busy"] = round(total / wall, 3) if wall > 0 else None
    if "server_s" in cpu and audio and all(c.server_stage_cpu_s for c in cells):
        stages = _pooled([c.server_stage_cpu_s for c in cells])
        threads = _pooled([c.server_thread_cpu_s for c in cells])
        cpu.update(around_the_forward(float(cpu["server_s"] or 0.0), stages, threads, len(ok), audio))
    return {
        "requests": len(samples),
        "ok": len(ok),
        "errors": errors,
        "dropped": sum(c.dropped for c in cells),
        "wall_s": round(wall, 4),
        "audio_s": round(audio, 3),
        "steady_wall_s": round(steady_wall, 4),
        "steady_requests": len(steady_ok),
        "rps": round(len(steady_ok) / steady_wall, 3) if steady_wall > 0 else 0.0,
        # audio seconds transcribed per wall second
        "rtfx": round(sum(s.audio_s for s in steady_ok) / steady_wall, 3) if steady_wall > 0 else 0.0,
        "rps_whole_cell": round(len(ok) / wall, 3) if wall > 0 else 0.0,
        "rtfx_whole_cell": round(audio / wall, 3) if wall > 0 else 0.0,
        "latency_s": latency_stats(samples),
        "cpu": cpu,
    }


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return round(a / b, 3)


def ratios(
    summary: dict[str, dict[str, dict[str, Any]]],
    per_rep: dict[str, dict[str, list[dict[str, Any]]]],
    variants: Mapping[str, str | None] | None = None,
) -> dict[str, Any]:
    """For each pair and each load level (concurrency or rate): throughput ratio (pooled, plus min/max of the
    per-repetition ratios) and p50/p95/p99 latency ratios (numerator ÷ denominator; < 1 = lower latency)."""
    out: dict[str, Any] = {}
    pairs = list(RATIO_PAIRS)
    for variant, base in (variants or {}).items():
        if base:
            pairs += [
                (f"{variant}_vs_{base}", variant, base),
                (f"{variant}_vs_funasr_server", variant, "funasr-server"),
            ]
    for name, num, den in pairs:
        if num not in summary or den not in summary:
            continue
        levels: dict[str, Any] = {}
        for level, a in summary[num].items():
            b = summary[den].get(level)
            if b is None:
                continue
            reps = [
                _ratio(x["rtfx"], y["rtfx"]) for x, y in zip(per_rep[num][level], per_rep[den][level], strict=False)
            ]
            reps_ok = [r for r in reps if r is not None]
            levels[level] = {
                "throughput": _ratio(a["rtfx"], b["rtfx"]),
                "throughput_per_repeat": reps,
                "throughput_min": min(reps_ok) if reps_ok else None,
                "throughput_max": max(reps_ok) if reps_ok else None,
                **{f"latency_{p}": _ratio(a["latency_s"][p], b["latency_s"][p]) for p in ("p50", "p95", "p99")},
                # server CPU time per audio second (< 1: the numerator needs less CPU for the same audio)
                "server_cpu_per_audio_s": _ratio(
                    a["cpu"].get("server_ms_per_audio_s"), b["cpu"].get("server_ms_per_audio_s")
                ),
            }
        out[name] = {"numerator": num, "denominator": den, "by_level": levels}
    return out


def served_vs_raw(summary: dict[str, dict[str, dict[str, Any]]], raw: dict[str, Any]) -> dict[str, Any]:
    """Serving efficiency: served RTFx ÷ the raw model's best RTFx (features+forward, and forward only)."""
    out: dict[str, Any] = {}
    for config, levels in summary.items():
        if not config.startswith("ours-"):
            continue
        precision = config.rsplit("-", 1)[-1]
        ceiling = raw.get(precision)
        if not ceiling:
            continue
        out[config] = {
            level: {
                "served_rtfx": s["rtfx"],
                "vs_features_forward": _ratio(s["rtfx"], ceiling["best_features_forward_rtfx"]),
                "vs_forward_only": _ratio(s["rtfx"], ceiling["best_forward_rtfx"]),
            }
            for level, s in levels.items()
        }
    return out


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    closed = result["closed_loop"]["summary"]
    opened = result["open_loop"]["summary"]
    panels = 3 if opened else 2
    fig, axes = plt.subplots(1, panels, figsize=(6.2 * panels, 4.8))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    styles = {"p50": "-", "p95": "--", "p99": ":"}
    for i, (config, levels) in enumerate(closed.items()):
        color = colors[i % len(colors)]
        xs = sorted(int(c) for c in levels)
        axes[0].plot(xs, [levels[str(x)]["rtfx"] for x in xs], "o-", color=color, label=config)
        for p, style in styles.items():
            ys = [levels[str(x)]["latency_s"][p] for x in xs]
            axes[1].plot(xs, ys, style, marker="o", ms=3, color=color, label=f"{config} {p}")
    for precision, raw in (result.get("raw") or {}).items():
        if raw:
            axes[0].axhline(raw["best_features_forward_rtfx"], ls="--", lw=1, color="grey")
            axes[0].text(
                0.02,
                raw["best_features_forward_rtfx"],
                f"raw model {precision} (ran {raw['precision_used']}), features+forward, best batch",
                transform=axes[0].get_yaxis_transform(),
                fontsize=7,
                color="grey",
                va="bottom",
            )
    axes[0].set(
        xscale="log", xlabel="concurrency (closed loop)", ylabel="RTFx (audio s per wall s)", title="Throughput"
    )
    axes[0].set_xticks(sorted({int(c) for lv in closed.values() for c in lv}))
    axes[0].get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
    axes[0].legend(fontsize=7)
    axes[1].set(
        xscale="log",
        yscale="log",
        xlabel="concurrency (closed loop)",
        ylabel="latency (s)",
        title="Latency p50 (—) p95 (--) p99 (··)",
    )
    axes[1].set_xticks(axes[0].get_xticks())
    axes[1].get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
    axes[1].legend(fontsize=5, ncol=2)
    if opened:
        ax = axes[2]
        for i, (config, levels) in enumerate(opened.items()):
            color = colors[i % len(colors)]
            rates = sorted(levels, key=float)
            for p, style in (("p50", "-"), ("p95", "--")):
                ys = [levels[r]["latency_s"][p] for r in rates]
                ax.plot([float(r) for r in rates], ys, style, marker="o", ms=3, color=color, label=f"{config} {p}")
        ax.set(
            yscale="log",
            xlabel="offered load (requests/s, Poisson)",
            ylabel="latency (s)",
            title="Open loop: latency p50 (—) p95 (--)",
        )
        ax.legend(fontsize=5, ncol=2)
    m = result["machine"]
    fig.suptitle(
        f"{result['model']['name']} · {result['clips']['set']} ({result['clips']['count']} clips, "
        f"mean {result['clips']['mean_s']:.1f} s) · {m['device']} · {m['cpus']} CPUs",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
