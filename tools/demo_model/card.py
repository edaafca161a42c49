"""Write MODEL_CARD.md into a demo model directory from the build's own records.

Reads WORK_DIR/train_summary.json (train.py), WORK_DIR/eval.json (evaluate.py), the manifests (synth.py) and
MODEL_DIR/config.yaml; every number in the card comes from those files.

Usage: python tools/demo_model/card.py WORK_DIR MODEL_DIR
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import sentencepiece as spm
import yaml
from common import (
    COMMANDS,
    DIGITS,
    HELDOUT_BASES,
    HELDOUT_PITCHES,
    HELDOUT_SPEEDS,
    HELDOUT_VARIANTS,
    MONITOR_CLIPS,
    TRAIN_BASES,
    TRAIN_PITCHES,
    TRAIN_SPEEDS,
    TRAIN_VARIANTS,
    read_jsonl,
)
from fixtures import DEMO_TEXT, DEMO_VOICE

BUILD_COMMAND = "tools/demo_model/build.sh inference/asr_inference/models/demo /tmp/demo_work"


def pct(x: float) -> str:
    return f"{100 * x:.2f} %"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("work_dir", type=Path)
    ap.add_argument("model_dir", type=Path)
    args = ap.parse_args()
    work: Path = args.work_dir.resolve()
    model_dir: Path = args.model_dir.resolve()

    train = json.loads((work / "train_summary.json").read_text())
    ev = json.loads((work / "eval.json").read_text())
    config = yaml.safe_load((model_dir / "config.yaml").read_text())
    enc = config["encoder_conf"]
    n_train = len(read_jsonl(work / "train.jsonl"))
    n_heldout = len(read_jsonl(work / "heldout.jsonl"))
    size_kb = sum(p.stat().st_size for p in model_dir.iterdir() if p.name != "MODEL_CARD.md") / 1024
    clean, noisy = ev["heldout"], ev["heldout_noisy"]
    last = train["log"][-1]
    vocab_size = spm.SentencePieceProcessor(model_file=str(model_dir / "bpe.model")).get_piece_size()
    a = train["args"]

    rows = []
    for subset in ("all", "unseen_base", "unseen_variant", "both_unseen"):
        c, n = clean["metrics"][subset], noisy["metrics"][subset]
        rows.append(
            f"| {subset} | {c['clips']} | {pct(c['wer'])} ({c['word_errors']}/{c['words']}) "
            f"| {pct(n['wer'])} ({n['word_errors']}/{n['words']}) "
            f"| {pct(c['sentence_acc'])} / {pct(n['sentence_acc'])} |"
        )
    table = "\n".join(rows)
    epochs = "\n".join(
        f"| {e['epoch']} | {e['step']} | {e['ctc']:.3f} | {e['rich']:.4f} | {e['elapsed_s']:.0f} "
        f"| {pct(e['monitor_wer'])} |"
        for e in train["log"]
    )

    card = f"""# Demo model: tiny SenseVoiceSmall for English digits and commands

The model `asr-serve` loads when no model is configured. It exists so that the first command a newcomer runs
shows the product working, with no model hub and no GPU. **It is not a general speech recogniser**: it knows
16 words, and was trained only on synthetic espeak-ng speech.

- Vocabulary: the digits {" ".join(DIGITS)} and the commands {" ".join(COMMANDS)}.
- Architecture: funasr's own `SenseVoiceSmall` class with `SenseVoiceEncoderSmall` (SAN-M), loaded by
  `funasr.AutoModel` through its normal path (`config.yaml` + `configuration.json` `file_path_metas`).
  Tiny dims: output size {enc["output_size"]}, {enc["attention_heads"]} heads, linear units {enc["linear_units"]},
  {enc["num_blocks"]} + {enc["tp_blocks"]} blocks (the release: 512 / 4 / 2048 / 50 + 20).
  **{ev["params"]:,} parameters**; the directory is {size_kb:.0f} KB.
- Input: 16 kHz mono; 80-dim log-mel fbank, LFR m=7/n=6 (560-dim), global CMVN (`am.mvn`, computed on the
  training features); `dither: 0.0`, so transcripts are deterministic.
