"""The funasr-onnx peer of `asr-bench` (bench/asr_bench/onnx_peer.py) on the demo model: FunASR's own ONNX export
made into a work directory beside a copy of the model (the model's own directory untouched), FunASR's ONNX runtime
transcribing the sample right, over the peer's HTTP routes."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from requirements_check import import_or_skip

import_or_skip("funasr_onnx", "make venv installs it (pip install --no-deps funasr-onnx==0.4.3)")
from aiohttp.test_utils import TestClient, TestServer  # noqa: E402
from asr_bench import onnx_peer, peer_http  # noqa: E402
from asr_inference.config import DEMO_MODEL_DIR  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "samples" / "demo.wav"
EXPECTED = (ROOT / "samples" / "demo.txt").read_text().strip()


@pytest.mark.parametrize("quantize", [False, True], ids=["fp32", "int8"])
async def test_funasr_onnx_peer_transcribes_over_http(tmp_path: Path, quantize: bool) -> None:
    model = tmp_path / "demo"
    shutil.copytree(DEMO_MODEL_DIR, model)
    before = sorted(p.name for p in model.iterdir())
    peer = onnx_peer.Peer(model, quantize=quantize, ncpu=1)
    assert sorted(p.name for p in model.iterdir()) == before  # the export went to the work directory
    exported = model.parent / "demo.funasr-onnx" / ("model_quant.onnx" if quantize else "model.onnx")
    assert exported.stat().st_size > 100_000
    async with TestClient(TestServer(peer_http.app(peer))) as client:
        assert (await client.get("/health")).status == 200
        form = {"file": SAMPLE.read_bytes()}
        response = await client.post("/v1/audio/transcriptions", data=form)
        body = await response.json()
        empty = await client.post("/v1/audio/transcriptions", data={"model": "x"})
    assert response.status == 200 and body["text"].lower().split() == EXPECTED.split()
    assert empty.status == 400
