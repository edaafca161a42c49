"""Model backends. `load_backend(settings)` picks the implementation (funasr today)."""

from __future__ import annotations

from ..config import Settings
from ..metrics import Metrics
from .base import Backend, DecodeOptions, ItemResult, ModelInfo, Prepared, Token

__all__ = ["Backend", "DecodeOptions", "ItemResult", "ModelInfo", "Prepared", "Token", "create_backend"]


def create_backend(settings: Settings, metrics: Metrics | None = None) -> Backend:
    from .funasr_backend import FunASRBackend  # keeps `import funasr` (~10 s) out of module import

    return FunASRBackend(settings, metrics)
