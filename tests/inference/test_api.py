"""HTTP surface: health, readiness, models, the OpenAI transcription API and its response formats."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import httpx
import openai
import pytest
import soundfile as sf
from serving import serve, transcribe, wait_until_ready


async def test_readyz_is_503_until_warm_then_reports_model(sensevoice_dir: Path) -> None:
    async with serve(wait_ready=False, model=str(sensevoice_dir), max_batch_size=4) as (app, client):
        early = await client.get("/readyz")
        assert early.status_code == 503
        assert early.json()["status"] == "loading"
        assert (await client.get("/healthz")).status_code == 200  # alive while loading
        refused = await transcribe(client, b"RIFF....")
        assert refused.status_code == 503 and refused.json()["error"]["code"] == "not_ready"
        await wait_until_ready(app)
        ready = await client.get("/readyz")
    assert ready.status_code == 200
    body = ready.json()
    assert body["model"] == "sensevoice"
    assert body["family"] == "sensevoice"
    assert body["device"] == "cpu"
    assert body["precision"] == "fp32"
    assert body["precision_fallback_reason"] is None
    assert body["tf32"] is None  # a CUDA setting: not applicable on CPU


async def test_warmup_runs_a_full_batch_through_the_whole_path(sensevoice_dir: Path) -> None:
    async with serve(model=str(sensevoice_dir), max_batch_size=5, max_wait_ms=200) as (_, client):
        text = (await client.get("/metrics")).text
    # the warm-up's full batch went through decode, prepare, the queue, and features + one forward of
    # max_batch_size items (the precision gate's fp32 reference batch makes the features a second time)
    assert 'asr_batch_size_bucket{le="4.0"} 0.0' in text
    assert 'asr_batch_size_bucket{le="8.0"} 1.0' in text
    assert 'asr_stage_duration_seconds_count{stage="decode"} 5.0' in text
    assert 'asr_stage_duration_seconds_count{stage="prepare"} 5.0' in text
    assert 'asr_stage_duration_seconds_count{stage="inference"} 1.0' in text
    features = re.search(r'asr_stage_duration_seconds_count\{stage="features"\} (\S+)', text)
    assert features is not None and float(features.group(1)) >= 1
    assert "asr_model_ready 1.0" in text


async def test_any_model_name_is_served_and_every_alias_listed(
    sensevoice_dir: Path, speech_files: dict[str, Path]
) -> None:
    """OpenAI clients send `model="whisper-1"` (the SDK's examples, Open WebUI, LiteLLM): a one-model server answers
    it and reports its own id; /v1/models lists every alias of --served-model-name."""
    async with serve(model=str(sensevoice_dir), served_model_name="sv-tiny, whisper-1") as (_, client):
        models = (await client.get("/v1/models")).json()
        whisper = await transcribe(
            client, speech_files["digits_a.wav"], model="whisper-1", response_format="verbose_json"
        )
        other = await transcribe(client, speech_files["digits_a.wav"], model="gpt-4o-transcribe")
        right = await transcribe(client, speech_files["digits_a.wav"], model="sv-tiny")
    assert [m["id"] for m in models["data"]] == ["sv-tiny", "whisper-1"]
    assert whisper.status_code == 200 and whisper.json()["model"] == "sv-tiny"
    assert other.status_code == 200 and other.json()["text"] == right.json()["text"]


async def test_strict_model_name_refuses_other_names(sensevoice_dir: Path, speech_files: dict[str, Path]) -> None:
    async with serve(model=str(sensevoice_dir), served_model_name="sv-tiny,whisper-1", strict_model_name=True) as (
        _,
        client,
    ):
        wrong = await transcribe(client, speech_files["digits_a.wav"], model="gpt-4o-transcribe")
        alias = await transcribe(client, speech_files["digits_a.wav"], model="whisper-1")
    assert wrong.status_code == 404 and wrong.json()["error"]["code"] == "model_not_found"
    assert "sv-tiny, whisper-1" in wrong.json()["error"]["message"]
    assert alias.status_code == 200


async def test_response_formats(sensevoice_dir: Path, speech_files: dict[str, Path]) -> None:
    clip = speech_files["sentence_d.wav"]
    async with serve(model=str(sensevoice_dir)) as (_, client):
        res = {fmt: await transcribe(client, clip, response_format=fmt) for fmt in ("json", "text", "verbose_json")}
        srt = await transcribe(client, clip, response_format="srt")
        vtt = await transcribe(client, clip, response_format="vtt")
        bad = await transcribe(client, clip, response_format="xml")
    text = res["json"].json()["text"]
    assert text and res["text"].text == text and res["text"].headers["content-type"].startswith("text/plain")
    verbose = res["verbose_json"].json()
    assert verbose["text"] == text
    assert verbose["duration"] == pytest.approx(sf.info(clip).duration, abs=0.002)
    assert set(verbose) >= {"duration", "language", "text", "segments"}
    seg = verbose["segments"][0]
    assert (seg["id"], seg["start"], seg["text"]) == (0, 0.0, text)
    assert seg["end"] == pytest.approx(verbose["duration"], abs=0.01)
    assert srt.text.startswith("1\n00:00:00,000 --> 00:00:02,65") and text in srt.text
    assert vtt.text.startswith("WEBVTT\n\n00:00:00.000 --> 00:00:02.65") and text in vtt.text
    assert bad.status_code == 400 and bad.json()["error"]["type"] == "invalid_request_error"


async def test_rich_tags_never_reach_the_text(sensevoice_dir: Path, speech_files: dict[str, Path]) -> None:
    """The random model emits SenseVoice tags (<|nospeech|>, <|en|>, ...) in and before the speech region."""
    async with serve(model=str(sensevoice_dir), max_batch_size=8) as (_, client):
        results = await asyncio.gather(
            *(transcribe(client, p, response_format="verbose_json") for p in speech_files.values())
        )
    bodies = [r.json() for r in results if r.status_code == 200]
    assert len(bodies) == len(speech_files)
    for body in bodies:
        assert "<|" not in body["text"] and "|>" not in body["text"]
        for seg in body["segments"]:
            assert "<|" not in seg["text"]
            assert set(seg) >= {"emotion", "event"}


async def test_language_is_validated_against_the_model(sensevoice_dir: Path, speech_files: dict[str, Path]) -> None:
    async with serve(model=str(sensevoice_dir)) as (_, client):
        ok = await transcribe(client, speech_files["digits_a.wav"], language="en", response_format="verbose_json")
        bad = await transcribe(client, speech_files["digits_a.wav"], language="klingon")
    assert ok.status_code == 200
    assert bad.status_code == 400 and "klingon" in bad.json()["error"]["message"]


async def test_word_timestamps(sensevoice_dir: Path, speech_files: dict[str, Path]) -> None:
    async with serve(model=str(sensevoice_dir)) as (_, client):
        r = await client.post(
            "/v1/audio/transcriptions",
            files={"file": ("a.wav", speech_files["sentence_e.wav"].read_bytes())},
            data={"response_format": "verbose_json", "timestamp_granularities[]": ["word", "segment"]},
        )
    body = r.json()
    words = body["words"]
    assert " ".join(w["word"] for w in words) == body["text"]
    starts = [w["start"] for w in words]
    assert starts == sorted(starts) and all(w["end"] > w["start"] for w in words)
    assert words[-1]["end"] <= body["duration"] + 0.1


async def test_api_key(sensevoice_dir: Path, speech_files: dict[str, Path]) -> None:
    async with serve(model=str(sensevoice_dir), api_key="s3cret") as (_, client):
        anon = await transcribe(client, speech_files["digits_a.wav"])
        wrong = await client.get("/v1/models", headers={"Authorization": "Bearer nope"})
        good = await client.get("/v1/models", headers={"Authorization": "Bearer s3cret"})
        open_paths = [(await client.get(p)).status_code for p in ("/healthz", "/readyz", "/metrics")]
    assert anon.status_code == 401 and anon.json()["error"]["type"] == "authentication_error"
    assert anon.headers["www-authenticate"] == "Bearer"
    assert wrong.status_code == 401 and good.status_code == 200
    assert open_paths == [200, 200, 200]


async def test_official_openai_client(sensevoice_dir: Path, speech_files: dict[str, Path]) -> None:
    async with serve(model=str(sensevoice_dir), api_key="k-123", served_model_name="sensevoice-tiny") as (app, _):
        http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")
        client = openai.AsyncOpenAI(api_key="k-123", base_url="http://testserver/v1", http_client=http)
        models = await client.models.list()
        plain = await client.audio.transcriptions.create(
            model="sensevoice-tiny", file=speech_files["digits_b.wav"].open("rb")
        )
        verbose = await client.audio.transcriptions.create(
            model="sensevoice-tiny",
            file=speech_files["digits_b.wav"].open("rb"),
            response_format="verbose_json",
            timestamp_granularities=["segment", "word"],
        )
        text_only = await client.audio.transcriptions.create(
            model="sensevoice-tiny", file=speech_files["digits_b.wav"].open("rb"), response_format="text"
        )
        # unchanged client code written for OpenAI: model="whisper-1" is answered by this server
        whisper = await client.audio.transcriptions.create(
            model="whisper-1", file=speech_files["digits_b.wav"].open("rb")
        )
        await http.aclose()
    assert [m.id for m in models.data] == ["sensevoice-tiny"]
    assert plain.text and verbose.text == plain.text and text_only.strip() == plain.text
    assert verbose.duration == pytest.approx(sf.info(speech_files["digits_b.wav"]).duration, abs=0.002)
    assert verbose.segments and verbose.segments[0].text == plain.text
    assert verbose.words and verbose.words[0].start >= 0
    assert whisper.text == plain.text
