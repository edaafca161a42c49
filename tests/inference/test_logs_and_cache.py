"""One JSON log line per request (never audio or keys), size-rotated log files, and the result cache."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from asr_inference.cache import LRUCache, cache_key
from asr_inference.config import Settings
from asr_inference.logging_setup import configure_logging
from serving import metric, metric_samples, serve, transcribe


@pytest.fixture
def restore_logging():
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for h in list(root.handlers):
        if getattr(h, "_asr_handler", False):
            root.removeHandler(h)
            h.close()
    root.handlers[:] = handlers
    root.setLevel(level)


async def test_one_json_line_per_request_to_a_rotated_file(
    sensevoice_dir: Path, speech_files: dict[str, Path], tmp_path: Path, restore_logging: None
) -> None:
    log_file = tmp_path / "logs" / "asr.log"
    settings = {"model": str(sensevoice_dir), "log_file": log_file, "log_max_bytes": 2048, "log_backup_count": 2,
                "api_key": "top-secret-key", "cache_entries": 0}  # fmt: skip
    configure_logging(Settings(**settings))
    clip = speech_files["digits_a.wav"]
    async with serve(**settings) as (_, client):
        headers = {"Authorization": "Bearer top-secret-key", "X-Request-ID": "req-42"}
        first = await client.post(
            "/v1/audio/transcriptions", files={"file": ("a.wav", clip.read_bytes())}, headers=headers
        )
        for _ in range(15):
            await client.post("/v1/audio/transcriptions", files={"file": ("a.wav", clip.read_bytes())}, headers=headers)
    assert first.status_code == 200 and first.headers["x-request-id"] == "req-42"
    files = sorted(p.name for p in log_file.parent.iterdir())
    assert files == ["asr.log", "asr.log.1", "asr.log.2"]  # rotated, and only backup_count backups kept
    assert all((log_file.parent / f).stat().st_size <= 2048 for f in files)
    lines = [json.loads(line) for f in files for line in (log_file.parent / f).read_text().splitlines()]
    requests = [entry for entry in lines if entry["msg"] == "request"]
    assert requests, "request lines must reach the rotated file"
    entry = (
        next(e for e in requests if e["request_id"] == "req-42")
        if any(e["request_id"] == "req-42" for e in requests)
        else requests[-1]
    )
    assert entry["status"] == 200 and entry["path"] == "/v1/audio/transcriptions"
    assert entry["audio_s"] > 0 and entry["batch_size"] >= 1 and entry["duration_ms"] > 0
    everything = "".join((log_file.parent / f).read_text() for f in files)
    assert "top-secret-key" not in everything
    assert "RIFF" not in everything and first.json()["text"] not in everything  # no audio, no transcript


def test_text_log_format(tmp_path: Path, restore_logging: None) -> None:
    log_file = tmp_path / "t.log"
    configure_logging(Settings(log_format="text", log_file=log_file))
    logging.getLogger("asr_inference.access").info("request", extra={"status": 200, "request_id": "abc"})
    for h in logging.getLogger().handlers:
        h.flush()
    line = log_file.read_text().strip()
    assert "request" in line and "status=200" in line and "request_id=abc" in line and not line.startswith("{")


async def test_cache_hits_on_same_bytes_and_options(sensevoice_dir: Path, speech_files: dict[str, Path]) -> None:
    clip = speech_files["digits_b.wav"]
    async with serve(model=str(sensevoice_dir), cache_entries=2) as (app, client):
        a = await transcribe(client, clip)
        b = await transcribe(client, clip)
        c = await transcribe(client, clip, language="en")  # another option: another entry
        d = await transcribe(client, speech_files["digits_a.wav"])
        e = await transcribe(client, clip)  # evicted by the LRU bound of 2
        samples = await metric_samples(client)
        cache_len = len(app.state.asr.transcriber.cache)
    assert a.json() == b.json() == e.json() and c.status_code == d.status_code == 200
    assert metric(samples, "asr_cache_hits_total") == 1
    assert metric(samples, "asr_cache_misses_total") == 4
    assert cache_len == 2


async def test_cache_off(sensevoice_dir: Path, speech_files: dict[str, Path]) -> None:
    async with serve(model=str(sensevoice_dir), cache_entries=0) as (_, client):
        for _ in range(2):
            await transcribe(client, speech_files["digits_b.wav"])
        samples = await metric_samples(client)
    assert metric(samples, "asr_cache_hits_total") == 0 and metric(samples, "asr_cache_misses_total") == 0
    assert metric(samples, "asr_batch_size_count") == 3  # warm-up + both requests ran the model


def test_lru_cache_bounds_and_keys() -> None:
    cache: LRUCache[str] = LRUCache(2)
    cache.put("a", "1")
    cache.put("b", "2")
    assert cache.get("a") == "1"  # a is now most recent
    cache.put("c", "3")
    assert cache.get("b") is None and cache.get("a") == "1" and cache.get("c") == "3"
    assert cache_key("x", "en") != cache_key("x", "zh") and cache_key("x", "en") == cache_key("x", "en")
    off: LRUCache[str] = LRUCache(0)
    off.put("a", "1")
    assert off.get("a") is None and len(off) == 0


@pytest.mark.parametrize(
    "raw",
    [b"\xff\xfe-not-utf8", b"has space", b"x" * 65, "caf\u00e9".encode()],
    ids=["non-utf8", "space", "long", "latin"],
)
async def test_a_request_id_that_is_not_a_plain_token_is_replaced(
    sensevoice_dir: Path, speech_files: dict[str, Path], raw: bytes
) -> None:
    """It goes into the logs and back as a header: non-UTF-8 bytes were a 500, other junk was echoed."""
    async with serve(model=str(sensevoice_dir)) as (_, client):
        response = await client.post(
            "/v1/audio/transcriptions",
            files={"file": ("a.wav", speech_files["digits_a.wav"].read_bytes())},
            headers={"X-Request-ID": raw},
        )
    assert response.status_code == 200
    replaced = response.headers["x-request-id"]
    assert replaced.encode() != raw and len(replaced) == 32 and int(replaced, 16) >= 0
