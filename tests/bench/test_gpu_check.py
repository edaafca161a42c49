"""tools/gpu_check.sh, the GPU run, works before a GPU is ever lent: its --cpu-smoke runs every step (raw ceiling
per precision with the gate's verdict, served load with cold start) on this CPU and writes the report."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_cpu_smoke_runs_every_step_and_writes_the_report(tmp_path: Path) -> None:
    proc = subprocess.run(
        [str(REPO / "tools" / "gpu_check.sh"), "--cpu-smoke", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["environment"]["device"] == "cpu" and report["environment"]["torch"]
    assert set(report["raw"]) == {"fp32", "bf16"}
    for raw in report["raw"].values():
        assert [r["batch_size"] for r in raw["by_batch_size"]] == [1, 2, 4]
        assert all(r["forward_rtfx"] > 0 for r in raw["by_batch_size"])
    # bf16 is checked against fp32 at warm-up: the verdict is in the report
    assert report["raw"]["bf16"]["precision_check"]["argmax_agreement"] is not None
    served = report["served"]
    assert served["cold_start_s"] > 0 and served["readyz"]["status"] == "ready"
    for cell in served["cells"]:
        assert cell["ok"] == cell["requests"] > 0 and cell["rtfx"] > 0
    for family in ("whisper", "glm-asr"):
        cells = report[family]
        for name in ("batched", "per_request", "pipeline"):
            cell = cells[name]["cells"][0]
            assert cell["ok"] == cell["requests"] > 0 and cell["rtfx"] > 0, (family, name)
        assert cells["batched"]["readyz"]["family"] == family and cells["batched_over_pipeline"] > 0
    prof = report["profile"]
    assert (tmp_path / prof["trace"]).stat().st_size > 0 and len(prof["top_ops"]) == 10
    summary = report["summary"]
    assert summary["served_rtfx"] > 0 and summary["served_share_of_ceiling"] > 0
    assert summary["fp16_over_fp32_peak_memory"] is None  # GPU memory: not on CPU
    text = (tmp_path / "gpu_check.txt").read_text()
    assert (
        "raw ceiling" in text
        and "served fp32" in text
        and "whisper-tiny-test" in text
        and "glm-asr-tiny-test" in text
        and text in proc.stdout
    )
