"""Create the demo model directory's static files and cache the training features.

Writes into MODEL_DIR:
  bpe.model           sentencepiece BPE: <unk>=0 (also the CTC blank), <s>=1, </s>=2, then SenseVoice's 18
                      rich-transcription tags as user-defined symbols; every vocabulary word is one piece
  config.yaml         SenseVoiceSmall / SenseVoiceEncoderSmall with tiny dims, WavFrontend with dither 0.0
  configuration.json  file_path_metas, so funasr resolves bpe.model / am.mvn / model.pt inside the directory
  am.mvn              global CMVN (Kaldi nnet text format) computed on the training features
and into WORK_DIR/train_feats.pt the CMVN-normalised LFR features of every training clip, computed with the
very functions SenseVoiceSmall.inference calls (load_audio_text_image_video, extract_fbank, WavFrontend).

Usage: python tools/demo_model/prep.py WORK_DIR MODEL_DIR [--dim 128] [--blocks 4] [--tp-blocks 2]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import sentencepiece as spm
import torch
import yaml
from common import SAMPLE_RATE, SPECIAL_TOKENS, WORDS, read_jsonl

FEATURE_DIM = 560  # 80 mel bins x LFR m=7


def build_config(dim: int, blocks: int, tp_blocks: int) -> dict[str, Any]:
    """SenseVoiceSmall's config.yaml structure with tiny encoder dims (the release uses 512/2048/50/20)."""
    return {
        "model": "SenseVoiceSmall",
        "model_conf": {"length_normalized_loss": True, "sos": 1, "eos": 2, "ignore_id": -1},
        "encoder": "SenseVoiceEncoderSmall",
        "encoder_conf": {
            "output_size": dim,
            "attention_heads": 4,
            "linear_units": 2 * dim,
            "num_blocks": blocks,
            "tp_blocks": tp_blocks,
            "dropout_rate": 0.1,
            "positional_dropout_rate": 0.1,
            "attention_dropout_rate": 0.1,
            "input_layer": "pe",
            "pos_enc_class": "SinusoidalPositionEncoder",
            "normalize_before": True,
            "kernel_size": 11,
            "sanm_shfit": 0,
            "selfattention_layer_type": "sanm",
        },
        "specaug": "SpecAugLFR",
        "specaug_conf": {
            "apply_time_warp": False,
            "time_warp_window": 5,
            "time_warp_mode": "bicubic",
            "apply_freq_mask": True,
            "freq_mask_width_range": [0, 20],
            "lfr_rate": 6,
            "num_freq_mask": 1,
            "apply_time_mask": True,
            "time_mask_width_range": [0, 3],
            "num_time_mask": 1,
        },
        "tokenizer": "SentencepiecesTokenizer",
        "tokenizer_conf": {"bpemodel": None, "unk_symbol": "<unk>", "split_with_space": True},
        "frontend": "WavFrontend",
        "frontend_conf": {
            "fs": SAMPLE_RATE,
            "window": "hamming",
            "n_mels": 80,
            "frame_length": 25,
            "frame_shift": 10,
            "lfr_m": 7,
            "lfr_n": 6,
            "cmvn_file": None,
            "dither": 0.0,  # WavFrontend's default 1.0 adds random noise: non-deterministic transcripts
        },
    }


CONFIGURATION_JSON: dict[str, Any] = {
    "framework": "pytorch",
    "task": "auto-speech-recognition",
    "model": {"type": "funasr"},
    "pipeline": {"type": "funasr-pipeline"},
    "file_path_metas": {
        "init_param": "model.pt",
        "config": "config.yaml",
        "tokenizer_conf": {"bpemodel": "bpe.model"},
        "frontend_conf": {"cmvn_file": "am.mvn"},
    },
}


def train_tokenizer(texts: list[str], model_dir: Path) -> spm.SentencePieceProcessor:
    """BPE over the training transcripts; asserts every vocabulary word is a single piece."""
    corpus = model_dir / "_bpe_corpus.txt"
    corpus.write_text("\n".join(texts) + "\n", encoding="utf-8")
    spm.SentencePieceTrainer.train(
        input=str(corpus),
        model_prefix=str(model_dir / "bpe"),
        model_type="bpe",
        vocab_size=120,
        hard_vocab_limit=False,
        character_coverage=1.0,
        user_defined_symbols=list(SPECIAL_TOKENS),
        unk_id=0,  # <unk> doubles as the CTC blank (SenseVoiceSmall: blank_id=0)
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        num_threads=2,
        minloglevel=2,
    )
    corpus.unlink()
    (model_dir / "bpe.vocab").unlink(missing_ok=True)
    sp = spm.SentencePieceProcessor(model_file=str(model_dir / "bpe.model"))
    assert sp.id_to_piece(0) == "<unk>", "id 0 must be <unk> (the CTC blank)"
    for word in WORDS:
        pieces = sp.encode_as_pieces(word)
        assert len(pieces) == 1, f"{word!r} is not a single piece: {pieces}"
    for tag in SPECIAL_TOKENS:
        assert sp.piece_to_id(tag) != sp.unk_id(), f"{tag} is not in the vocabulary"
    return sp


