"""`--runtime onnx [--quantize int8]`: the SenseVoice forward (Paraformer's encoder) exported to ONNX (cached) and
run by ONNX Runtime, served only when it passes the warm-up gate against the PyTorch forward; batched == alone;
refused with the reason in /readyz otherwise."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import long_speech
import pytest
import torch
from asr_inference.backends import onnx_forward
from requirements_check import import_or_skip
from serving import serve, transcribe

import_or_skip("onnxruntime", "it comes with the inference extra (pip install -e '.[inference]')")
HELDOUT = long_speech.HELDOUT
ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "samples" / "demo.wav"
EXPECTED = (ROOT / "samples" / "demo.txt").read_text().strip()
# INT8 quantizes activations per tensor, i.e. over the whole padded batch: an item's result may depend on its
# batch-mates by a rounding step. What is promised for int8 is the gate's bound on transcripts, not equality.
INT8_BATCH_CER = 0.01


def _heldout() -> list[tuple[Path, str]]:
    texts: dict[str, str] = json.loads((HELDOUT / "transcripts.json").read_text())
    return [(HELDOUT / name, text) for name, text in sorted(texts.items())]


async def _texts(client: Any, clips: list[Path], together: bool) -> list[str]:
    if together:  # one burst: the clips share batches
        responses = await asyncio.gather(*(transcribe(client, c) for c in clips))
    else:
        responses = [await transcribe(client, c) for c in clips]
    assert all(r.status_code == 200 for r in responses), [r.text for r in responses]
    return [r.json()["text"] for r in responses]


@pytest.mark.parametrize("quantize", ["none", "int8"])
async def test_onnx_serves_the_demo_model_like_pytorch(quantize: str, tmp_path: Path) -> None:
    clips = _heldout()
    paths, refs = [p for p, _ in clips], [t for _, t in clips]
    async with serve(cache_entries=0) as (_, client):
        pytorch = await _texts(client, paths, together=False)
    settings = {"runtime": "onnx", "quantize": quantize, "onnx_cache_dir": str(tmp_path)}
    async with serve(cache_entries=0, max_batch_size=8, max_wait_ms=200, **settings) as (app, client):
        ready = (await client.get("/readyz")).json()
        alone = await _texts(client, paths, together=False)
        together = await _texts(client, paths, together=True)
        assert app.state.asr.backend._onnx is not None
    assert ready["runtime"] == "onnx" and ready["requested_runtime"] == "onnx" and ready["quantize"] == quantize
    assert ready["runtime_fallback_reason"] is None and ready["runtime_check"]["argmax_agreement"] >= 0.995
    assert ready["graph_fallback_reason"] == "the onnx runtime serves the forward"
    wer = {name: long_speech.wer(" ".join(refs), " ".join(texts)) for name, texts in [("pytorch", pytorch),
           ("alone", alone), ("together", together)]}  # fmt: skip
    assert wer["alone"] <= wer["pytorch"] + 0.005, wer  # the held-out WER within half a point of PyTorch's
    if quantize == "none":
        assert alone == pytorch and together == alone  # fp32: the same transcripts, batched == alone
    else:
        from asr_inference.backends.precision_gate import character_error_rate

        assert character_error_rate(alone, together) <= INT8_BATCH_CER, (alone, together)
    files = sorted(p.name for p in tmp_path.rglob("*.onnx"))
    assert files == (["model.onnx"] if quantize == "none" else ["model.int8.onnx", "model.onnx"])


async def test_a_cached_export_is_reused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = {"runtime": "onnx", "onnx_cache_dir": str(tmp_path)}
    async with serve(**settings) as (_, client):
        assert (await client.get("/readyz")).json()["runtime"] == "onnx"

    def no_export(*_: Any) -> None:
        raise AssertionError("exported again although the cache holds the graph")

    monkeypatch.setattr(onnx_forward, "export", no_export)
    async with serve(**settings) as (_, client):
        ready = (await client.get("/readyz")).json()
        text = (await transcribe(client, SAMPLE)).json()["text"]
    assert ready["runtime"] == "onnx" and text == EXPECTED
    # the key follows what the graph depends on: other weights, another quantization -> another entry
    other = tmp_path / "weights.pt"
    other.write_bytes(b"other weights")
    assert onnx_forward.cache_key(other, "none") != onnx_forward.cache_key(None, "none")
    assert onnx_forward.cache_key(None, "none") != onnx_forward.cache_key(None, "int8")


async def test_a_graph_that_fails_the_gate_is_refused_with_the_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An exported graph whose logits are off (noise added to what ONNX Runtime returns) is not served."""
    original = onnx_forward.OnnxForward.__call__

    def noisy(self: onnx_forward.OnnxForward, *inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits, lengths = original(self, *inputs)
        return logits + 50 * torch.randn_like(logits), lengths

    monkeypatch.setattr(onnx_forward.OnnxForward, "__call__", noisy)
    async with serve(runtime="onnx", onnx_cache_dir=str(tmp_path)) as (app, client):
        ready = (await client.get("/readyz")).json()
        text = (await transcribe(client, SAMPLE)).json()["text"]
        assert app.state.asr.backend._onnx is None
    assert ready["runtime"] == "pytorch" and ready["requested_runtime"] == "onnx"
    assert "onnx per-frame best tokens agree with fp32" in ready["runtime_fallback_reason"]
    assert ready["runtime_check"]["argmax_agreement"] < 0.995
    assert text == EXPECTED  # PyTorch serves, correctly
    # --force-precision (benchmark ceilings only) serves it anyway, and says so
    async with serve(runtime="onnx", onnx_cache_dir=str(tmp_path), force_precision=True) as (app, client):
        forced = (await client.get("/readyz")).json()
        assert app.state.asr.backend._onnx is not None
    assert forced["runtime"] == "onnx" and forced["runtime_check"]["forced"] is True
    assert forced["runtime_fallback_reason"] is None and forced["runtime_check"]["argmax_agreement"] < 0.995


async def test_onnx_is_refused_where_it_does_not_apply(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A reduced precision was asked for (the graph is fp32), or the export itself fails: PyTorch serves, and says
    why."""
    bf16 = {"precision": "bf16", "force_precision": True}  # served even if its own gate would refuse it here
    async with serve(runtime="onnx", onnx_cache_dir=str(tmp_path), **bf16) as (_, client):
        reduced = (await client.get("/readyz")).json()

    def broken(*_: Any) -> None:
        raise RuntimeError("exporter exploded")

    monkeypatch.setattr(onnx_forward, "export", broken)
    async with serve(runtime="onnx", onnx_cache_dir=str(tmp_path / "empty")) as (_, client):
        failed = (await client.get("/readyz")).json()
    assert reduced["precision"] == "bf16" and reduced["runtime"] == "pytorch"
    assert "precision bf16 was asked for" in reduced["runtime_fallback_reason"]
    assert failed["runtime"] == "pytorch"
    assert failed["runtime_fallback_reason"] == "onnx could not be prepared: RuntimeError: exporter exploded"


def test_asr_export_builds_the_graph_a_start_then_loads(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`asr-export` leaves the cache entry a server with the same flags uses, and says whether it passes the gate."""
    from asr_inference import export

    assert export.main(["--onnx-cache-dir", str(tmp_path), "--quantize", "int8"]) == 0
    verdict = json.loads(capsys.readouterr().out)
    assert verdict["runtime"] == "onnx" and verdict["quantize"] == "int8" and verdict["argmax_agreement"] >= 0.995
    graph = Path(verdict["graph"])
    assert graph.is_file() and graph.parent.parent == tmp_path and graph.name == "model.int8.onnx"
    refused = ["--onnx-cache-dir", str(tmp_path), "--precision", "bf16", "--force-precision"]
    assert export.main(refused) == 1
    assert "precision bf16" in json.loads(capsys.readouterr().out)["runtime_fallback_reason"]
    with pytest.raises(SystemExit) as invalid:  # argparse refuses a choice that does not exist, as asr-serve does
        export.main(["--quantize", "int4"])
    assert invalid.value.code == 2


async def test_onnx_runs_paraformers_encoder_like_pytorch(
    paraformer_dir: Path, speech_files: dict[str, Path], tmp_path: Path
) -> None:
    """Paraformer through `--runtime onnx`: its encoder (funasr's export form of it, masks from the lengths) in ONNX
    Runtime, CIF and decoder in PyTorch; the same transcripts as PyTorch, alone and batched."""
    clips = [speech_files[c] for c in ("short_hello.wav", "digits_a.wav", "digits_b.wav", "sentence_d.wav")]
    async with serve(model=str(paraformer_dir), cache_entries=0) as (_, client):
        pytorch = await _texts(client, clips, together=False)
    settings = {"runtime": "onnx", "onnx_cache_dir": str(tmp_path), "max_batch_size": 4, "max_wait_ms": 200}
    async with serve(model=str(paraformer_dir), cache_entries=0, **settings) as (app, client):
        ready = (await client.get("/readyz")).json()
        alone = await _texts(client, clips, together=False)
        together = await _texts(client, clips, together=True)
        assert app.state.asr.backend._onnx is not None
    assert ready["family"] == "paraformer" and ready["runtime"] == "onnx" and ready["runtime_fallback_reason"] is None
    assert any(pytorch) and alone == pytorch and together == alone
    assert sorted(p.name for p in tmp_path.rglob("*.onnx")) == ["model.onnx"]
