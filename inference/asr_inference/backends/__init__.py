"""Model backends. `create_backend(settings)` picks the implementation: funasr, or transformers (Whisper, GLM-ASR)."""

from __future__ import annotations

from ..config import Settings
from ..metrics import Metrics
from .base import Backend, DecodeOptions, ItemResult, ModelInfo, Prepared, Token

__all__ = ["Backend", "DecodeOptions", "ItemResult", "ModelInfo", "Prepared", "Token", "create_backend"]


def create_backend(settings: Settings, metrics: Metrics | None = None) -> Backend:
    """Whisper and GLM-ASR (`--family whisper|glm-asr`, or a local directory whose config.json says so) through
    transformers; every other family through funasr."""
    from ..model_source import transformers_family

    family = transformers_family(settings)
    if family == "whisper":
        from .whisper_backend import WhisperBackend

        return WhisperBackend(settings, metrics)
    if family == "glm-asr":
        from .glm_asr_backend import GlmAsrBackend

        return GlmAsrBackend(settings, metrics)
    from .funasr_backend import FunASRBackend  # keeps `import funasr` (~10 s) out of module import

    return FunASRBackend(settings, metrics)
