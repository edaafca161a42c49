"""`asr-bench --overload --quick` end to end on the tiny random SenseVoice: one real server past its capacity. Checks
what each phase measured and that the server kept its contract (only 200s and 429s, /metrics answered, every
stalled upload held open); no timing assertions."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from asr_bench.clips import load_dir
from asr_bench.overload import long_clip

pytestmark = pytest.mark.slow
SPEECH = Path(__file__).resolve().parents[1] / "data" / "speech"


@pytest.fixture(scope="module")
def overload_run(sensevoice_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("overload")
    cmd = [sys.executable, "-m", "asr_bench.cli", "--overload", "--quick", "--model", str(sensevoice_dir),
           "--out", str(out), "--clips", "speech"]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-2000:]
    result: dict[str, Any] = json.loads((out / "overload.json").read_text())
    assert proc.stdout.strip().splitlines()[-len(result["headline"]) :] == result["headline"]
    return result


def test_capacity_then_a_sweep_past_it(overload_run: dict[str, Any]) -> None:
    r = overload_run["results"]
    assert r["capacity"]["rps"] > 0 and r["capacity"]["unloaded"]["p99_s"] > 0
    offered = [c["offered"] for c in r["sweep"]]
    assert offered == ["1x", "5x"]
    for cell in r["sweep"]:
        assert set(cell["codes"]) <= {"200", "429"}, cell["codes"]  # overload answers 429, never 5xx or a reset
        assert cell["goodput_rps"] > 0 and cell["goodput_vs_capacity"] is not None
        assert cell["metrics"]["probes"] > 0 and cell["metrics"]["failures"] == 0
    five = r["sweep"][-1]
    assert five["rate_rps"] == pytest.approx(5 * r["capacity"]["rps"], rel=0.01)


def test_stalled_uploads_are_held_while_the_others_are_served(overload_run: dict[str, Any]) -> None:
    s = overload_run["results"]["slowloris"]
    assert s["stalled_uploads"] == 5
    assert set(s["beside_stalled"]["codes"]) == {"200"} and s["p95_ratio"] is not None


def test_short_clips_beside_a_long_file(overload_run: dict[str, Any]) -> None:
    m = overload_run["results"]["mixed"]
    assert m["long_file_s"] == 30.0
    assert set(m["short_beside_long"]["codes"]) == {"200"} and m["short_p95_ratio"] is not None


def test_long_clip_is_the_clips_played_in_turn() -> None:
    clips = load_dir(SPEECH)
    lengths = [len(c.samples()) for c in clips]
    made = long_clip(clips, seconds=sum(lengths) / 16000 + 1.0)
    samples = made.samples()
    assert len(samples) == sum(lengths) + 16000
    start = 0
    for clip, n in zip(clips, lengths, strict=True):
        np.testing.assert_allclose(samples[start : start + n], clip.samples(), atol=1 / 32767)
        start += n
    # after every clip once, the first one again
    np.testing.assert_allclose(samples[start:], clips[0].samples()[:16000], atol=1 / 32767)


def test_phases_are_chosen_by_name_and_the_sweep_brings_its_capacity() -> None:
    from asr_bench.overload import PHASES, select_phases

    names = [p.__name__.removeprefix("phase_") for p in select_phases(["mixed", "sweep"])]
    assert names == ["capacity", "sweep", "mixed"]  # the fixed order, capacity added for the sweep
    assert select_phases(None) == PHASES
    with pytest.raises(ValueError, match="known: capacity"):
        select_phases(["mixd"])
