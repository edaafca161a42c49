"""Whisper through transformers, on a tiny random-weight checkpoint built here (asr_bench.make_whisper): the same
engine, batching and API as the funasr families."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import long_speech
import numpy as np
import openai
import pytest
import soundfile as sf
from serving import metric, metric_samples, prompt_beside_a_neighbour, serve, transcribe

WORDS = {"timestamp_granularities[]": "word"}
CLIPS = ["short_hello.wav", "digits_a.wav", "digits_b.wav", "command_c.wav", "sentence_d.wav", "sentence_e.wav"]


def _client(app: Any) -> openai.AsyncOpenAI:
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver/v1", timeout=120)
    return openai.AsyncOpenAI(api_key="unused", base_url="http://testserver/v1", http_client=http, max_retries=0)


async def test_family_is_detected_and_reported(whisper_dir: Path) -> None:
    async with serve(model=str(whisper_dir), device="cpu", max_batch_size=2) as (_, client):
        ready = (await client.get("/readyz")).json()
    assert ready["family"] == "whisper"
    assert ready["precision"] == "fp32"


async def test_batched_equals_alone_with_languages_mixed(whisper_dir: Path, speech_files: dict[str, Path]) -> None:
    """Six clips from six clients in one batch (auto-detected and forced languages side by side) give what each
    gives alone."""
    clips = [speech_files[name] for name in CLIPS]
    languages = [None, "en", None, "de", "en", None]
    async with serve(model=str(whisper_dir), max_batch_size=len(clips), max_wait_ms=1500, cache_entries=0) as (
        _,
        client,
    ):

        def form(lang: str | None) -> dict[str, str]:
            return {"response_format": "verbose_json", **WORDS, **({"language": lang} if lang else {})}

        before = await metric_samples(client)
        batched = await asyncio.gather(
            *(transcribe(client, c, **form(lang)) for c, lang in zip(clips, languages, strict=True))
        )
        after = await metric_samples(client)
        assert metric(after, "asr_batch_size_count") - metric(before, "asr_batch_size_count") == 1
        singles = [await transcribe(client, c, **form(lang)) for c, lang in zip(clips, languages, strict=True)]
    for clip, lang, b, s in zip(clips, languages, batched, singles, strict=True):
        assert b.status_code == 200 and s.status_code == 200, (b.text, s.text)
        assert b.json()["text"] == s.json()["text"], f"{clip.name}: batched {b.json()['text']!r} != alone"
        assert b.json()["words"] == s.json()["words"]
        if lang is not None:
            assert b.json()["language"] == lang
    assert len({b.json()["text"] for b in batched}) > 1, "different clips should give different transcripts"


async def test_words_carry_times_from_the_alignment_heads(whisper_dir: Path, speech_files: dict[str, Path]) -> None:
    path = speech_files["sentence_d.wav"]
    async with serve(model=str(whisper_dir)) as (_, client):
        out = (await transcribe(client, path, response_format="verbose_json", language="en", **WORDS)).json()
    duration = sf.info(path).duration
    assert out["text"] and out["words"]
    assert "".join(w["word"] for w in out["words"]) == out["text"].replace(" ", "")
    starts = [w["start"] for w in out["words"]]
    assert starts == sorted(starts) and all(0 <= w["start"] <= w["end"] <= 30.0 for w in out["words"])
    assert out["duration"] == pytest.approx(duration, abs=0.002)


async def test_audio_longer_than_the_window_is_cut_not_truncated(whisper_dir: Path) -> None:
    """Whisper takes 30 s per item: a 70-s upload is cut (segment_s is clamped to 30 whatever was asked) and every
    part is transcribed; windows overlap since token times exist."""
    audio = long_speech.build(clips=24, seed=3)
    assert audio.duration_s > 60
    async with serve(model=str(whisper_dir), segment_s=120, segmenter="windows", cache_entries=0) as (app, client):
        assert app.state.asr.settings.segment_s == 30.0
        out = (await transcribe(client, audio.wav(), response_format="verbose_json", **WORDS)).json()
    assert len(out["segments"]) >= 3
    assert all(s["end"] - s["start"] <= 30.0 + 1e-6 for s in out["segments"])
    assert out["segments"][-1]["end"] == pytest.approx(audio.duration_s, abs=0.01)
    assert out["words"] and out["words"][-1]["start"] > 30.0  # the words of later windows are in the timeline


async def test_official_openai_client_plain_and_streamed(whisper_dir: Path, speech_files: dict[str, Path]) -> None:
    audio = long_speech.build(clips=16, seed=5)
    async with serve(model=str(whisper_dir), cache_entries=0, served_model_name="whisper-tiny") as (app, _):
        client = _client(app)
        plain = await client.audio.transcriptions.create(
            model="whisper-1", file=speech_files["digits_b.wav"].open("rb"), language="en"
        )
        whole = await client.audio.transcriptions.create(model="whisper-tiny", file=("long.wav", audio.wav()))
        events = [
            e
            async for e in await client.audio.transcriptions.create(
                model="whisper-tiny", file=("long.wav", audio.wav()), stream=True
            )
        ]
    assert plain.text
    assert events[-1].type == "transcript.text.done" and events[-1].text == whole.text
    assert len(events) > 2 and "".join(e.delta for e in events[:-1]) == whole.text


async def test_unknown_language_is_refused(whisper_dir: Path, speech_files: dict[str, Path]) -> None:
    async with serve(model=str(whisper_dir)) as (_, client):
        r = await transcribe(client, speech_files["digits_a.wav"], language="xx")
    assert r.status_code == 400
    assert "not supported by this model" in r.json()["error"]["message"]


async def test_prompt_changes_nothing_about_batch_neighbours(whisper_dir: Path, speech_files: dict[str, Path]) -> None:
    """A prompt goes to generate once per call: items with and without one are decoded in separate groups, and
    the item without a prompt reads the same as it does alone."""
    clip = speech_files["digits_a.wav"]
    async with serve(model=str(whisper_dir), max_batch_size=2, max_wait_ms=1500, cache_entries=0) as (_, client):
        together = await asyncio.gather(transcribe(client, clip), transcribe(client, clip, prompt="the one"))
        alone = await transcribe(client, clip)
    assert together[0].status_code == together[1].status_code == 200
    assert together[0].json()["text"] == alone.json()["text"]


def test_pieces_keep_multibyte_characters_whole(whisper_dir: Path) -> None:
    from asr_inference.backends.whisper_backend import WhisperBackend
    from transformers import WhisperTokenizer

    tokenizer = WhisperTokenizer.from_pretrained(whisper_dir)
    text = " the 你好 one"
    ids = tokenizer.encode(text, add_special_tokens=False)
    pieces = WhisperBackend._pieces(ids, tokenizer)
    assert len(pieces) == len(ids)
    assert "".join(pieces).replace("\u2581", " ") == text
    assert "\ufffd" not in "".join(pieces)
    assert any(p == "" for p in pieces)  # a byte-level token that ends inside 你 or 好


def test_an_item_over_the_window_is_refused_not_truncated(whisper_dir: Path) -> None:
    from asr_inference.backends.whisper_backend import WhisperBackend
    from asr_inference.config import Settings

    backend = WhisperBackend(Settings(model=str(whisper_dir), device="cpu"))
    backend.load()
    assert backend.prepare(np.zeros(16000 * 30, dtype=np.float32)).length == 3000
    with pytest.raises(ValueError, match="at most 30 s"):
        backend.prepare(np.zeros(16000 * 31, dtype=np.float32))


def test_the_encoder_runs_once_per_batch_with_languages_detected(
    whisper_dir: Path, speech_files: dict[str, Path]
) -> None:
    """Detecting the language reuses the batch's encoder output (generate alone would encode a second time)."""
    from asr_inference.backends.base import DecodeOptions
    from asr_inference.backends.whisper_backend import WhisperBackend
    from asr_inference.config import Settings

    backend = WhisperBackend(Settings(model=str(whisper_dir), device="cpu"))
    backend.load()
    encoder = backend.model.model.encoder
    calls = []
    original = encoder.forward

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return original(*args, **kwargs)

    encoder.forward = counted
    items = [backend.prepare(sf.read(speech_files[n], dtype="float32")[0]) for n in CLIPS[:3]]
    results = backend.transcribe_batch(items, [DecodeOptions(), DecodeOptions(language="en"), DecodeOptions()])
    assert len(calls) == 1
    assert results[1].language == "en" and all(r.language in backend.languages for r in results)


