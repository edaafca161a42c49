"""Fixtures for the inference server tests."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def wav_bytes(speech_files: dict[str, Path]) -> dict[str, bytes]:
    return {name: p.read_bytes() for name, p in speech_files.items()}
