"""Reduced precision is only served when it matches fp32 on the warm-up batch.

The models here are the tiny SenseVoice with its CTC output layer rewritten so that the decision is known in
advance: weights zeroed, so every frame's logits are exactly the biases.
- "close call": tokens A < B with biases 5.0 and 5.001 — fp32 picks B; bf16 (8-bit mantissa, spacing 1/32 at 5)
  rounds both to 5.0 and argmax takes the first, A: the transcripts diverge.
- "bf16 overflow": token A's bias 3.40e38 is finite in fp32 but above bf16's largest finite value (3.39e38): bf16
  turns it into inf and log-softmax into NaN.
- "clear winner": token A's bias 8.0, everything else -10: every precision agrees.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from serving import metric, metric_samples, serve, transcribe
from tiny_models import derive_sensevoice

A, B = 100, 101  # ordinary word pieces of the tiny vocabulary (ids above the special tags)


@pytest.fixture(scope="module")
def close_call_dir(sensevoice_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return derive_sensevoice(sensevoice_dir, tmp_path_factory.mktemp("p") / "close", {A: 5.0, B: 5.001})


@pytest.fixture(scope="module")
def overflow_dir(sensevoice_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return derive_sensevoice(sensevoice_dir, tmp_path_factory.mktemp("p") / "overflow", {A: 3.40e38})


@pytest.fixture(scope="module")
def clear_dir(sensevoice_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return derive_sensevoice(sensevoice_dir, tmp_path_factory.mktemp("p") / "clear", {A: 8.0})


async def _ready_state(model_dir: Path, precision: str) -> tuple[dict, dict, str]:
    async with serve(model=str(model_dir), precision=precision, device="cpu", max_batch_size=4) as (_, client):
        ready = (await client.get("/readyz")).json()
        samples = await metric_samples(client)
        text = (await transcribe(client, Path(__file__).parents[1] / "data/speech/digits_a.wav")).json()["text"]
    return ready, samples, text


async def test_bf16_diverging_transcript_falls_back_to_fp32(close_call_dir: Path, caplog: pytest.LogCaptureFixture):
    ready, samples, text = await _ready_state(close_call_dir, "bf16")
    assert ready["requested_precision"] == "bf16"
    assert ready["precision"] == "fp32"
    assert "differ from fp32" in ready["precision_fallback_reason"]
    assert metric(samples, "asr_precision_fallback_total") == 1
    assert any("serving fp32" in r.getMessage() for r in caplog.records if r.levelname == "WARNING")
    _, fp32_samples, fp32_text = await _ready_state(close_call_dir, "fp32")
    assert text == fp32_text  # what is served is exactly the fp32 answer
    assert metric(fp32_samples, "asr_precision_fallback_total") == 0


async def test_bf16_nan_falls_back_to_fp32(overflow_dir: Path) -> None:
    ready, samples, text = await _ready_state(overflow_dir, "bf16")
    assert ready["precision"] == "fp32"
    assert "NaN/inf" in ready["precision_fallback_reason"]
    assert metric(samples, "asr_precision_fallback_total") == 1
    assert text  # fp32 is finite and decodes token A


async def test_bf16_kept_when_it_matches_fp32(clear_dir: Path) -> None:
    ready, samples, text = await _ready_state(clear_dir, "bf16")
    assert ready["precision"] == "bf16"
    assert ready["precision_fallback_reason"] is None
    assert metric(samples, "asr_precision_fallback_total") == 0
    assert text
    assert ready["graph_mode"] == "trace"  # the bf16 forward runs as a graph traced under autocast


async def test_fp16_on_cpu_serves_fp32_with_a_warning(sensevoice_dir: Path) -> None:
    ready, samples, _ = await _ready_state(sensevoice_dir, "fp16")
    assert ready["device"] == "cpu" and ready["precision"] == "fp32"
    assert "not supported on CPU" in ready["precision_fallback_reason"]
    assert metric(samples, "asr_precision_fallback_total") == 1


def test_funasr_fp16_flag_breaks_sensevoice(sensevoice_dir: Path) -> None:
    """Why we use autocast: funasr's own AutoModel(bf16=True) casts the weights but not the features."""
    import numpy as np
    from funasr import AutoModel

    model = AutoModel(model=str(sensevoice_dir), disable_update=True, device="cpu", disable_pbar=True, bf16=True)
    with pytest.raises(RuntimeError, match="dtype"):
        model.generate(input=[np.random.default_rng(0).standard_normal(16000).astype(np.float32) * 0.1])
