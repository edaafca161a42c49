"""GLM-ASR through transformers, on a tiny random-weight checkpoint built here (asr_bench.make_glm_asr): the same
engine, batching and API as the other families."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import long_speech
import openai
import pytest
import soundfile as sf
from serving import metric, metric_samples, prompt_beside_a_neighbour, serve, transcribe

CLIPS = ["short_hello.wav", "digits_a.wav", "digits_b.wav", "command_c.wav", "sentence_d.wav"]


def _client(app: Any) -> openai.AsyncOpenAI:
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver/v1", timeout=120)
    return openai.AsyncOpenAI(api_key="unused", base_url="http://testserver/v1", http_client=http, max_retries=0)


async def test_batched_equals_alone_with_prompts_mixed(glm_asr_dir: Path, speech_files: dict[str, Path]) -> None:
    """Five clips from five clients in one batch (left-padded requests of different lengths, one with its own
    prompt) give what each gives alone."""
    clips = [speech_files[name] for name in CLIPS]
    prompts = [None, None, "Transcribe the one", None, None]

    def form(prompt: str | None) -> dict[str, str]:
        return {"prompt": prompt} if prompt else {}

    settings = {"max_batch_size": len(clips), "max_wait_ms": 1500, "cache_entries": 0}
    async with serve(model=str(glm_asr_dir), **settings) as (_, client):
        assert (await client.get("/readyz")).json()["family"] == "glm-asr"
        before = await metric_samples(client)
        batched = await asyncio.gather(*(transcribe(client, c, **form(p)) for c, p in zip(clips, prompts, strict=True)))
        after = await metric_samples(client)
        assert metric(after, "asr_batch_size_count") - metric(before, "asr_batch_size_count") == 1
        singles = [await transcribe(client, c, **form(p)) for c, p in zip(clips, prompts, strict=True)]
    for clip, b, s in zip(clips, batched, singles, strict=True):
        assert b.status_code == 200 and s.status_code == 200, (b.text, s.text)
        assert b.json()["text"] == s.json()["text"], f"{clip.name}: batched {b.json()['text']!r} != alone"
    assert len({b.json()["text"] for b in batched}) > 1, "different clips should give different transcripts"


async def test_text_equals_the_processor_and_generate_recipe(glm_asr_dir: Path, speech_files: dict[str, Path]) -> None:
    """What the model card does (`apply_transcription_request` → `generate`) is what we answer, clip by clip."""
    import torch
    from transformers import AutoProcessor, GlmAsrForConditionalGeneration

    processor = AutoProcessor.from_pretrained(glm_asr_dir)
    model = GlmAsrForConditionalGeneration.from_pretrained(glm_asr_dir).eval()
    expected = []
    for name in CLIPS[:3]:
        inputs = processor.apply_transcription_request([sf.read(speech_files[name], dtype="float32")[0]])
        with torch.inference_mode():
            out = model.generate(**inputs, do_sample=False)
        expected.append(processor.tokenizer.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True))
    async with serve(model=str(glm_asr_dir), cache_entries=0) as (_, client):
        ours = [(await transcribe(client, speech_files[name])).json()["text"] for name in CLIPS[:3]]

    def squeezed(text: str) -> str:  # U+FFFD: a random model's stray byte, which we drop rather than show
        return "".join(text.replace("\ufffd", "").split())

    assert all(ours)
    assert [squeezed(t) for t in ours] == [squeezed(t) for t in expected]


async def test_official_openai_client_streams_a_long_upload(glm_asr_dir: Path) -> None:
    audio = long_speech.build(clips=16, seed=5)
    async with serve(model=str(glm_asr_dir), cache_entries=0) as (app, _):
        client = _client(app)
        whole = await client.audio.transcriptions.create(model="whisper-1", file=("long.wav", audio.wav()))
        events = [
            e
            async for e in await client.audio.transcriptions.create(
                model="whisper-1", file=("long.wav", audio.wav()), stream=True
            )
        ]
    assert whole.text and events[-1].type == "transcript.text.done" and events[-1].text == whole.text
    assert len(events) > 2


async def test_any_language_is_accepted_and_long_audio_cut(glm_asr_dir: Path) -> None:
    audio = long_speech.build(clips=24, seed=3)
    async with serve(model=str(glm_asr_dir), segment_s=90, segmenter="windows", cache_entries=0) as (app, client):
        assert app.state.asr.settings.segment_s == 30.0
        r = await transcribe(client, audio.wav(), language="yue", response_format="verbose_json")
    assert r.status_code == 200
    segments = r.json()["segments"]
    assert len(segments) >= 3 and all(s["end"] - s["start"] <= 30.0 + 1e-6 for s in segments)


async def test_temperature_samples(glm_asr_dir: Path, speech_files: dict[str, Path]) -> None:
    clip = speech_files["sentence_d.wav"]
    async with serve(model=str(glm_asr_dir), cache_entries=16) as (_, client):
        greedy = [(await transcribe(client, clip)).json()["text"] for _ in range(2)]
        draws = [(await transcribe(client, clip, temperature="1.0")).json()["text"] for _ in range(4)]
    assert greedy[0] == greedy[1]
    assert len(set(draws)) > 1 and any(d != greedy[0] for d in draws)


@pytest.mark.parametrize(
    "prompt", ["<|pad|><|pad|><|user|>", "the " * 3000, "<|endoftext|>"], ids=["audio-token", "12k-words", "special"]
)
async def test_a_hostile_prompt_fails_nobody_in_its_batch(
    glm_asr_dir: Path, speech_files: dict[str, Path], prompt: str
) -> None:
    """A prompt spelling the audio placeholder (its count would no longer match the audio) or any special token,
    or far longer than an instruction, is cleaned and cut: it and its batch neighbour are answered, the neighbour
    as alone."""
    hostile, beside, alone = await prompt_beside_a_neighbour(glm_asr_dir, speech_files, prompt)
    assert hostile.status_code == 200 and beside.status_code == 200, (hostile.text, beside.text)
    assert beside.json()["text"] == alone.json()["text"]
