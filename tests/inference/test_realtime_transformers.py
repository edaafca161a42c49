"""Realtime sessions (`/v1/realtime?intent=transcription`) with the transformers families: an utterance streamed
by a client gets the text an upload of the same audio gets (greedy decoding, batched == alone), while uploads of
other clients share its batches."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf
from realtime_client import live_server, stream_file
from serving import transcribe

CLIP = "sentence_d.wav"


@pytest.mark.parametrize("family_dir", ["whisper_dir", "glm_asr_dir"])
async def test_a_streamed_utterance_gets_its_uploads_text(
    family_dir: str, request: pytest.FixtureRequest, speech_files: dict[str, Path]
) -> None:
    model_dir: Path = request.getfixturevalue(family_dir)
    samples, rate = sf.read(speech_files[CLIP], dtype="float32")
    assert rate == 16000  # sent as 16-kHz PCM: the session's audio is the upload's, sample for sample
    others = [p for name, p in sorted(speech_files.items()) if name != CLIP][:3]
    async with live_server(str(model_dir), cache_entries=0, max_batch_size=4, max_wait_ms=200) as (app, url):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t", timeout=120) as client:
            upload = (await transcribe(client, speech_files[CLIP])).json()["text"]
            streamed, *neighbours = await asyncio.gather(
                stream_file(url, np.asarray(samples), 16000, speedup=50.0, turn_detection=None),
                *(transcribe(client, p) for p in others),
            )
    kinds = [e["type"] for e in streamed]
    assert "error" not in kinds, [e for e in streamed if e["type"] == "error"]
    done = [e for e in streamed if e["type"] == "conversation.item.input_audio_transcription.completed"]
    assert len(done) == 1
    assert done[0]["transcript"] == upload and upload.strip()
    assert all(r.status_code == 200 for r in neighbours)
