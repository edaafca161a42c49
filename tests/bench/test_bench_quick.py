"""`asr-bench --quick` end to end on the tiny random SenseVoice: real servers on loopback, real requests, the raw
model in-process; checks the structure of the JSON and that the plot is a real image. No timing assertions."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def quick_run(sensevoice_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("bench")
    cmd = [sys.executable, "-m", "asr_bench.cli", "--quick", "--model", str(sensevoice_dir), "--out", str(out),
           "--clips", "speech", "--no-progress"]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, proc.stdout


def test_json_structure(quick_run: tuple[Path, str]) -> None:
    out, stdout = quick_run
    result = json.loads((out / "bench.json").read_text())
    for key in ("schema", "machine", "model", "clips", "settings", "closed_loop", "open_loop", "cold_start", "raw",
                "serving_efficiency", "headline", "files"):  # fmt: skip
        assert key in result, key
    assert result["quick"] is True
    assert result["machine"]["cpus"] >= 1 and "loadavg_start" in result["machine"]
    assert result["clips"]["count"] > 0 and result["clips"]["total_s"] > 0

    configs = {"ours-batched-fp32", "ours-per-request-fp32"}
    summary = result["closed_loop"]["summary"]
    assert set(summary) == configs
    levels = {str(c) for c in result["settings"]["concurrency"]}
    for name in configs:
        assert set(summary[name]) == levels
        for s in summary[name].values():
            assert s["ok"] == s["requests"] > 0 and not s["errors"]
            assert s["rps"] > 0 and s["rtfx"] > 0
            assert 0 < s["latency_s"]["p50"] <= s["latency_s"]["p95"] <= s["latency_s"]["p99"]
            cpu = s["cpu"]  # the server's CPU outside the forward: process CPU less the forwards' thread CPU
            assert 0 < cpu["outside_forward_ms_per_audio_s"] <= cpu["server_ms_per_audio_s"]
            assert cpu["forward_ms_per_audio_s"] > 0 and cpu["features_ms_per_audio_s"] > 0
            assert cpu["rtfx_ceiling_per_core"] == pytest.approx(1000 / cpu["outside_forward_ms_per_audio_s"], rel=0.01)
            assert {"MainThread", "asr-decode", "asr-inference"} <= set(cpu["threads_ms_per_request"])
    for cell in result["closed_loop"]["cells"]:
        server = cell["server"]  # our server's /metrics deltas
        assert server["items"] == cell["ok"], "every request is one item in exactly one batch"
        assert sum(server["histogram"].values()) == server["batches"] > 0
        assert {"decode", "prepare", "features", "inference", "postprocess"} <= set(server["stages"])
        assert server["cpu_s"]["inference"] >= server["cpu_s"]["features"] > 0  # features are inside the batch
        if cell["config"] == "ours-per-request-fp32":
            assert server["histogram"] == {"1": server["batches"]} and server["mean_batch_size"] == 1.0

    ratio = result["closed_loop"]["ratios"]["batched_vs_per_request"]
    assert ratio["numerator"] == "ours-batched-fp32" and set(ratio["by_level"]) == levels
    assert all(v["throughput"] > 0 for v in ratio["by_level"].values())

    for name in configs:
        cold = result["cold_start"][name]
        assert cold["process_start_to_ready_s"] > 0 and cold["first_request_status"] == 200
        assert cold["ready_body"]["status"] == "ready"
        assert "--cache-entries" in cold["command"]
    assert result["cold_start"]["ours-per-request-fp32"]["ready_body"]["max_batch_size"] == 1

    raw = result["raw"]["fp32"]
    assert [r["batch_size"] for r in raw["by_batch_size"]] == [1, 2]
    assert raw["best_forward_rtfx"] >= raw["best_features_forward_rtfx"] > 0
    assert raw["features"]["ms_per_clip"] > 0 and raw["features"]["ms_per_audio_s"] > 0
    assert all(r["features_s"] > 0 and r["forward_s"] > 0 for r in raw["by_batch_size"])
    eff = result["serving_efficiency"]["ours-batched-fp32"]
    assert set(eff) == levels and all(v["vs_features_forward"] > 0 for v in eff.values())
    headline = json.loads(stdout)
    assert headline["concurrency"] == max(result["settings"]["concurrency"])
    assert set(headline["server_cpu_outside_forward"]) == configs


def test_plot_is_an_image(quick_run: tuple[Path, str]) -> None:
    from PIL import Image

    out, _ = quick_run
    png = out / "bench.png"
    assert png.stat().st_size > 10_000
    with Image.open(png) as img:
        img.verify()
    with Image.open(png) as img:
        assert img.format == "PNG" and img.size[0] > 400 and img.size[1] > 200


def test_server_logs_kept(quick_run: tuple[Path, str]) -> None:
    out, _ = quick_run
    assert (out / "server-ours-batched-fp32.log").is_file()
