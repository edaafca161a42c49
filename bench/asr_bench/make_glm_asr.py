"""Random-weight GLM-ASR model directories (transformers' `glmasr` layout), built offline in seconds.

What `GlmAsrForConditionalGeneration.from_pretrained` and `AutoProcessor.from_pretrained` read from a released
checkpoint: config.json (a Whisper-style audio encoder with rotary positions, a projector merging 4 frames, a
Llama text model), generation_config.json, model.safetensors, and the processor (Whisper's 128-bin feature
extractor, a byte-level BPE tokenizer with GLM's special tokens, and a chat template that lays out the request
as GLM-ASR's does: `<|user|>\\n<|begin_of_audio|>` audio `<|end_of_audio|>\\n` prompt `<|assistant|>\\n`).

    python -m asr_bench.make_glm_asr tiny-test /tmp/glm-asr-test
    python -m asr_bench.make_glm_asr nano      bench-results/models/glm-asr-nano-random   # 1.5 B: ~6 GB fp32
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

from .byte_bpe import byte_level_bpe, write_card

SPECIALS = ["<|endoftext|>", "<|user|>", "<|assistant|>", "<|system|>", "<|begin_of_audio|>", "<|end_of_audio|>",
            "<|pad|>"]  # fmt: skip
CHAT_TEMPLATE = (
    "{%- for message in messages -%}<|{{ message['role'] }}|>\n"
    "{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'audio' -%}<|begin_of_audio|><|pad|><|end_of_audio|>\n"
    "{%- elif part['type'] == 'text' -%}{{ part['text'] }}{%- endif -%}"
    "{%- endfor -%}{%- endfor -%}"
    "{%- if add_generation_prompt -%}<|assistant|>\n{%- endif -%}"
)
# audio: hidden, layers, heads; text: hidden, ffn, layers, heads, kv heads (GLM-ASR-Nano-2512: transformers' defaults)
DIMS: dict[str, dict[str, int]] = {
    "tiny-test": {"a_hidden": 64, "a_layers": 2, "a_heads": 4, "t_hidden": 64, "t_ffn": 128, "t_layers": 2,
                  "t_heads": 4, "t_kv": 2},
    "nano": {"a_hidden": 1280, "a_layers": 32, "a_heads": 20, "t_hidden": 2048, "t_ffn": 6144, "t_layers": 28,
             "t_heads": 16, "t_kv": 4},
}  # fmt: skip


def _tokenizer(seed: int) -> Any:
    from transformers import PreTrainedTokenizerFast

    tok = byte_level_bpe(seed, SPECIALS, extra_lines=["Please transcribe this audio into text"])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>", padding_side="left"
    )


def build(out: Path, dims_name: str = "tiny-test", seed: int = 0, max_new_tokens: int = 448) -> Path:
    """Write a GLM-ASR directory with `DIMS[dims_name]` and random weights; generation stops after
    `max_new_tokens` (a random model rarely ends on its own)."""
    import torch
    from transformers import (
        GenerationConfig,
        GlmAsrConfig,
        GlmAsrForConditionalGeneration,
        GlmAsrProcessor,
        WhisperFeatureExtractor,
    )

    d = DIMS[dims_name]
    random.seed(seed)
    torch.manual_seed(seed)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = _tokenizer(seed)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIALS}
    eos = [ids["<|endoftext|>"], ids["<|user|>"]]
    config = GlmAsrConfig(
        audio_config={"hidden_size": d["a_hidden"], "intermediate_size": 4 * d["a_hidden"],
                      "num_hidden_layers": d["a_layers"], "num_attention_heads": d["a_heads"], "num_mel_bins": 128},
        text_config={"vocab_size": len(tokenizer), "hidden_size": d["t_hidden"], "intermediate_size": d["t_ffn"],
                     "num_hidden_layers": d["t_layers"], "num_attention_heads": d["t_heads"],
                     "num_key_value_heads": d["t_kv"], "eos_token_id": eos, "pad_token_id": ids["<|endoftext|>"],
                     "initializer_range": 0.2 if dims_name == "tiny-test" else 0.02},
        audio_token_id=ids["<|pad|>"],
    )  # fmt: skip
    model = GlmAsrForConditionalGeneration(config).eval()
    model.generation_config = GenerationConfig(
        eos_token_id=eos, pad_token_id=ids["<|endoftext|>"], max_new_tokens=max_new_tokens, do_sample=False
    )
    model.save_pretrained(out)
    processor = GlmAsrProcessor(
        feature_extractor=WhisperFeatureExtractor(feature_size=128), tokenizer=tokenizer, chat_template=CHAT_TEMPLATE
    )
    processor.save_pretrained(out)
    write_card(out, f"glm-asr-{dims_name}", model)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m asr_bench.make_glm_asr", description=__doc__.split("\n\n")[0])
    parser.add_argument("dims", choices=sorted(DIMS))
    parser.add_argument("out", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-new-tokens", type=int, default=448)
    args = parser.parse_args(argv)
    t0 = time.monotonic()
    build(args.out, args.dims, seed=args.seed, max_new_tokens=args.max_new_tokens)
    card = json.loads((args.out / "BENCH_MODEL.json").read_text())
    print(f"glm-asr-{args.dims}: {args.out} ({card['parameters']:,} parameters) in {time.monotonic() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
