"""Session-wide test setup: a network guard (loopback only), tiny funasr model directories, test audio."""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("MODELSCOPE_OFFLINE", "1")

DATA = Path(__file__).parent / "data"
SPEECH = DATA / "speech"
NETWORK_ATTEMPTS: list[str] = []

_LOOPBACK = ("127.", "::1", "localhost", "0.0.0.0")
_orig_getaddrinfo = socket.getaddrinfo
_orig_connect = socket.socket.connect


# The real node's pod bridge and the service range (tools/cluster/realnode.py): local only while its fence is up
# (the bridge exists only between its fence_network() and down()); otherwise such an address follows the default
# route out of the machine, so it stays blocked.
_FENCED_NETWORKS = (ipaddress.ip_network("10.99.0.0/24"), ipaddress.ip_network("10.96.0.0/16"))
_FENCE_BRIDGE = Path("/sys/class/net/asr-br0")


def _fenced(host: object) -> bool:
    try:
        ip = ipaddress.ip_address(str(host))
    except ValueError:
        return False
    return any(ip in net for net in _FENCED_NETWORKS) and _FENCE_BRIDGE.exists()


def _is_local(host: object) -> bool:
    return host is None or str(host).startswith(_LOOPBACK) or str(host) in ("", "testserver", "t") or _fenced(host)


def _guarded_getaddrinfo(host, *args, **kwargs):  # type: ignore[no-untyped-def]
    if not _is_local(host):
        NETWORK_ATTEMPTS.append(f"getaddrinfo {host}")
        raise OSError(f"network blocked in tests: {host}")
    return _orig_getaddrinfo(host, *args, **kwargs)


def _guarded_connect(self, address):  # type: ignore[no-untyped-def]
    if self.family in (socket.AF_INET, socket.AF_INET6) and not _is_local(address[0]):
        NETWORK_ATTEMPTS.append(f"connect {address}")
        raise OSError(f"network blocked in tests: {address}")
    return _orig_connect(self, address)


# Every test runs offline except for loopback: code that would reach a model hub fails loudly and is recorded.
socket.getaddrinfo = _guarded_getaddrinfo
socket.socket.connect = _guarded_connect  # type: ignore[method-assign]


@pytest.fixture
def network_attempts() -> Iterator[list[str]]:
    start = len(NETWORK_ATTEMPTS)
    attempts: list[str] = []
    yield attempts
    attempts.extend(NETWORK_ATTEMPTS[start:])


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def sensevoice_dir(models_dir: Path) -> Path:
    from tiny_models import build_sensevoice

    return build_sensevoice(models_dir / "sensevoice")


@pytest.fixture(scope="session")
def paraformer_dir(models_dir: Path, sensevoice_dir: Path) -> Path:
    from tiny_models import build_paraformer

    return build_paraformer(models_dir / "paraformer", sensevoice_dir)


@pytest.fixture(scope="session")
def nano_dir(models_dir: Path, sensevoice_dir: Path) -> Path:
    from tiny_models import build_funasr_nano

    return build_funasr_nano(models_dir / "nano", sensevoice_dir)


@pytest.fixture(scope="session")
def whisper_dir(models_dir: Path) -> Path:
    """A tiny random-weight Whisper in transformers' layout (asr_bench.make_whisper), generation capped at 32."""
    from asr_bench.make_whisper import build

    return build(models_dir / "whisper", "tiny-test", max_length=32)


@pytest.fixture(scope="session")
def glm_asr_dir(models_dir: Path) -> Path:
    """A tiny random-weight GLM-ASR in transformers' layout (asr_bench.make_glm_asr), generation capped at 24."""
    from asr_bench.make_glm_asr import build

    return build(models_dir / "glm-asr", "tiny-test", max_new_tokens=24)


@pytest.fixture(scope="session")
def speech_files() -> dict[str, Path]:
    return {p.name: p for p in sorted(SPEECH.iterdir()) if p.suffix in (".wav", ".flac", ".ogg", ".mp3", ".m4a")}
