"""Shared definitions for the demo-model pipeline: vocabulary, voice grids, special tokens, WER.

The demo model recognises English digit sequences and six command words. Every script in this
directory imports its constants from here so that synthesis, tokenizer, training and evaluation
can never disagree.
"""

from __future__ import annotations

import json
import os
import re
import socket
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

SAMPLE_RATE = 16000

DIGITS: tuple[str, ...] = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
COMMANDS: tuple[str, ...] = ("yes", "no", "stop", "go", "hello", "world")
WORDS: tuple[str, ...] = DIGITS + COMMANDS

# espeak-ng voice = base language voice + optional "+variant". The held-out split only uses
# (base, variant, speed, pitch) combinations that never occur in training: every held-out clip has a
# speed and pitch from a grid disjoint from training's, and an unseen base voice, an unseen variant, or both.
TRAIN_BASES: tuple[str, ...] = (
    "en-us",
    "en-gb",
    "en-gb-scotland",
    "en-gb-x-rp",
    "en-gb-x-gbclan",
    "en-gb-x-gbcwmd",
)
HELDOUT_BASES: tuple[str, ...] = ("en-029", "en-us-nyc")
TRAIN_VARIANTS: tuple[str, ...] = (
    "", "m1", "m2", "m3", "m4", "m5", "m7", "f1", "f2", "f3", "f5", "klatt", "klatt2", "klatt4",
    "Alex", "Andy", "adam", "anika", "aunty", "belinda", "benjamin", "boris", "caleb", "ed",
    "edward", "iven", "john", "linda", "max", "paul", "rob", "robert", "steph", "travis", "zac",
)  # fmt: skip
HELDOUT_VARIANTS: tuple[str, ...] = ("m6", "f4", "klatt3", "Annie", "david", "steph2", "michel", "quincy")
TRAIN_SPEEDS: tuple[int, ...] = (130, 140, 150, 160, 170, 180, 190)  # words per minute
HELDOUT_SPEEDS: tuple[int, ...] = (135, 145, 155, 165, 175, 185)
TRAIN_PITCHES: tuple[int, ...] = (30, 40, 50, 60, 70)  # espeak-ng -p, 0..99
HELDOUT_PITCHES: tuple[int, ...] = (35, 45, 55, 65)

# SenseVoice's rich-transcription tags. They are sentencepiece user-defined symbols, so each tag is one
# token, exactly as in the released SenseVoiceSmall vocabulary. Ids 0/1/2 are <unk>/<s>/</s>; <unk> (0)
# doubles as the CTC blank, as in SenseVoiceSmall (blank_id=0).
SPECIAL_TOKENS: tuple[str, ...] = (
    "<|zh|>", "<|en|>", "<|yue|>", "<|ja|>", "<|ko|>", "<|nospeech|>",
    "<|HAPPY|>", "<|SAD|>", "<|ANGRY|>", "<|NEUTRAL|>", "<|EMO_UNKNOWN|>",
    "<|Speech|>", "<|BGM|>", "<|Laughter|>", "<|Applause|>", "<|Event_UNK|>",
    "<|withitn|>", "<|woitn|>",
)  # fmt: skip

# SenseVoiceSmall.inference prepends 4 query frames (language, event+emotion x2, text norm) to the encoder
# input; their outputs are greedy-decoded as tags. Index of <|withitn|> / <|woitn|> in the model's embedding.
TEXTNORM_EMBED_ROWS: dict[str, int] = {"<|withitn|>": 14, "<|woitn|>": 15}

# Held-out clips train.py decodes after every epoch, for the log only (never used to pick a checkpoint).
MONITOR_CLIPS = 90


def normalize(text: str) -> str:
    """Lower-case, drop everything but letters, digits, apostrophes and spaces, collapse whitespace."""
    return " ".join(re.sub(r"[^a-z0-9' ]+", " ", text.lower()).split())


def block_network() -> None:
    """Make every outbound IP connection (and DNS lookup) in this process fail loudly.

    The pipeline is offline by design; this turns an accidental model-hub or package-index call into an
    immediate error instead of a silent download or a hang.
    """
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "MODELSCOPE_OFFLINE"):
        os.environ.setdefault(var, "1")

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise OSError(f"network access is disabled in the demo-model tools (attempted: {args[:2]!r})")

    original_connect = socket.socket.connect

    def connect(self: socket.socket, address: Any) -> Any:
        if self.family in (socket.AF_INET, socket.AF_INET6):
            refuse(address)
        return original_connect(self, address)

    socket.getaddrinfo = refuse  # type: ignore[assignment]
    socket.create_connection = refuse  # type: ignore[assignment]
    socket.socket.connect = connect  # type: ignore[method-assign]


def edit_distance(ref: Sequence[str], hyp: Sequence[str]) -> int:
    """Levenshtein distance between two token sequences (substitutions, insertions, deletions cost 1)."""
    row = list(range(len(hyp) + 1))
    for i in range(1, len(ref) + 1):
        diag, row[0] = row[0], i
        for j in range(1, len(hyp) + 1):
            above = row[j]
            row[j] = min(row[j] + 1, row[j - 1] + 1, diag + (ref[i - 1] != hyp[j - 1]))
            diag = above
    return row[-1]


def word_errors(pairs: Iterable[tuple[str, str]]) -> tuple[int, int]:
    """Total word edit distance and reference word count over (reference, hypothesis) pairs."""
    errors = words = 0
    for ref, hyp in pairs:
        errors += edit_distance(ref.split(), hyp.split())
        words += len(ref.split())
    return errors, words


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    with path.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
