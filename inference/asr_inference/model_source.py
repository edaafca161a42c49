"""Where the model comes from: the embedded demo model, an existing directory, or a hub id — decided before
funasr is imported, so a missing local path fails fast with a clear message and never reaches a hub."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import yaml

from .config import DEMO_MODEL_DIR, Settings
from .errors import ModelLoadError

BUILTIN_DEMO = "builtin:demo"
_FAMILY_BY_CLASS = {
    "SenseVoiceSmall": "sensevoice",
    "Paraformer": "paraformer",
    "FunASRNano": "fun-asr-nano",
}


@dataclass(frozen=True)
class ModelSource:
    ref: str  # absolute directory, or hub id
    local: bool
    hub: str | None  # funasr's hub name ("ms" | "hf") for hub ids
    name: str  # served model name


def _first(settings: Settings) -> str | None:
    names = settings.served_names
    return names[0] if names else None


def resolve(settings: Settings) -> ModelSource:
    model = settings.model
    if model is None or model == BUILTIN_DEMO:
        if not (DEMO_MODEL_DIR / "model.pt").is_file():
            raise ModelLoadError(
                f"the embedded demo model is missing ({DEMO_MODEL_DIR} has no model.pt): build it with "
                "tools/demo_model (see its README) or pass --model <local model directory>"
            )
        return ModelSource(str(DEMO_MODEL_DIR), True, None, _first(settings) or "asr-demo")
    expanded = os.path.expanduser(model)
    if os.path.isdir(expanded):
        path = str(Path(expanded).resolve())
        _check_local_dir(path)
        return ModelSource(path, True, None, _first(settings) or Path(path).name)
    path_like = model.startswith(("/", "./", "../", "~", ".\\")) or model.endswith("/") or model.count("/") != 1
    if path_like or settings.hub == "local":
        raise ModelLoadError(
            f"model directory {model!r} does not exist (hub='{settings.hub}'; path-like values are never looked up "
            "on a model hub). Pass an existing directory (funasr: config.yaml and model.pt; Whisper: transformers' "
            "config.json and weights), or a hub id like "
            "'iic/SenseVoiceSmall' with --hub modelscope|huggingface."
        )
    hub = "hf" if settings.hub == "huggingface" else "ms"
    _check_cache_writable(CACHE_ENV[hub])
    return ModelSource(model, False, hub, _first(settings) or model.split("/")[-1])


# family → the transformers `model_type` its checkpoints declare in config.json
TRANSFORMERS_FAMILIES = {"whisper": "whisper", "glm-asr": "glmasr"}


def transformers_family(settings: Settings) -> str | None:
    """The transformers family to serve (`--family`, or auto-detected from a local config.json); None: funasr."""
    if settings.family in TRANSFORMERS_FAMILIES:
        return settings.family
    model = os.path.expanduser(settings.model or "")
    if settings.family != "auto" or not model or not os.path.isdir(model):
        return None
    model_type = transformers_model_type(model)
    return next((f for f, t in TRANSFORMERS_FAMILIES.items() if t == model_type), None)


# Where each hub's client downloads to (the images and the operator set them under /models).
CACHE_ENV = {"ms": "MODELSCOPE_CACHE", "hf": "HF_HOME"}


def _check_cache_writable(env_var: str) -> None:
    """A hub model is downloaded into $MODELSCOPE_CACHE / $HF_HOME: fail at start, saying what to fix, when that
    directory cannot be written — e.g. a hostPath the kubelet created root-owned while the server runs as uid
    10001 — instead of failing deep inside the hub client after the startup probe's wait."""
    directory = os.environ.get(env_var)
    if not directory:
        return  # the hub client's default under $HOME
    try:
        os.makedirs(directory, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".asr-write-check-", dir=directory)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise ModelLoadError(
            f"the model cache {directory} (${env_var}) is not writable by uid {os.getuid()}: {e.strerror}. "
            "Hub models are downloaded there: mount a writable volume on /models (a node directory must be owned "
            "by, or group-writable for, uid/gid 10001), or serve a local model directory."
        ) from None


def transformers_model_type(path: str) -> str | None:
    """The `model_type` of a transformers directory (config.json), None for anything else (e.g. a funasr one)."""
    try:
        with open(os.path.join(path, "config.json"), encoding="utf-8") as f:
            model_type = json.load(f).get("model_type")
    except (OSError, ValueError, AttributeError):
        return None
    return str(model_type) if model_type else None


def _check_local_dir(path: str) -> None:
    if transformers_model_type(path) in TRANSFORMERS_FAMILIES.values():
        return  # transformers reads and checks its own files (config.json, weights, tokenizer)
    missing = [n for n in ("config.yaml", "model.pt") if not os.path.isfile(os.path.join(path, n))]
    if missing:
        raise ModelLoadError(f"model directory {path} lacks {', '.join(missing)}")


def family_of(model_class: str) -> str:
    try:
        return _FAMILY_BY_CLASS[model_class]
    except KeyError:
        raise ModelLoadError(
            f"unsupported model class {model_class!r}; supported: {', '.join(sorted(_FAMILY_BY_CLASS))}"
        ) from None


def family_from_dir(path: str) -> str:
    with open(os.path.join(path, "config.yaml"), encoding="utf-8") as f:
        cfg = yaml.safe_load(f) or {}
    return family_of(str(cfg.get("model", "")))
