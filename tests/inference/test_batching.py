"""Per-item results must equal running each item alone — through the real app, real funasr, tiny models."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from serving import metric, metric_samples, serve, transcribe

CLIPS = ["short_hello.wav", "digits_a.wav", "digits_b.wav", "command_c.wav", "sentence_d.wav", "sentence_e.wav"]


async def _batched_vs_single(model_dir: Path, speech_files: dict[str, Path]) -> None:
    clips = [speech_files[name] for name in CLIPS]
    # max_wait_ms long enough that a concurrent burst always lands in one batch; cache off so nothing is reused.
    async with serve(model=str(model_dir), max_batch_size=len(clips), max_wait_ms=1500, cache_entries=0) as (_, client):
        before = await metric_samples(client)
        batched = await asyncio.gather(*(transcribe(client, clip, response_format="verbose_json") for clip in clips))
        after = await metric_samples(client)
        # the burst really ran as one full batch (variable lengths, padded together)
        full = metric(after, "asr_batch_size_count") - metric(before, "asr_batch_size_count")
        assert full == 1, f"expected the burst in one batch, saw {full} batches"
        assert metric(after, "asr_batch_size_sum") - metric(before, "asr_batch_size_sum") == len(clips)
        singles = [await transcribe(client, clip, response_format="verbose_json") for clip in clips]
        after_singles = await metric_samples(client)
        assert metric(after_singles, "asr_batch_size_bucket", le="1.0") - metric(
            after, "asr_batch_size_bucket", le="1.0"
        ) == len(clips)
    for clip, b, s in zip(clips, batched, singles, strict=True):
        assert b.status_code == 200 and s.status_code == 200, (b.text, s.text)
        assert b.json()["text"] == s.json()["text"], f"{clip.name}: batched {b.json()['text']!r} != single"
        assert b.json()["segments"] == s.json()["segments"]
    texts = {b.json()["text"] for b in batched}
    assert len(texts) > 1, "different clips should give different (random-model) transcripts"


async def test_sensevoice_batched_equals_single(sensevoice_dir: Path, speech_files: dict[str, Path]) -> None:
    await _batched_vs_single(sensevoice_dir, speech_files)


async def test_paraformer_batched_equals_single(paraformer_dir: Path, speech_files: dict[str, Path]) -> None:
    await _batched_vs_single(paraformer_dir, speech_files)


async def test_funasr_nano_batched_equals_single(nano_dir: Path, speech_files: dict[str, Path]) -> None:
    await _batched_vs_single(nano_dir, speech_files)


def test_paraformer_padding_leaks_without_zeroing(paraformer_dir: Path, speech_files: dict[str, Path]) -> None:
    """The reason for the zeroing: without it, padded encoder frames change a short item's CIF alphas in a batch.
    Shows the equality test above is sensitive to the bug it guards against."""
    import numpy as np
    import soundfile as sf
    import torch
    from asr_inference.backends.funasr_backend import FunASRBackend
    from asr_inference.config import Settings

    backend = FunASRBackend(Settings(model=str(paraformer_dir), device="cpu"))
    backend.load()
    short, long_ = (sf.read(speech_files[n], dtype="float32")[0] for n in ("short_hello.wav", "longer_f.wav"))
    items = [backend.prepare(np.asarray(short)), backend.prepare(np.asarray(long_))]
    m = backend.model
    with torch.inference_mode():
        speech, lengths = backend.batch_features(items)
        enc, enc_lens = m.encode(speech, lengths)
        _, _, alphas_raw, _ = m.calc_predictor(enc, enc_lens)
        alone, alone_lens = m.encode(*backend.batch_features(items[:1]))
        _, _, alphas_alone, _ = m.calc_predictor(alone, alone_lens)
        valid = torch.arange(enc.size(1))[None, :] < enc_lens[:, None]
        _, _, alphas_zeroed, _ = m.calc_predictor(enc * valid.unsqueeze(-1), enc_lens)
    n = int(alone_lens[0])
    leak = (alphas_raw[0, :n] - alphas_alone[0, :n]).abs().max().item()
    fixed = (alphas_zeroed[0, :n] - alphas_alone[0, :n]).abs().max().item()
    assert leak > 1e-4, "padding should leak into the last frames' alphas when not zeroed"
    assert fixed < 1e-5


@pytest.mark.parametrize("family_dir", ["sensevoice_dir", "paraformer_dir"])
async def test_mixed_lengths_across_bursts_equal_single(
    family_dir: str, request: pytest.FixtureRequest, speech_files: dict[str, Path]
) -> None:
    """Batches split by max_batch_size (3 of 6 per batch) and sorted by length still give per-item results."""
    model_dir = request.getfixturevalue(family_dir)
    clips = [speech_files[name] for name in CLIPS]
    async with serve(model=str(model_dir), max_batch_size=3, max_wait_ms=1000, cache_entries=0) as (_, client):
        batched = await asyncio.gather(*(transcribe(client, c) for c in reversed(clips)))
        singles = [await transcribe(client, c) for c in reversed(clips)]
    assert [b.json()["text"] for b in batched] == [s.json()["text"] for s in singles]


def test_funasr_nano_runs_its_model_at_the_serving_precision(nano_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Fun-ASR-Nano's own inference is called (not AutoModel.generate, which resets torch's threads and empties the
    CUDA cache each call) with llm_dtype = the serving precision, so that the autocast it wraps its LLM in is ours,
    not an fp32 one that would switch ours off."""
    import numpy as np
    from asr_inference.backends import DecodeOptions
    from asr_inference.backends.funasr_backend import FunASRBackend
    from asr_inference.config import Settings

    backend = FunASRBackend(Settings(model=str(nano_dir), device="cpu"))
    backend.load()
    item = backend.prepare(np.zeros(16000, dtype=np.float32))
    seen: list[Any] = []
    real = backend.model.inference

    def spy(**kwargs: Any) -> Any:
        seen.append(kwargs["llm_dtype"])
        return real(**kwargs)

    def no_generate(**_: Any) -> Any:
        raise AssertionError("AutoModel.generate called")

    monkeypatch.setattr(backend.model, "inference", spy)
    monkeypatch.setattr(backend._am, "generate", no_generate)
    for precision in ("fp32", "bf16"):
        backend._run([item, item], [DecodeOptions()] * 2, precision)
    assert seen == ["fp32", "bf16"]