- Tokens: sentencepiece BPE (`bpe.model`, {vocab_size} pieces) that keeps SenseVoice's
  layout: `<unk>` = 0 is also the CTC blank, `<s>` = 1, `</s>` = 2, SenseVoice's 18 rich-transcription tags
  (`<|en|>`, `<|NEUTRAL|>`, `<|Speech|>`, `<|woitn|>`, ...) as single tokens, and every vocabulary word as one
  piece. Raw output looks like SenseVoice's: `<|en|><|NEUTRAL|><|Speech|><|woitn|> one two three`
  (funasr's `rich_transcription_postprocess` strips the tags).

## Held-out word error rate

Measured by `tools/demo_model/evaluate.py` through `funasr.AutoModel.generate` (CPU, network blocked) on
{n_heldout} held-out clips and a noisy copy of each (white/pink noise, 15-25 dB SNR). Every held-out clip uses a
voice/speed/pitch combination never used in training: speed and pitch come from a grid disjoint from training's,
and the espeak-ng voice has an unseen base voice (`unseen_base`), an unseen variant (`unseen_variant`), or both.

| subset | clips | WER clean | WER noisy | sentence accuracy clean / noisy |
| --- | --- | --- | --- | --- |
{table}

**Held-out WER: {pct(clean["metrics"]["all"]["wer"])} clean, {pct(noisy["metrics"]["all"]["wer"])} noisy.**
Batched generation (batch 16) gave the same text as one clip at a time for
{clean["batched_equals_single"]}/{clean["clips"]} clean and {noisy["batched_equals_single"]}/{noisy["clips"]}
noisy clips.

The README sample `samples/demo.wav` ("{DEMO_TEXT}", held-out voice {DEMO_VOICE[0]}, {DEMO_VOICE[1]} wpm, pitch
{DEMO_VOICE[2]}) is not part of this evaluation: its voice was picked for the demo, so it measures nothing.

## Data recipe (`tools/demo_model/synth.py`)

{n_train} training clips synthesised with espeak-ng, resampled to 16 kHz mono PCM16: 75 % digit strings of 2-6
digits, 25 % 1-4 words from digits + commands; 0.05-0.4 s of silence either side, peak level 0.2-0.9; 70 % with
white, pink or brown noise at 10-40 dB SNR.

- training voices: bases {", ".join(TRAIN_BASES)} x variants (none), {", ".join(v for v in TRAIN_VARIANTS if v)};
  speeds {", ".join(map(str, TRAIN_SPEEDS))} wpm; pitches {", ".join(map(str, TRAIN_PITCHES))}
- held-out only: bases {", ".join(HELDOUT_BASES)}; variants {", ".join(HELDOUT_VARIANTS)};
  speeds {", ".join(map(str, HELDOUT_SPEEDS))}; pitches {", ".join(map(str, HELDOUT_PITCHES))}

## Training (`tools/demo_model/train.py`)

Encoder + CTC head trained with `SenseVoiceSmall.forward`'s own loss (CTC on the text frames + cross-entropy
on the 4 query frames that `SenseVoiceSmall.inference` greedy-decodes as tags), on features computed by the
same functions `SenseVoiceSmall.inference` calls. SpecAugLFR, Adam (lr {a["lr"]}, {a["warmup"]} warm-up steps,
cosine decay), batch {a["batch_size"]}, {a["threads"]} CPU threads. {train["epochs_completed"]} epochs /
{train["steps"]} steps in **{train["train_wall_s"] / 60:.1f} minutes** of training on a 2-core CPU (budget
{a["budget_s"]:.0f} s); final CTC loss {last["ctc"]:.3f}. The last checkpoint is the model; no checkpoint was
selected on held-out data (the per-epoch monitor WER below, on the first {MONITOR_CLIPS} clean held-out clips,
is logged only).

| epoch | step | CTC loss | tag loss | elapsed s | monitor WER |
| --- | --- | --- | --- | --- | --- |
{epochs}

## Reproduce

```sh
{BUILD_COMMAND}
```

runs these steps (each can also be run on its own):

```sh
W=/tmp/demo_work M=inference/asr_inference/models/demo
python tools/demo_model/synth.py $W --train {n_train} --heldout {n_heldout}  # espeak-ng corpus
python tools/demo_model/prep.py $W $M  # bpe.model, config, am.mvn, features
python tools/demo_model/train.py $W $M --epochs {a["epochs"]} --budget-s {a["budget_s"]:.0f}  # model.pt
python tools/demo_model/evaluate.py $W $M  # held-out WER via AutoModel.generate
python tools/demo_model/card.py $W $M  # this card
python tools/demo_model/fixtures.py $W $M  # tests/data/demo_heldout, samples/
```

That is synth -> prep -> train -> evaluate -> card -> fixtures (about 25-30 minutes on 2 CPU cores, no network;
the corpus stays in the work dir, outside git). `fixtures.py` also refreshes `tests/data/demo_heldout/` and
`samples/demo.wav` / `samples/demo.txt`. Results vary slightly between runs (thread scheduling, time budget).

## Limits

Synthetic voices only; expect real human speech, other words, music or long audio to come out wrong (often
as a string of digits). There is no language identification beyond `<|en|>`, and no emotion or event
detection: the tags are constant.
"""
    (model_dir / "MODEL_CARD.md").write_text(card)
    print(f"wrote {model_dir / 'MODEL_CARD.md'}")


if __name__ == "__main__":
    main()