def write_cmvn(path: Path, shift: np.ndarray, scale: np.ndarray) -> None:
    """Kaldi nnet1 text format read by funasr.frontends.wav_frontend.load_cmvn."""
    dim = len(shift)

    def fmt(v: np.ndarray) -> str:
        return " ".join(f"{x:.6f}" for x in v)

    path.write_text(
        f"<Nnet>\n<Splice> {dim} {dim}\n[ 0 ]\n"
        f"<AddShift> {dim} {dim}\n<LearnRateCoef> 0 [ {fmt(shift)} ]\n"
        f"<Rescale> {dim} {dim}\n<LearnRateCoef> 0 [ {fmt(scale)} ]\n</Nnet>\n",
        encoding="utf-8",
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("work_dir", type=Path)
    ap.add_argument("model_dir", type=Path)
    ap.add_argument("--dim", type=int, default=128, help="encoder output size")
    ap.add_argument("--blocks", type=int, default=4, help="encoder blocks")
    ap.add_argument("--tp-blocks", type=int, default=2, help="encoder time-pooling ('tp') blocks")
    args = ap.parse_args()
    torch.set_num_threads(2)
    t0 = time.time()
    work: Path = args.work_dir.resolve()
    model_dir: Path = args.model_dir.resolve()
    model_dir.mkdir(parents=True, exist_ok=True)

    train = read_jsonl(work / "train.jsonl")
    sp = train_tokenizer([row["text"] for row in train], model_dir)
    print(f"vocab size {sp.get_piece_size()}; words: { {w: sp.encode(w)[0] for w in WORDS} }")

    config = build_config(args.dim, args.blocks, args.tp_blocks)
    with (model_dir / "config.yaml").open("w", encoding="utf-8") as f:
        yaml.safe_dump(config, f, sort_keys=False)
    (model_dir / "configuration.json").write_text(json.dumps(CONFIGURATION_JSON, indent=2) + "\n")

    # funasr imports are slow (~10 s): only after the cheap steps succeeded.
    from funasr.frontends.wav_frontend import WavFrontend, apply_cmvn, load_cmvn
    from funasr.utils.load_utils import extract_fbank, load_audio_text_image_video

    frontend_conf = {k: v for k, v in config["frontend_conf"].items() if k != "cmvn_file"}
    raw_frontend = WavFrontend(**frontend_conf)

    def raw_features(wav: str) -> torch.Tensor:
        audio = load_audio_text_image_video(wav, fs=SAMPLE_RATE)
        feats, _ = extract_fbank([audio], frontend=raw_frontend)
        return feats[0]

    raw = [raw_features(row["wav"]) for row in train]
    print(f"fbank + LFR for {len(raw)} clips in {time.time() - t0:.0f} s", flush=True)
    stacked = torch.cat(raw).double()
    assert stacked.shape[1] == FEATURE_DIM
    mean, std = stacked.mean(0), stacked.std(0)
    write_cmvn(model_dir / "am.mvn", (-mean).numpy(), (1.0 / (std + 1e-5)).numpy())

    cmvn = load_cmvn(str(model_dir / "am.mvn"))
    feats = [apply_cmvn(r.clone(), cmvn) for r in raw]
    # The cached features must be bit-identical to what AutoModel's frontend (with cmvn_file) produces.
    serving_frontend = WavFrontend(cmvn_file=str(model_dir / "am.mvn"), **frontend_conf)
    for i in range(min(3, len(train))):
        audio = load_audio_text_image_video(train[i]["wav"], fs=SAMPLE_RATE)
        ref, _ = extract_fbank([audio], frontend=serving_frontend)
        assert torch.equal(ref[0], feats[i]), f"cached features differ from the serving frontend ({train[i]['key']})"

    tag_ids = {tag: sp.piece_to_id(tag) for tag in ("<|en|>", "<|NEUTRAL|>", "<|Speech|>", "<|woitn|>", "<|withitn|>")}
    torch.save(
        {
            "feats": feats,
            "tokens": [sp.encode(row["text"]) for row in train],
            "keys": [row["key"] for row in train],
            "tag_ids": tag_ids,
            "vocab_size": sp.get_piece_size(),
        },
        work / "train_feats.pt",
    )
    frames = sum(len(f) for f in feats)
    print(f"cached {len(feats)} clips, {frames} LFR frames; prep took {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
