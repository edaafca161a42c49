"""How an upload longer than one segment is cut: the server's `--segmenter` and OpenAI's `chunking_strategy`.

`chunking_strategy` arrives as a multipart form field: `auto`, a JSON object
`{"type": "server_vad", "threshold": .., "prefix_padding_ms": .., "silence_duration_ms": ..}`, or that object
flattened the way the official `openai` client sends nested fields (`chunking_strategy[type]=server_vad`, ...).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from .config import Settings
from .errors import InvalidRequest
from .vad import VadParams, available

Segmenter = Literal["vad", "windows"]
FIELD = "chunking_strategy"


@dataclass(frozen=True)
class Chunking:
    segmenter: Segmenter
    vad: VadParams

    def cache_part(self) -> str:
        """What the cache key must include: the same audio cut differently may read differently."""
        return f"{self.segmenter}:{self.vad}" if self.segmenter == "vad" else "windows"


def server_default(settings: Settings) -> Chunking:
    """The configured segmenter (`auto`: VAD when silero-vad is installed) with the configured VAD knobs."""
    auto: Segmenter = "vad" if available() else "windows"
    segmenter: Segmenter = auto if settings.segmenter == "auto" else settings.segmenter
    return Chunking(segmenter, default_vad_params(settings))


def default_vad_params(settings: Settings) -> VadParams:
    return VadParams(
        threshold=settings.vad_threshold,
        prefix_padding_ms=settings.vad_prefix_padding_ms,
        silence_duration_ms=settings.vad_silence_duration_ms,
    )


def _form_object(form: Mapping[str, Any]) -> dict[str, Any] | str | None:
    raw = form.get(FIELD)
    if raw is not None and not isinstance(raw, str):
        raise InvalidRequest(f"{FIELD} must be 'auto' or a server_vad JSON object")
    if raw is not None:
        raw = raw.strip()
        if raw.startswith("{"):
            try:
                obj = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise InvalidRequest(f"{FIELD} is not valid JSON: {exc.msg}") from exc
            if not isinstance(obj, dict):
                raise InvalidRequest(f"{FIELD} must be 'auto' or a server_vad JSON object")
            return obj
        return raw
    prefix = FIELD + "["
    flat = {k[len(prefix) : -1]: v for k, v in form.items() if k.startswith(prefix) and k.endswith("]")}
    return flat or None


def _number(obj: Mapping[str, Any], key: str, default: float, lo: float, hi: float) -> float:
    value = obj.get(key, default)
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InvalidRequest(f"{FIELD}.{key} must be a number, not {value!r}") from None
    if not lo <= number <= hi:
        raise InvalidRequest(f"{FIELD}.{key} must be between {lo:g} and {hi:g}")
    return number


def vad_params_from(obj: Mapping[str, Any], base: VadParams, where: str = FIELD) -> VadParams:
    """A `server_vad` object's knobs over `base` (also used by the realtime `turn_detection`)."""
    unknown = set(obj) - {"type", "threshold", "prefix_padding_ms", "silence_duration_ms", "create_response",
                          "interrupt_response", "idle_timeout_ms", "eagerness"}  # fmt: skip
    if unknown:
        raise InvalidRequest(f"{where}: unknown field(s) {sorted(unknown)}")
    return VadParams(
        threshold=_number(obj, "threshold", base.threshold, 0.0, 1.0),
        prefix_padding_ms=int(_number(obj, "prefix_padding_ms", base.prefix_padding_ms, 0, 5000)),
        silence_duration_ms=int(_number(obj, "silence_duration_ms", base.silence_duration_ms, 32, 10000)),
        min_speech_ms=base.min_speech_ms,
    )


def parse(form: Mapping[str, Any], settings: Settings) -> Chunking:
    """The request's chunking: absent → the server default; `auto` → VAD; `server_vad` → VAD with its knobs."""
    default = server_default(settings)
    obj = _form_object(form)
    if obj is None:
        return default
    if obj == "auto" or obj == {"type": "auto"}:
        return Chunking("vad", default.vad) if available() else default
    if isinstance(obj, str) or obj.get("type") != "server_vad":
        raise InvalidRequest(f"{FIELD} must be 'auto' or an object with type 'server_vad'")
    if not available():
        raise InvalidRequest(f"{FIELD} server_vad needs silero-vad, which this server does not have")
    return Chunking("vad", vad_params_from(obj, default.vad))
