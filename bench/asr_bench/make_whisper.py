"""Random-weight Whisper model directories (transformers layout), built offline in seconds.

A directory holds what `WhisperForConditionalGeneration.from_pretrained` and `WhisperProcessor.from_pretrained` read
from a released checkpoint (config.json, generation_config.json, model.safetensors, tokenizer.json,
preprocessor_config.json), with a byte-level BPE trained here on a few English words, then Whisper's special tokens
*after* the text tokens (as in the released vocabularies: the tokenizer finds specials by id order), its language
and task tokens, and 1501 timestamp tokens. `alignment_heads` is set so that token times come from the
cross-attention as for released models.

    python -m asr_bench.make_whisper tiny  /tmp/whisper-tiny-test
    python -m asr_bench.make_whisper small bench-results/models/whisper-small-random

Speed depends on the dimensions, not the weights; the text is nonsense (the test dimensions give deterministic
nonsense that changes with the audio).
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

LANGUAGES = ["en", "zh", "de", "es", "ru", "ko", "fr", "ja", "pt", "tr", "pl", "it", "yue"]
# d_model, layers, heads, ffn: the published dimensions (openai/whisper-* config.json); "tiny-test" is for tests.
DIMS: dict[str, dict[str, int]] = {
    "tiny-test": {"d_model": 64, "layers": 2, "heads": 4, "ffn": 128, "mels": 80},
    "base": {"d_model": 512, "layers": 6, "heads": 8, "ffn": 2048, "mels": 80},
    "small": {"d_model": 768, "layers": 12, "heads": 12, "ffn": 3072, "mels": 80},
}


def _tokenizer(out: Path, seed: int) -> Any:
    from transformers import WhisperTokenizer

    specials = [
        "<|endoftext|>", "<|startoftranscript|>", *(f"<|{code}|>" for code in LANGUAGES), "<|translate|>",
        "<|transcribe|>", "<|startoflm|>", "<|startofprev|>", "<|nospeech|>", "<|notimestamps|>",
    ]  # fmt: skip
    tok = byte_level_bpe(seed, specials)
    tok.add_tokens([f"<|{i * 0.02:.2f}|>" for i in range(1501)])
    tok.save(str(out / "tokenizer.json"))
    eot = "<|endoftext|>"
    return WhisperTokenizer(
        tokenizer_file=str(out / "tokenizer.json"), bos_token=eot, eos_token=eot, unk_token=eot, pad_token=eot
    )


def build(out: Path, dims_name: str = "tiny-test", seed: int = 0, max_length: int = 448) -> Path:
    """Write a Whisper directory with `DIMS[dims_name]` and random weights. `max_length` bounds generation (a
    random model rarely ends on its own: tests keep it short)."""
    import torch
    from transformers import GenerationConfig, WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration

    dims = DIMS[dims_name]
    random.seed(seed)
    torch.manual_seed(seed)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = _tokenizer(out, seed)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in tokenizer.added_tokens_encoder}
    eot, sot = ids["<|endoftext|>"], ids["<|startoftranscript|>"]
    config = WhisperConfig(
        vocab_size=len(tokenizer), num_mel_bins=dims["mels"], d_model=dims["d_model"],
        encoder_layers=dims["layers"], decoder_layers=dims["layers"], encoder_attention_heads=dims["heads"],
        decoder_attention_heads=dims["heads"], encoder_ffn_dim=dims["ffn"], decoder_ffn_dim=dims["ffn"],
        max_source_positions=1500, max_target_positions=448, pad_token_id=eot, bos_token_id=eot,
        eos_token_id=eot, decoder_start_token_id=sot, suppress_tokens=[], begin_suppress_tokens=[eot],
        init_std=0.2 if dims_name == "tiny-test" else 0.02,  # larger random weights: text that follows the audio
    )  # fmt: skip
    model = WhisperForConditionalGeneration(config).eval()
    model.generation_config = GenerationConfig(
        decoder_start_token_id=sot, eos_token_id=eot, pad_token_id=eot, bos_token_id=eot, max_length=max_length,
        is_multilingual=True, lang_to_id={f"<|{c}|>": ids[f"<|{c}|>"] for c in LANGUAGES},
        task_to_id={"transcribe": ids["<|transcribe|>"], "translate": ids["<|translate|>"]},
        no_timestamps_token_id=ids["<|notimestamps|>"], prev_sot_token_id=ids["<|startofprev|>"],
        # a random model spreads its picks over the 1501 timestamp tokens; a released one emits none without
        # timestamps asked for: suppressed here so that the nonsense is text
        suppress_tokens=[i for t, i in ids.items() if t != "<|endoftext|>"], begin_suppress_tokens=[eot],
        max_initial_timestamp_index=50, alignment_heads=[[dims["layers"] - 1, h] for h in range(min(2, dims["heads"]))],
    )  # fmt: skip
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    WhisperFeatureExtractor(feature_size=dims["mels"]).save_pretrained(out)
    write_card(out, f"whisper-{dims_name}", model)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m asr_bench.make_whisper", description=__doc__.split("\n\n")[0])
    parser.add_argument("dims", choices=sorted(DIMS))
    parser.add_argument("out", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-length", type=int, default=448)
    args = parser.parse_args(argv)
    t0 = time.monotonic()
    build(args.out, args.dims, seed=args.seed, max_length=args.max_length)
    card = json.loads((args.out / "BENCH_MODEL.json").read_text())
    print(f"whisper-{args.dims}: {args.out} ({card['parameters']:,} parameters) in {time.monotonic() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
