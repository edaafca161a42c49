"""What a test needs from outside Python's own tests: missing outside CI → skip with the reason; under CI (`CI` set)
→ fail, because `.ci/run` provides every piece and a skip there would hide a test that never ran."""

from __future__ import annotations

import importlib
import os
from types import ModuleType
from typing import NoReturn

import pytest


def skip_unless_ci(reason: str) -> NoReturn:
    """Skip with `reason`; under CI fail with it instead."""
    if os.environ.get("CI"):
        pytest.fail(f"CI must run this test: {reason}", pytrace=False)
    pytest.skip(reason)


def import_or_skip(module: str, hint: str) -> ModuleType:
    """`pytest.importorskip` that fails under CI."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        skip_unless_ci(f"{module} is not importable ({e}); {hint}")
