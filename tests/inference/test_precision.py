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

import dataclasses
from pathlib import Path
from typing import Any

import pytest
from asr_inference.backends.funasr_backend import BatchOutput, FunASRBackend
from asr_inference.backends.precision_gate import argmax_agreement, character_error_rate
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


async def _ready_state(model_dir: Path, precision: str, **settings: Any) -> tuple[dict, dict, str]:
    async with serve(model=str(model_dir), precision=precision, device="cpu", max_batch_size=4, **settings) as (
        _,
        client,
    ):
        ready = (await client.get("/readyz")).json()
        samples = await metric_samples(client)
        text = (await transcribe(client, Path(__file__).parents[1] / "data/speech/digits_a.wav")).json()["text"]
    return ready, samples, text


async def test_bf16_diverging_transcript_falls_back_to_fp32(close_call_dir: Path, caplog: pytest.LogCaptureFixture):
    ready, samples, text = await _ready_state(close_call_dir, "bf16")
    assert ready["requested_precision"] == "bf16"
    assert ready["precision"] == "fp32"
    assert "agree with fp32 on 0.00 % of the warm-up frames" in ready["precision_fallback_reason"]
    assert ready["precision_check"]["argmax_agreement"] == 0.0  # every frame's near tie flips under bf16
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


def _perturbed(monkeypatch: pytest.MonkeyPatch, flip_every: int, text_edit: bool) -> None:
    """A CPU stand-in for a reduced precision on real weights: the candidate is the fp32 output with the best
    token of every `flip_every`-th frame changed (nearly tied logits flipping) and, if asked, one character of one
    transcript changed — the gate's decision runs on it unchanged."""
    original = FunASRBackend._run

    def run(self: FunASRBackend, items: Any, options: Any, precision: str) -> BatchOutput:
        out = original(self, items, options, "fp32")
        if precision == "fp32":
            return out
        frames, k = [], 0
        for item in out.frames or []:
            ids = list(item.tolist())
            for j in range(len(ids)):
                k += 1
                if k % flip_every == 0:
                    ids[j] += 1
            frames.append(ids)
        results = list(out.results)
        if text_edit:
            longest = max(range(len(results)), key=lambda i: len(results[i].text))
            results[longest] = dataclasses.replace(results[longest], text=results[longest].text[:-1] + "#")
        return BatchOutput(results, out.finite, frames)

    monkeypatch.setattr(FunASRBackend, "_run", run)


async def test_rare_frame_flips_keep_the_reduced_precision(sensevoice_dir: Path, monkeypatch: pytest.MonkeyPatch):
    """Today's real models: a few nearly tied frames flip and one character changes. An exact-equality gate
    refused them all; 99.75 % agreement and a CER under 1 % keep bf16, and /readyz says how close it was."""
    _perturbed(monkeypatch, flip_every=400, text_edit=True)
    ready, samples, _ = await _ready_state(sensevoice_dir, "bf16", graph_mode="eager")
    assert ready["precision"] == "bf16" and ready["precision_fallback_reason"] is None
    check = ready["precision_check"]
    assert 0.997 <= check["argmax_agreement"] < 1.0
    assert 0 < check["cer"] <= 0.01
    assert check["failure"] is None and check["forced"] is False
    assert metric(samples, "asr_precision_fallback_total") == 0


async def test_frequent_frame_flips_fall_back_to_fp32(clear_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _perturbed(monkeypatch, flip_every=50, text_edit=False)  # 98 % agreement, identical transcripts
    ready, samples, _ = await _ready_state(clear_dir, "bf16", graph_mode="eager")
    assert ready["precision"] == "fp32"
    assert "at least 99.50 % needed" in ready["precision_fallback_reason"]
    assert ready["precision_check"]["argmax_agreement"] == pytest.approx(0.98, abs=0.002)
    assert metric(samples, "asr_precision_fallback_total") == 1


async def test_forced_precision_is_served_and_the_failed_check_reported(close_call_dir: Path) -> None:
    """asr-bench measures a precision's ceiling with `force_precision`: served as asked, the check's verdict kept."""
    ready, samples, text = await _ready_state(close_call_dir, "bf16", force_precision=True)
    assert ready["precision"] == "bf16" and ready["precision_fallback_reason"] is None
    assert ready["precision_check"]["forced"] is True
    assert "agree with fp32" in ready["precision_check"]["failure"]
    assert metric(samples, "asr_precision_fallback_total") == 0
    _, _, fp32_text = await _ready_state(close_call_dir, "fp32")
    assert text != fp32_text  # it really serves bf16's answer


def test_gate_measures() -> None:
    assert argmax_agreement([[1, 2, 3, 4]], [[1, 2, 0, 4]]) == 0.75
    assert argmax_agreement([[1, 2, 3]], [[1, 2, 3, 9]]) == 0.75  # an extra frame disagrees
    assert character_error_rate(["abcd", "ef"], ["abxd", "ef"]) == pytest.approx(1 / 6)
    assert character_error_rate([""], [""]) == 0.0 and character_error_rate([""], ["x"]) == 1.0


def test_nan_is_refused_whatever_the_agreement() -> None:
    from asr_inference.backends.precision_gate import judge

    verdict = judge(
        "fp16", finite=False, reference_texts=["a"], candidate_texts=["a"], reference_frames=[[1]],
        candidate_frames=[[1]], min_agreement=0.995, max_cer=0.01,
    )  # fmt: skip
    assert not verdict.keep and "NaN/inf" in (verdict.reason or "") and verdict.agreement == 1.0


async def test_nonfinite_batch_while_serving_is_rerun_in_fp32(clear_dir: Path, caplog: pytest.LogCaptureFixture):
    """bf16 passed the warm-up gate; then an input overflows it (here: token A's bias raised past bf16's largest
    finite value, 3.39e38, while fp32 still holds it). The batch is rerun in fp32 and counted, not served as NaN."""
    import torch

    clip = Path(__file__).parents[1] / "data/speech/digits_a.wav"
    async with serve(model=str(clear_dir), precision="bf16", device="cpu", max_batch_size=4, cache_entries=0) as (
        app,
        client,
    ):
        assert (await client.get("/readyz")).json()["precision"] == "bf16"
        before = await transcribe(client, clip)
        with torch.no_grad():
            app.state.asr.backend.model.ctc.ctc_lo.bias[A] = 3.40e38  # the traced graph shares the parameter
        after = await transcribe(client, clip)
        samples = await metric_samples(client)
    assert before.status_code == after.status_code == 200
    assert metric(samples, "asr_fp32_reruns_total") == 1
    assert after.json()["text"] == before.json()["text"]  # fp32 still decodes token A on every frame
    assert any("rerunning it in fp32" in r.getMessage() for r in caplog.records if r.levelname == "WARNING")
