"""What the random-weight transformers model builders (make_whisper, make_glm_asr) share: a small byte-level BPE
trained offline on a few English words (the text tokens; special tokens go after them, as in released
vocabularies), and the model card asr-bench reads."""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

WORDS = (
    "the a of to and in is it you that he was for on are with as his they be at one have this from or had by "
    "hot word but what some we can out other were all there when up use your how said an each she which do"
).split()


def byte_level_bpe(seed: int, specials: Sequence[str], extra_lines: Sequence[str] = (), vocab_size: int = 400) -> Any:
    """A `tokenizers.Tokenizer`: byte-level BPE on random sentences of `WORDS` (and `extra_lines`), then
    `specials` added after the text tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    rng = random.Random(seed)
    corpus = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 14))) for _ in range(2000)]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([*corpus, *extra_lines], trainer)
    tok.add_special_tokens(list(specials))
    return tok


def write_card(out: Path, architecture: str, model: Any) -> None:
    """BENCH_MODEL.json: what asr-bench records of a built model (and how it knows the directory is complete)."""
    params = sum(p.numel() for p in model.parameters())
    card = {"architecture": architecture, "parameters": params, "weights": "random"}
    (out / "BENCH_MODEL.json").write_text(json.dumps(card, indent=1))