async def test_text_equals_the_models_own_generate(whisper_dir: Path, speech_files: dict[str, Path]) -> None:
    """Our encoder-once, detect-then-generate path gives what `model.generate` gives on the processor's features
    (language detected inside generate), clip by clip."""
    import torch
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    processor = WhisperProcessor.from_pretrained(whisper_dir)
    model = WhisperForConditionalGeneration.from_pretrained(whisper_dir).eval()
    expected = []
    for name in CLIPS:
        audio = sf.read(speech_files[name], dtype="float32")[0]
        features = processor.feature_extractor(audio, sampling_rate=16000, return_tensors="pt")
        with torch.inference_mode():
            ids = model.generate(features.input_features, task="transcribe")[0]
        expected.append(processor.tokenizer.decode(ids, skip_special_tokens=True))
    async with serve(model=str(whisper_dir), cache_entries=0) as (_, client):
        ours = [(await transcribe(client, speech_files[name])).json()["text"] for name in CLIPS]

    def squeezed(text: str) -> str:  # U+FFFD: a random model's stray byte, which we drop rather than show
        return "".join(text.replace("\ufffd", "").split())

    assert [squeezed(t) for t in ours] == [squeezed(t) for t in expected]


async def test_bf16_goes_through_the_warm_up_gate(whisper_dir: Path) -> None:
    """A reduced precision is served only with the gate's verdict (CER against fp32's warm-up transcripts)."""
    async with serve(model=str(whisper_dir), device="cpu", precision="bf16", max_batch_size=2) as (_, client):
        ready = (await client.get("/readyz")).json()
    assert ready["precision"] in ("bf16", "fp32")
    assert ready["precision_check"]["cer"] is not None
    if ready["precision"] == "fp32":
        assert ready["precision_fallback_reason"]


