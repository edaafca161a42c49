"""The transformers-pipeline peer of `asr-bench` (bench/asr_bench/hf_peer.py) on a tiny random-weight Whisper: it
answers over the peer's HTTP routes, one transcript per upload. (Its text is not compared with ours: the pipeline
pads short audio in log-mel space, which a random model's near-tied logits notice; `tests/inference/test_whisper.py`
checks our text against the model's own `generate`.)"""

from __future__ import annotations

from pathlib import Path

from aiohttp.test_utils import TestClient, TestServer
from asr_bench import hf_peer

CLIPS = ["digits_a.wav", "sentence_d.wav"]


async def test_pipeline_peer_transcribes_over_http(whisper_dir: Path, speech_files: dict[str, Path]) -> None:
    peer = hf_peer.Peer(whisper_dir, ncpu=1)
    async with TestClient(TestServer(hf_peer.app(peer))) as client:
        assert (await client.get("/health")).status == 200
        texts = []
        for name in CLIPS:
            response = await client.post("/v1/audio/transcriptions", data={"file": speech_files[name].read_bytes()})
            assert response.status == 200
            texts.append((await response.json())["text"])
        empty = await client.post("/v1/audio/transcriptions", data={"model": "x"})
    assert all(texts) and len(set(texts)) == len(texts)
    assert empty.status == 400


async def test_glm_asr_peer_runs_the_model_card_recipe(glm_asr_dir: Path, speech_files: dict[str, Path]) -> None:
    """For GLM-ASR the peer runs apply_transcription_request → generate, whose text our server reproduces."""
    from serving import serve, transcribe

    peer = hf_peer.Peer(glm_asr_dir, ncpu=1)
    async with TestClient(TestServer(hf_peer.app(peer))) as client:
        response = await client.post(
            "/v1/audio/transcriptions", data={"file": speech_files["digits_a.wav"].read_bytes()}
        )
        theirs = (await response.json())["text"]
    async with serve(model=str(glm_asr_dir), cache_entries=0) as (_, client):
        ours = (await transcribe(client, speech_files["digits_a.wav"])).json()["text"]
    assert response.status == 200 and theirs
    assert "".join(ours.split()) == "".join(theirs.replace("\ufffd", "").split())
