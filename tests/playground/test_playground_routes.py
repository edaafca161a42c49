"""The playground's routes through the ASGI app: page and assets served same-origin only, off with
--no-playground, the API key asked for (page open, API closed), and the Server-Timing header the page shows."""

from __future__ import annotations

import re
import tomllib
from fnmatch import fnmatch
from pathlib import Path

import pytest
from asr_inference.cli import parse_settings
from asr_inference.config import Settings
from asr_inference.timing import server_timing
from serving import serve, transcribe

ROOT = Path(__file__).resolve().parents[2]
PAGE_DIR = ROOT / "inference" / "asr_inference" / "playground"
SAMPLE = ROOT / "samples" / "demo.wav"
# href/src in HTML, ES module imports, and the AudioWorklet module the live mode loads
ASSET = re.compile(r"""(?:href|src)="([^"]+)"|from\s+"([^"]+)"|import\s+"([^"]+)"|addModule\("([^"]+)"\)""")
EXTERNAL = re.compile(r"""(?i:https?:)?//[a-zA-Z0-9.-]+\.[a-zA-Z]{2,}|@import|\burl\(""")  # CSS url(), not URL()


def referenced(text: str) -> list[str]:
    return [next(g for g in m.groups() if g) for m in ASSET.finditer(text)]


def test_no_playground_flag_and_env(monkeypatch: pytest.MonkeyPatch) -> None:
    assert parse_settings([]).playground is True
    assert parse_settings(["--no-playground"]).playground is False
    monkeypatch.setenv("ASR_PLAYGROUND", "false")
    assert Settings().playground is False
    assert parse_settings(["--playground"]).playground is True


def test_page_files_ship_in_the_wheel_and_load_nothing_from_elsewhere() -> None:
    package_data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    files = sorted(PAGE_DIR.iterdir())
    assert {f.suffix for f in files} >= {".html", ".js", ".css"}
    for f in files:
        relative = f.relative_to(PAGE_DIR.parent).as_posix()
        assert any(fnmatch(relative, pattern) for pattern in package_data["asr_inference"]), relative
        text = f.read_text()
        assert not EXTERNAL.findall(text), (f.name, EXTERNAL.findall(text))


async def test_page_and_every_asset_it_references_are_served() -> None:
    async with serve() as (_, client):
        root, page = await client.get("/"), await client.get("/playground")
        assert root.status_code == page.status_code == 200
        assert root.text == page.text and "<title>" in root.text
        assert root.headers["content-type"].startswith("text/html")
        assert "default-src 'self'" in root.headers["content-security-policy"]
        seen: set[str] = set()
        todo = referenced(root.text)
        assert "/playground/static/main.js" in todo
        while todo:
            url = todo.pop()
            if url.startswith("data:"):
                continue  # inline (the empty favicon): no request is made for it
            url = url if url.startswith("/") else "/playground/static/" + url.removeprefix("./")
            if url in seen:
                continue
            seen.add(url)
            asset = await client.get(url)
            assert asset.status_code == 200, url
            kind = "javascript" if url.endswith(".js") else "css"
            assert kind in asset.headers["content-type"], url
            todo.extend(referenced(asset.text))
        assert {Path(u).name for u in seen} == {f.name for f in PAGE_DIR.iterdir()} - {"index.html"}
        missing = await client.get("/playground/static/nope.js")
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
        traversal = await client.get("/playground/static/..%2Fplayground.py")
        assert traversal.status_code == 404
        config = (await client.get("/playground/config.json")).json()
    assert config["api_key_required"] is False
    assert config["model"] == "asr-demo"
    assert "verbose_json" in config["response_formats"]


async def test_no_playground_answers_404() -> None:
    async with serve(playground=False) as (_, client):
        for path in ("/", "/playground", "/playground/static/main.js", "/playground/config.json"):
            assert (await client.get(path)).status_code == 404, path
        assert (await client.get("/readyz")).status_code == 200  # the API is untouched


async def test_with_an_api_key_the_page_is_open_and_asks_for_the_key() -> None:
    async with serve(api_key="s3cret") as (_, client):
        assert (await client.get("/")).status_code == 200
        assert (await client.get("/playground/config.json")).json()["api_key_required"] is True
        assert (await transcribe(client, SAMPLE)).status_code == 401
        client.headers["Authorization"] = "Bearer s3cret"
        assert (await transcribe(client, SAMPLE)).status_code == 200


def _timing(header: str) -> dict[str, str]:
    out = {}
    for entry in header.split(","):
        name, _, param = entry.strip().partition(";")
        out[name] = param.partition("=")[2]
    return out


async def test_transcription_carries_server_timing() -> None:
    async with serve() as (_, client):
        first = await transcribe(client, SAMPLE, response_format="verbose_json")
        again = await transcribe(client, SAMPLE, response_format="verbose_json")
    assert first.status_code == again.status_code == 200
    fresh = _timing(first.headers["server-timing"])
    assert set(fresh) == {"queue", "inference", "total"}
    queue_ms, inference_ms, total_ms = (float(fresh[k]) for k in ("queue", "inference", "total"))
    assert queue_ms >= 0 and inference_ms > 0 and queue_ms + inference_ms <= total_ms
    cached = _timing(again.headers["server-timing"])
    assert set(cached) == {"cache", "total"} and cached["cache"] == "hit"


def test_server_timing_format() -> None:
    assert server_timing(queue_s=0.0012, inference_s=0.05, total_s=0.1, cached=False) == (
        "queue;dur=1.2, inference;dur=50.0, total;dur=100.0"
    )
    assert server_timing(queue_s=9, inference_s=9, total_s=0.002, cached=True) == "cache;desc=hit, total;dur=2.0"
