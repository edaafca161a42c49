"""The playground in a real browser: Debian's chromium driven by playwright-core (npm, tests/playground/
package.json) against a real asr-serve with the demo model and an API key.

Skipped with the reason when node/npm/chromium are missing, except in CI (`CI` set), where that fails. The
screenshot lands in tests/playground/artifacts/ (git-ignored; CI keeps it as an artifact).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from urllib.parse import urlparse

import pytest
from live_server import asr_serve
from requirements_check import skip_unless_ci

HERE = Path(__file__).parent
ROOT = HERE.parents[1]
SAMPLE = ROOT / "samples" / "demo.wav"
EXPECTED = (ROOT / "samples" / "demo.txt").read_text().strip()
ARTIFACTS = HERE / "artifacts"
CHROMIUM = os.environ.get("ASR_TEST_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
API_KEY = "playground-test-key"
NODE_MAJOR = 20  # playwright-core's engines.node (package-lock.json)


def _tools_or_skip() -> tuple[str, str]:
    node, npm = shutil.which("node"), shutil.which("npm")
    missing = [n for n, p in (("node", node), ("npm", npm), ("chromium", CHROMIUM)) if not p or not Path(p).exists()]
    if missing:
        skip_unless_ci(f"browser test needs {', '.join(missing)} (apt-get install -y nodejs npm chromium)")
    assert node and npm
    version = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=30).stdout.strip()
    if int(version.lstrip("v").split(".")[0] or 0) < NODE_MAJOR:
        skip_unless_ci(f"playwright-core needs node >= {NODE_MAJOR}, {node} is {version} (.ci/run brings one)")
    return node, npm


def _install_playwright(npm: str) -> None:
    if (HERE / "node_modules" / "playwright-core").is_dir():
        return
    done = subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=HERE, capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        reason = f"npm ci failed (no npm registry?):\n{done.stdout}\n{done.stderr}"
        skip_unless_ci(reason)


@pytest.fixture(scope="module")
def browser_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    node, npm = _tools_or_skip()
    _install_playwright(npm)
    tmp = tmp_path_factory.mktemp("browser")
    corrupt = tmp / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt " + os.urandom(300))  # a WAV's magic, then noise
    ARTIFACTS.mkdir(exist_ok=True)
    with asr_serve("--api-key", API_KEY) as base:
        config = {
            "baseUrl": base,
            "apiKey": API_KEY,
            "sample": str(SAMPLE),
            "corrupt": str(corrupt),
            "screenshot": str(ARTIFACTS / "playground.png"),
            "chromium": CHROMIUM,
            "userDataDir": str(tmp / "profile"),
            "fakeAudio": str(SAMPLE),
        }
        (tmp / "config.json").write_text(json.dumps(config))
        done = subprocess.run(
            [node, str(HERE / "browser_check.mjs"), str(tmp / "config.json")],
            cwd=HERE, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    result: dict = json.loads(done.stdout)
    result["base"] = base
    (ARTIFACTS / "browser_run.json").write_text(json.dumps(result, indent=1))
    return result


def test_upload_shows_transcript_segments_words_and_timing(browser_run: dict) -> None:
    upload = browser_run["upload"]
    assert upload["state"] == "done", upload
    assert upload["text"] == EXPECTED
    assert len(browser_run["segments"]) == 1 and EXPECTED in browser_run["segments"][0]
    assert browser_run["words"] == EXPECTED.split()
    assert browser_run["currentSegments"] == 1 and browser_run["currentWord"] == EXPECTED.split()[0]
    assert browser_run["audioSrc"].startswith("blob:")
    timing = browser_run["timing"]
    assert "queue" in timing and "inference" in timing and "round trip" in timing
    assert (ARTIFACTS / "playground.png").stat().st_size > 10_000


def test_live_panel_shows_the_server(browser_run: dict) -> None:
    live = dict(item.split("=", 1) for item in browser_run["live"])
    assert live["live-model"] == "asr-demo"
    assert live["live-device"] == "cpu" and live["live-precision"] == "fp32"
    assert live["live-queue"] == "0"
    assert live["live-batch"].startswith("mean ") and "(max 16)" in live["live-batch"]


def test_api_key_is_asked_for(browser_run: dict) -> None:
    assert browser_run["apiKeyFieldShown"] is True
    refused = browser_run["withoutKey"]
    assert refused["state"] == "error" and "401" in refused["error"] and "API key" in refused["error"]


def test_corrupt_file_shows_the_servers_error(browser_run: dict) -> None:
    corrupt = browser_run["corrupt"]
    assert corrupt["state"] == "error"
    assert "corrupt.wav" in corrupt["error"] and "400" in corrupt["error"]
    assert corrupt["text"] is None  # the previous transcript is not left on show


def test_microphone_recording_is_transcribed(browser_run: dict) -> None:
    """The fake microphone plays samples/demo.wav into MediaRecorder; the webm/opus upload goes through ffmpeg."""
    assert browser_run["recordState"].startswith("recorded ")
    recording = browser_run["recording"]
    assert recording["state"] == "done", recording
    assert recording["text"].strip()


def test_no_request_leaves_loopback(browser_run: dict) -> None:
    requests = browser_run["requests"]
    assert any(u.endswith("/v1/audio/transcriptions") for u in requests)
    remote = [u for u in requests if urlparse(u).scheme not in ("blob", "data") and urlparse(u).hostname != "127.0.0.1"]
    assert remote == []
    assert browser_run["pageErrors"] == []
    # the only failed loads are the two the test provokes (no key, corrupt file): no missing asset, no favicon
    failed = [e for e in browser_run["consoleErrors"] if "Failed to load resource" in e]
    assert len(failed) == 2 and "401" in failed[0] and "400" in failed[1], browser_run["consoleErrors"]


def test_live_mode_refused_without_the_key_says_why(browser_run: dict) -> None:
    refused = browser_run["liveWithoutKey"]
    assert "missing or invalid API key" in refused["error"] and "invalid_api_key" in refused["error"]
    assert refused["state"].startswith("closed by the server: 1008")


def test_live_mode_shows_text_while_speaking_then_the_completed_utterance(browser_run: dict) -> None:
    """The fake microphone loops samples/demo.wav into /v1/realtime through an AudioWorklet (pcm16 at 24 kHz):
    an utterance showed text while it was still open (partial deltas), then its completed text; Stop commits the
    open utterance and every line ends with its text."""
    lines = browser_run["liveMode"]
    assert all(line["className"].startswith("utterance done") for line in lines), lines
    early = [line for line in lines if line["shownWhileOpen"]]
    assert early, lines
    for line in early:  # what showed while speaking is what the words started as (or the final decode revised it)
        assert line["deltas"] >= 1 and line["final"] and line["text"] == line["final"]
    finals = [line["final"] for line in lines if line["final"]]
    assert EXPECTED in finals, finals  # a whole loop of the sample, transcribed like its upload
