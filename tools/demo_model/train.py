"""Train the demo model: funasr's own SenseVoiceSmall (encoder + CTC head) on the cached features.

The loss is SenseVoiceSmall.forward's own: CTC over the text frames plus cross-entropy on the 4 query frames
(language, emotion, event, text-norm tags), because SenseVoiceSmall.inference greedy-decodes those 4 frames
too. Features are the ones prep.py cached with the serving frontend. Training stops after --epochs or when
--budget-s seconds have passed, whichever comes first; the learning rate follows warm-up + cosine decay over
whichever of the two ends sooner, so a slower machine still finishes with an annealed model. model.pt is
written after every epoch; the last one is the result (no checkpoint selection on held-out data).

A handful of held-out clips are decoded after each epoch for the log only.

Usage: python tools/demo_model/train.py WORK_DIR MODEL_DIR [--epochs 18] [--budget-s 1350] [--batch-size 32]
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from pathlib import Path
from typing import Any

import torch
import yaml
from common import MONITOR_CLIPS, TEXTNORM_EMBED_ROWS, read_jsonl, word_errors
from torch.nn.utils.rnn import pad_sequence


def build_model(config: dict[str, Any], vocab_size: int, tag_ids: dict[str, int]) -> torch.nn.Module:
    """Instantiate SenseVoiceSmall through funasr's registry, exactly as AutoModel does from config.yaml."""
    import funasr.models.sense_voice.model  # noqa: F401  (registers SenseVoiceSmall)
    from funasr.register import tables

    model_cls = tables.model_classes.get(config["model"])
    model = model_cls(
        encoder=config["encoder"],
        encoder_conf=config["encoder_conf"],
        specaug=config.get("specaug"),
        specaug_conf=config.get("specaug_conf"),
        input_size=560,
        vocab_size=vocab_size,
        **config["model_conf"],
    )
    # SenseVoiceSmall.encode maps tag *token ids* of the released 25k vocabulary to query-embedding rows.
    # Point those maps at this vocabulary's ids, or every language/text-norm target lands on the wrong row.
    model.lid_int_dict = {tag_ids["<|en|>"]: model.lid_dict["en"]}
    model.textnorm_int_dict = {tag_ids[tag]: row for tag, row in TEXTNORM_EMBED_ROWS.items()}
    return model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("work_dir", type=Path)
    ap.add_argument("model_dir", type=Path)
    ap.add_argument("--epochs", type=int, default=18)
    ap.add_argument("--budget-s", type=float, default=1350.0, help="wall-clock training budget")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--warmup", type=int, default=300, help="warm-up steps")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    random.seed(args.seed)
    torch.manual_seed(args.seed)
    work: Path = args.work_dir.resolve()
    model_dir: Path = args.model_dir.resolve()

    config = yaml.safe_load((model_dir / "config.yaml").read_text())
    cache = torch.load(work / "train_feats.pt")
    feats: list[torch.Tensor] = cache["feats"]
    tokens: list[list[int]] = cache["tokens"]
    tag_ids: dict[str, int] = cache["tag_ids"]
    model = build_model(config, cache["vocab_size"], tag_ids)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"params {n_params}; vocab {cache['vocab_size']}; encoder {config['encoder_conf']}", flush=True)

    from funasr.frontends.wav_frontend import WavFrontend
    from funasr.tokenizer.sentencepiece_tokenizer import SentencepiecesTokenizer
    from funasr.utils.postprocess_utils import rich_transcription_postprocess

    frontend_conf = {k: v for k, v in config["frontend_conf"].items() if k != "cmvn_file"}
    frontend = WavFrontend(cmvn_file=str(model_dir / "am.mvn"), **frontend_conf)
    tokenizer = SentencepiecesTokenizer(bpemodel=str(model_dir / "bpe.model"))
    monitor = read_jsonl(work / "heldout.jsonl")[:MONITOR_CLIPS]

    def monitor_wer() -> float:
        """WER of SenseVoiceSmall.inference (the serving path) on a few held-out clips; logged only."""
        model.eval()
        pairs = []
        with torch.no_grad():
            for j in range(0, len(monitor), 16):
                chunk = monitor[j : j + 16]
                results, _ = model.inference(
                    [row["wav"] for row in chunk],
                    key=[row["key"] for row in chunk],
                    tokenizer=tokenizer,
                    frontend=frontend,
                    device="cpu",
                    language="auto",
                )
                pairs += [
                    (row["text"], rich_transcription_postprocess(r["text"]))
                    for row, r in zip(chunk, results, strict=True)
                ]
        model.train()
        errors, words = word_errors(pairs)
        return errors / max(words, 1)

    # Length-sorted batches (little padding); batch order is shuffled every epoch.
    order = sorted(range(len(feats)), key=lambda i: len(feats[i]))
    batches = [order[i : i + args.batch_size] for i in range(0, len(order), args.batch_size)]
    total_steps = args.epochs * len(batches)
    prefix = [tag_ids["<|en|>"], tag_ids["<|NEUTRAL|>"], tag_ids["<|Speech|>"]]

    def make_batch(idx: list[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        # Fresh tensors every time: the encoder scales its input and the model bumps lengths in place.
        x = pad_sequence([feats[i] for i in idx], batch_first=True)
        x_len = torch.tensor([len(feats[i]) for i in idx], dtype=torch.int32)
        ys = []
        for i in idx:
            textnorm = tag_ids["<|woitn|>"] if random.random() < 0.5 else tag_ids["<|withitn|>"]
            ys.append(torch.tensor([*prefix, textnorm, *tokens[i]]))
        y = pad_sequence(ys, batch_first=True, padding_value=-1)
        y_len = torch.tensor([len(t) for t in ys], dtype=torch.int32)
        return x, x_len, y, y_len

    opt = torch.optim.Adam(model.parameters(), lr=args.lr, betas=(0.9, 0.98), eps=1e-9)
    t0 = time.time()

    def lr_at(step: int) -> float:
        if step < args.warmup:
            return args.lr * (step + 1) / args.warmup
        progress = max((step - args.warmup) / max(1, total_steps - args.warmup), (time.time() - t0) / args.budget_s)
        progress = min(1.0, progress)
        return args.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress)))

    log: list[dict[str, float]] = []
    step = 0
    model.train()
    for epoch in range(1, args.epochs + 1):
        random.shuffle(batches)
        sums = {"loss": 0.0, "ctc": 0.0, "rich": 0.0}
        n = 0
        t_epoch = time.time()
        for idx in batches:
            x, x_len, y, y_len = make_batch(idx)
            for group in opt.param_groups:
                group["lr"] = lr_at(step)
            loss, stats, _ = model(x, x_len, y, y_len)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            opt.step()
            step += 1
            n += 1
            sums["loss"] += loss.item()
            sums["ctc"] += stats["loss_ctc"].item()
            sums["rich"] += stats["loss_rich"].item()
            if time.time() - t0 > args.budget_s:
                break
        torch.save(model.state_dict(), model_dir / "model.pt")
        wer = monitor_wer()
        entry = {
            "epoch": epoch,
            "step": step,
            "loss": sums["loss"] / n,
            "ctc": sums["ctc"] / n,
            "rich": sums["rich"] / n,
            "lr": lr_at(step),
            "epoch_s": time.time() - t_epoch,
            "elapsed_s": time.time() - t0,
            "monitor_wer": wer,
        }
        log.append(entry)
        print(
            f"epoch {epoch} step {step} loss {entry['loss']:.3f} ctc {entry['ctc']:.3f} "
            f"rich {entry['rich']:.4f} "
            f"lr {entry['lr']:.2e} {entry['epoch_s']:.0f} s (total {entry['elapsed_s']:.0f} s) "
            f"monitor WER ({len(monitor)} held-out clean) {100 * wer:.1f} %",
            flush=True,
        )
        if time.time() - t0 > args.budget_s:
            print("time budget reached", flush=True)
            break
    summary = {
        "params": n_params,
        "vocab_size": cache["vocab_size"],
        "train_clips": len(feats),
        "epochs_completed": len(log),
        "steps": step,
        "train_wall_s": round(time.time() - t0, 1),
        "args": {k: v for k, v in vars(args).items() if not isinstance(v, Path)},
        "log": log,
    }
    (work / "train_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"training done: {step} steps, {len(log)} epochs, {time.time() - t0:.0f} s", flush=True)


if __name__ == "__main__":
    main()
