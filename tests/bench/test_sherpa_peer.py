"""The sherpa-onnx peer of `asr-bench` (bench/asr_bench/sherpa_peer.py) on the demo model: the model exported in
sherpa-onnx's SenseVoice signature with the metadata its loader reads, into a work directory beside a copy of the
model (the model's own directory untouched); sherpa-onnx's recognizer (its own C++ features and CTC decoding)
transcribing the sample right over the peer's HTTP routes, in fp32 and INT8."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from requirements_check import import_or_skip

import_or_skip("sherpa_onnx", "make venv installs it (the bench extra pins sherpa-onnx)")
from aiohttp.test_utils import TestClient, TestServer  # noqa: E402
from asr_bench import peer_http, sherpa_peer  # noqa: E402
from asr_inference.config import DEMO_MODEL_DIR  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "samples" / "demo.wav"
EXPECTED = (ROOT / "samples" / "demo.txt").read_text().strip()


@pytest.mark.parametrize("quantize", [False, True], ids=["fp32", "int8"])
async def test_sherpa_onnx_peer_transcribes_over_http(tmp_path: Path, quantize: bool) -> None:
    import onnx

    model = tmp_path / "demo"
    shutil.copytree(DEMO_MODEL_DIR, model)
    before = sorted(p.name for p in model.iterdir())
    peer = sherpa_peer.Peer(model, quantize=quantize, ncpu=1)
    assert sorted(p.name for p in model.iterdir()) == before  # the export went to the work directory
    exported = model.parent / "demo.sherpa-onnx" / ("model.int8.onnx" if quantize else "model.onnx")
    meta = {p.key: p.value for p in onnx.load(str(exported)).metadata_props}
    assert meta["lfr_window_size"] == "7" and meta["lfr_window_shift"] == "6" and meta["normalize_samples"] == "0"
    assert len(meta["neg_mean"].split(",")) == len(meta["inv_stddev"].split(",")) == 560
    async with TestClient(TestServer(peer_http.app(peer))) as client:
        assert (await client.get("/health")).status == 200
        response = await client.post("/v1/audio/transcriptions", data={"file": SAMPLE.read_bytes()})
        body = await response.json()
    assert response.status == 200 and body["text"].lower().split() == EXPECTED.split()
