"""Which model a benchmark serves: the embedded demo model, one built with random weights at a published model's
dimensions (`make_model.py`, cached under --models-dir), or a model directory; and what the record says of it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
DEMO_MODEL = REPO / "inference" / "asr_inference" / "models" / "demo"
BUILT_MODELS = {"sensevoice-small-random": "sensevoice-small", "paraformer-large-random": "paraformer-large"}
# Whisper at published dimensions, random weights (make_whisper.py). A random model never ends a transcript on its
# own: generation stops at max_length, set to what a 10-s clip of speech takes (~40 text tokens + the 4-token
# prompt), the same for every server that reads the checkpoint's generation_config.
BUILT_WHISPER = {"whisper-base-random": "base", "whisper-small-random": "small"}
WHISPER_MAX_LENGTH = 48
BUILT_GLM_ASR = {"glm-asr-nano-random": "nano", "glm-asr-tiny-random": "tiny-test"}
GLM_ASR_MAX_NEW_TOKENS = 44  # the same ~10-s clip's transcript


def resolve_model(spec: str | None, models_dir: Path) -> Path:
    if spec is None:
        if not (DEMO_MODEL / "model.pt").is_file():
            raise SystemExit(f"asr-bench: the embedded demo model is missing ({DEMO_MODEL}); pass --model")
        return DEMO_MODEL
    if spec in BUILT_MODELS:
        from .make_model import ensure

        return ensure(BUILT_MODELS[spec], (models_dir / spec).resolve())
    if spec in BUILT_WHISPER:
        from .make_whisper import build

        out = (models_dir / spec).resolve()
        if (out / "BENCH_MODEL.json").is_file():
            return out
        return build(out, BUILT_WHISPER[spec], max_length=WHISPER_MAX_LENGTH)
    if spec in BUILT_GLM_ASR:
        from .make_glm_asr import build as build_glm

        out = (models_dir / spec).resolve()
        if (out / "BENCH_MODEL.json").is_file():
            return out
        return build_glm(out, BUILT_GLM_ASR[spec], max_new_tokens=GLM_ASR_MAX_NEW_TOKENS)
    path = Path(spec).expanduser().resolve()
    if not (path / "config.yaml").is_file() and not (path / "config.json").is_file():
        raise SystemExit(f"asr-bench: --model {spec!r} is not a model directory (no config.yaml or config.json)")
    return path


def model_info(path: Path) -> dict[str, Any]:
    info: dict[str, Any] = {"path": str(path), "name": path.name}
    card = path / "BENCH_MODEL.json"
    if card.is_file():
        info.update(json.loads(card.read_text()))
    try:
        import yaml

        conf = yaml.safe_load((path / "config.yaml").read_text())
        info["architecture"] = conf.get("model")
        info["encoder_conf"] = {
            k: conf.get("encoder_conf", {}).get(k)
            for k in ("output_size", "attention_heads", "linear_units", "num_blocks", "tp_blocks")
        }
    except Exception:  # the model card is informational only
        pass
    return info