async def test_subtitles_as_for_the_other_families(whisper_dir: Path, speech_files: dict[str, Path]) -> None:
    async with serve(model=str(whisper_dir)) as (_, client):
        srt = (await transcribe(client, speech_files["sentence_d.wav"], response_format="srt")).text
        vtt = (await transcribe(client, speech_files["sentence_d.wav"], response_format="vtt")).text
    assert srt.startswith("1\n00:00:00,000 --> ") and vtt.startswith("WEBVTT")


async def test_temperature_samples_uncached_and_leaves_greedy_neighbours_alone(
    whisper_dir: Path, speech_files: dict[str, Path]
) -> None:
    """temperature > 0 samples (draws differ; none is served from the result cache), in its own generate call:
    a greedy request batched beside it reads as it does alone."""
    clip = speech_files["sentence_d.wav"]
    async with serve(model=str(whisper_dir), max_batch_size=2, max_wait_ms=1500, cache_entries=16) as (_, client):
        greedy = (await transcribe(client, clip, language="en")).json()["text"]
        sampled, beside = await asyncio.gather(
            transcribe(client, clip, language="en", temperature="1.0"),
            transcribe(client, speech_files["digits_a.wav"], language="en"),
        )
        draws = [(await transcribe(client, clip, language="en", temperature="1.0")).json()["text"] for _ in range(4)]
        beside_alone = await transcribe(client, speech_files["digits_a.wav"], language="en")
    assert sampled.status_code == beside.status_code == 200
    assert len({*draws, sampled.json()["text"]}) > 1 and any(d != greedy for d in draws)
    assert beside.json()["text"] == beside_alone.json()["text"]


HOSTILE_PROMPTS = ["<|endoftext|><|en|><|0.00|>", "the " * 3000, "<|startofprev|>"]


@pytest.mark.parametrize("prompt", HOSTILE_PROMPTS, ids=["special-tokens", "12k-words", "only-special"])
async def test_a_hostile_prompt_fails_nobody_in_its_batch(
    whisper_dir: Path, speech_files: dict[str, Path], prompt: str
) -> None:
    """A prompt spelling special tokens (transformers' get_prompt_ids raises on it) or far longer than the decoder's
    context is text, cut to its last 223 tokens: it and its batch neighbour are answered, the neighbour as alone."""
    hostile, beside, alone = await prompt_beside_a_neighbour(whisper_dir, speech_files, prompt)
    assert hostile.status_code == 200 and beside.status_code == 200, (hostile.text, beside.text)
    assert beside.json()["text"] == alone.json()["text"]
