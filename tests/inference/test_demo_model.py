"""The embedded demo model (inference/asr_inference/models/demo): it loads through funasr's normal path and
actually recognises speech it never trained on, both directly and through the HTTP server.

The held-out clips in tests/data/demo_heldout/ and samples/demo.wav are made by tools/demo_model/fixtures.py;
the voices, speeds and pitches in them never occur in the training corpus.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
from collections.abc import Sequence
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
DEMO_DIR = ROOT / "inference" / "asr_inference" / "models" / "demo"
HELDOUT = ROOT / "tests" / "data" / "demo_heldout"
SAMPLE_WAV = ROOT / "samples" / "demo.wav"
SAMPLE_TXT = ROOT / "samples" / "demo.txt"
MAX_WER = 0.10


def _demo_model_common():  # type: ignore[no-untyped-def]
    """tools/demo_model/common.py (scripts import it as `common`; stdlib only): the model card's WER helpers."""
    spec = importlib.util.spec_from_file_location("demo_model_common", ROOT / "tools" / "demo_model" / "common.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_common = _demo_model_common()
normalize = _common.normalize


def wer(pairs: Sequence[tuple[str, str]]) -> float:
    """Corpus word error rate over (reference, hypothesis) pairs, both normalised."""
    errors, words = _common.word_errors((normalize(r), normalize(h)) for r, h in pairs)
    return float(errors / words)


def test_wer_helper() -> None:
    assert wer([("one two three", "one two three")]) == 0.0
    assert wer([("one two three", "one too three four")]) == pytest.approx(2 / 3)
    assert wer([("yes no", ""), ("stop", "stop")]) == pytest.approx(2 / 3)
    assert normalize("<|en|>Hello, World!") == "en hello world"


def heldout_clips() -> dict[str, str]:
    transcripts: dict[str, str] = json.loads((HELDOUT / "transcripts.json").read_text())
    assert len(transcripts) >= 15
    for name in transcripts:
        assert (HELDOUT / name).is_file(), name
    return transcripts


def test_demo_model_dir_is_complete() -> None:
    import yaml

    for name in ("config.yaml", "model.pt", "bpe.model", "am.mvn", "configuration.json", "MODEL_CARD.md"):
        assert (DEMO_DIR / name).is_file(), f"{name} missing from {DEMO_DIR}"
    config = yaml.safe_load((DEMO_DIR / "config.yaml").read_text())
    assert config["model"] == "SenseVoiceSmall"
    assert config["frontend_conf"]["dither"] == 0.0
    metas = json.loads((DEMO_DIR / "configuration.json").read_text())["file_path_metas"]
    assert metas["init_param"] == "model.pt"
    assert metas["tokenizer_conf"]["bpemodel"] == "bpe.model"
    assert metas["frontend_conf"]["cmvn_file"] == "am.mvn"


def test_automodel_loads_demo_dir_and_transcribes_sample() -> None:
    """Plain funasr, no server: the directory loads completely and gives the recorded transcript."""
    import torch
    from funasr import AutoModel
    from funasr.utils.postprocess_utils import rich_transcription_postprocess

    model = AutoModel(model=str(DEMO_DIR), disable_update=True, device="cpu", disable_pbar=True)
    assert type(model.model).__name__ == "SenseVoiceSmall"
    # funasr only logs weights it could not load; check every one landed.
    saved = torch.load(DEMO_DIR / "model.pt", map_location="cpu")
    loaded = model.model.state_dict()
    assert set(saved) == set(loaded)
    assert all(torch.equal(loaded[k], saved[k]) for k in saved)

    result = model.generate(input=str(SAMPLE_WAV), language="auto", use_itn=False, ncpu=2)
    text = rich_transcription_postprocess(result[0]["text"])
    assert text == SAMPLE_TXT.read_text().strip()
    assert wer([("hello world one two three", text)]) <= 0.2


async def test_heldout_clips_through_http_server() -> None:
    """Every committed held-out clip through POST /v1/audio/transcriptions of the default (demo) server."""
    from asr_inference.app import create_app
    from asr_inference.config import Settings

    transcripts = heldout_clips()
    app = create_app(Settings(model=None, device="cpu", ncpu=2))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver", timeout=120) as client:
            async with asyncio.timeout(180):
                while (ready := await client.get("/readyz")).status_code != 200:
                    assert ready.status_code == 503 and ready.json().get("status") == "loading", ready.text
                    await asyncio.sleep(0.1)

            async def transcribe(name: str) -> str:
                data = (HELDOUT / name).read_bytes()
                response = await client.post(
                    "/v1/audio/transcriptions",
                    files={"file": (name, data, "audio/wav")},
                    data={"response_format": "json"},
                )
                assert response.status_code == 200, response.text
                return str(response.json()["text"])

            names = sorted(transcripts)
            hyps = await asyncio.gather(*(transcribe(n) for n in names))

    pairs = [(transcripts[n], h) for n, h in zip(names, hyps, strict=True)]
    score = wer(pairs)
    wrong = [(n, r, h) for n, (r, h) in zip(names, pairs, strict=True) if normalize(r) != normalize(h)]
    assert score <= MAX_WER, f"held-out WER {score:.1%} > {MAX_WER:.0%}; errors: {wrong}"
