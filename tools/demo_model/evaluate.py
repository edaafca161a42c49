"""Evaluate a demo model directory on the held-out sets through funasr.AutoModel.generate (offline).

Loads MODEL_DIR the way a user would (AutoModel(model=dir, disable_update=True, device="cpu")), checks that
every weight in model.pt really landed in the model (funasr only logs mismatches), then transcribes the clean
and noisy held-out clips one at a time and in batches of 16, and reports word error rate overall and per
held-out subset (unseen base voice / unseen variant / both). Network access is blocked for the whole run.

Writes WORK_DIR/eval.json (metrics) and WORK_DIR/eval_<split>.jsonl (every hypothesis).

Usage: python tools/demo_model/evaluate.py WORK_DIR MODEL_DIR
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from common import block_network, edit_distance, normalize, read_jsonl, write_jsonl

SPLITS = ("heldout", "heldout_noisy")


def load_model(model_dir: Path, threads: int) -> Any:
    import torch
    from funasr import AutoModel

    torch.set_num_threads(threads)
    model = AutoModel(model=str(model_dir), disable_update=True, device="cpu", disable_pbar=True, log_level="ERROR")
    saved = torch.load(model_dir / "model.pt", map_location="cpu")
    loaded = model.model.state_dict()
    bad = [k for k, v in loaded.items() if k not in saved or not torch.equal(v, saved[k])]
    if bad or set(saved) != set(loaded):
        raise SystemExit(f"model.pt did not load cleanly into {type(model.model).__name__}: {bad[:5]}")
    return model


def transcribe(model: Any, wavs: list[str], batch_size: int, threads: int) -> list[str]:
    """Postprocessed transcripts, in input order."""
    from funasr.utils.postprocess_utils import rich_transcription_postprocess

    results = model.generate(input=wavs, batch_size=batch_size, language="auto", use_itn=False, ncpu=threads)
    assert len(results) == len(wavs)
    return [rich_transcription_postprocess(r["text"]) for r in results]


def score(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """WER / sentence accuracy overall and per held-out subset."""
    groups: dict[str, list[int]] = {}
    for row in rows:
        ref, hyp = row["text"].split(), normalize(row["hyp"]).split()
        errors = edit_distance(ref, hyp)
        for group in ("all", row["subset"]):
            g = groups.setdefault(group, [0, 0, 0, 0])
            g[0] += errors
            g[1] += len(ref)
            g[2] += errors == 0
            g[3] += 1
    return {
        name: {"wer": e / w, "word_errors": e, "words": w, "sentence_acc": ok / n, "clips": n}
        for name, (e, w, ok, n) in groups.items()
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("work_dir", type=Path)
    ap.add_argument("model_dir", type=Path)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    block_network()
    work: Path = args.work_dir.resolve()
    model_dir: Path = args.model_dir.resolve()

    t0 = time.time()
    model = load_model(model_dir, args.threads)
    print(f"loaded {model_dir} in {time.time() - t0:.1f} s", flush=True)
    report: dict[str, Any] = {
        "params": sum(p.numel() for p in model.model.parameters()),
        "model_class": type(model.model).__name__,
    }
    for split in SPLITS:
        rows = read_jsonl(work / f"{split}.jsonl")
        wavs = [row["wav"] for row in rows]
        t = time.time()
        single = transcribe(model, wavs, batch_size=1, threads=args.threads)
        t_single = time.time() - t
        t = time.time()
        batched = transcribe(model, wavs, batch_size=16, threads=args.threads)
        t_batched = time.time() - t
        for row, hyp in zip(rows, single, strict=True):
            row["hyp"] = hyp
        metrics = score(rows)
        same = sum(a == b for a, b in zip(single, batched, strict=True))
        report[split] = {
            "metrics": metrics,
            "batched_equals_single": same,
            "clips": len(rows),
            "seconds_single": round(t_single, 1),
            "seconds_batch16": round(t_batched, 1),
        }
        write_jsonl(work / f"eval_{split}.jsonl", rows)
        print(f"== {split}: {len(rows)} clips; batch-16 text == batch-1 text for {same}/{len(rows)}")
        for name, m in metrics.items():
            print(
                f"   {name:15s} WER {100 * m['wer']:5.2f} % ({m['word_errors']}/{m['words']} words)  "
                f"sentence acc {100 * m['sentence_acc']:5.1f} % (n={m['clips']})"
            )
        wrong = [row for row in rows if normalize(row["hyp"]) != row["text"]]
        for row in wrong[:6]:
            print(f"   error: {row['voice']} s={row['speed']} p={row['pitch']} ref={row['text']!r} hyp={row['hyp']!r}")
    (work / "eval.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"evaluation took {time.time() - t0:.0f} s -> {work / 'eval.json'}")


if __name__ == "__main__":
    main()
