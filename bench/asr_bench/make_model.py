"""Random-weight funasr model directories with the published dimensions of the real models, for speed runs.

Speed does not depend on the weights, only on the architecture and the shapes, so a model with SenseVoiceSmall's
(or Paraformer-large's) real dimensions and random weights times the same as the released one, with no hub.

    python -m asr_bench.make_model sensevoice-small  bench-results/models/sensevoice-small-random
    python -m asr_bench.make_model paraformer-large  bench-results/models/paraformer-large-random

Each directory loads offline through `funasr.AutoModel` (config.yaml + model.pt + tokenizer + am.mvn
[+ configuration.json]), like the embedded demo model.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

SENSEVOICE_SPECIAL = [
    "<|zh|>", "<|en|>", "<|yue|>", "<|ja|>", "<|ko|>", "<|nospeech|>",
    "<|HAPPY|>", "<|SAD|>", "<|ANGRY|>", "<|NEUTRAL|>", "<|EMO_UNKNOWN|>",
    "<|Speech|>", "<|BGM|>", "<|Laughter|>", "<|Applause|>", "<|Event_UNK|>",
    "<|withitn|>", "<|woitn|>",
]  # fmt: skip
FRONTEND_CONF: dict[str, Any] = {
    "fs": 16000, "window": "hamming", "n_mels": 80, "frame_length": 25, "frame_shift": 10,
    "lfr_m": 7, "lfr_n": 6, "dither": 0.0,
}  # fmt: skip
# SenseVoiceSmall as released (iic/SenseVoiceSmall config.yaml): 234 M parameters.
SENSEVOICE_SMALL_ENCODER: dict[str, Any] = {
    "output_size": 512, "attention_heads": 4, "linear_units": 2048, "num_blocks": 50, "tp_blocks": 20,
    "dropout_rate": 0.1, "positional_dropout_rate": 0.1, "attention_dropout_rate": 0.1, "input_layer": "pe",
    "pos_enc_class": "SinusoidalPositionEncoder", "normalize_before": True, "kernel_size": 11, "sanm_shfit": 0,
    "selfattention_layer_type": "sanm",
}  # fmt: skip
SENSEVOICE_VOCAB = 25055
# Paraformer-large as released (paraformer-zh): 220 M parameters.
PARAFORMER_LARGE_ENCODER: dict[str, Any] = {
    k: v for k, v in SENSEVOICE_SMALL_ENCODER.items() if k not in ("tp_blocks", "num_blocks")
} | {"num_blocks": 50}
PARAFORMER_LARGE_DECODER: dict[str, Any] = {
    "attention_heads": 4, "linear_units": 2048, "num_blocks": 16, "dropout_rate": 0.1,
    "positional_dropout_rate": 0.1, "self_attention_dropout_rate": 0.1, "src_attention_dropout_rate": 0.1,
    "att_layer_num": 16, "kernel_size": 11, "sanm_shfit": 0,
}  # fmt: skip
PARAFORMER_VOCAB = 8404
WORDS = [
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "zero",
    "yes",
    "no",
    "stop",
    "go",
    "hello",
    "world",
    "the",
    "a",
    "of",
    "to",
    "and",
    "in",
]


def seed_all(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def write_sensevoice_dir(out: Path, encoder_conf: dict[str, Any], vocab: int) -> Any:
    """Everything of a SenseVoiceSmall directory but the tokenizer (`out/bpe.model`, already trained):
    config.yaml, configuration.json, am.mvn and random weights in model.pt. Returns the model."""
    import funasr.models.sense_voice.model  # noqa: F401  (registers SenseVoiceSmall)
    import torch
    import yaml
    from funasr.register import tables

    config: dict[str, Any] = {
        "model": "SenseVoiceSmall",
        "model_conf": {"length_normalized_loss": True, "sos": 1, "eos": 2, "ignore_id": -1},
        "encoder": "SenseVoiceEncoderSmall",
        "encoder_conf": encoder_conf,
        "tokenizer": "SentencepiecesTokenizer",
        "tokenizer_conf": {"bpemodel": None, "unk_symbol": "<unk>", "split_with_space": True},
        "frontend": "WavFrontend",
        "frontend_conf": {**FRONTEND_CONF, "cmvn_file": None},
    }
    (out / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    write_configuration_json(
        out,
        {
            "init_param": "model.pt",
            "config": "config.yaml",
            "tokenizer_conf": {"bpemodel": "bpe.model"},
            "frontend_conf": {"cmvn_file": "am.mvn"},
        },
    )
    write_cmvn(out / "am.mvn")
    model = tables.model_classes.get("SenseVoiceSmall")(
        encoder=config["encoder"], encoder_conf=encoder_conf, input_size=560, vocab_size=vocab, **config["model_conf"]
    )
    with torch.no_grad():
        model.ctc.ctc_lo.bias[0] -= 2.0  # less blank-dominated random output => non-empty text
    torch.save(model.state_dict(), out / "model.pt")
    return model


def write_configuration_json(out: Path, file_path_metas: dict[str, Any]) -> None:
    """The hub layout: `file_path_metas` makes funasr resolve relative names in config.yaml against the dir."""
    body = {"framework": "pytorch", "task": "auto-speech-recognition", "model": {"type": "funasr"}}
    (out / "configuration.json").write_text(json.dumps({**body, "file_path_metas": file_path_metas}))


def write_cmvn(path: Path) -> None:
    """am.mvn from the features of a little noise + a tone (560-dim after LFR)."""
    import torch
    from funasr.frontends.wav_frontend import WavFrontend

    fe = WavFrontend(**FRONTEND_CONF)
    t = np.arange(16000 * 3) / 16000
    waves = [np.random.randn(len(t)).astype(np.float32) * 0.05, (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)]
    feats = torch.cat([fe(torch.from_numpy(w)[None], torch.tensor([len(w)]))[0][0] for w in waves]).numpy()
    shift, scale = -feats.mean(0), 1.0 / (feats.std(0) + 1e-5)
    dim = feats.shape[1]

    def fmt(v: np.ndarray) -> str:
        return " ".join(f"{x:.6f}" for x in v)

    path.write_text(
        f"<Nnet>\n<Splice> {dim} {dim}\n[ 0 ]\n<AddShift> {dim} {dim}\n<LearnRateCoef> 0 [ {fmt(shift)} ]\n"
        f"<Rescale> {dim} {dim}\n<LearnRateCoef> 0 [ {fmt(scale)} ]\n</Nnet>\n"
    )


def _sentencepiece(out: Path, vocab_size: int) -> int:
    """A BPE model with exactly `vocab_size` pieces (the CTC layer's width): a small trained core plus filler
    user-defined pieces, so every id the random CTC head can emit maps to a piece."""
    import sentencepiece as spm

    corpus = out / "_corpus.txt"
    corpus.write_text(
        "\n".join(" ".join(random.choice(WORDS) for _ in range(random.randint(4, 14))) for _ in range(2000))
    )
    fillers = vocab_size - 200
    for _ in range(4):  # the trainer may make fewer core pieces than asked: top up with fillers until exact
        spm.SentencePieceTrainer.train(
            input=str(corpus), model_prefix=str(out / "bpe"), model_type="bpe", vocab_size=vocab_size,
            character_coverage=1.0, user_defined_symbols=SENSEVOICE_SPECIAL + [f"<x{i}>" for i in range(fillers)],
            unk_id=0, bos_id=1, eos_id=2, pad_id=-1, num_threads=2, minloglevel=2, hard_vocab_limit=False,
        )  # fmt: skip
        size = spm.SentencePieceProcessor(model_file=str(out / "bpe.model")).get_piece_size()
        if size >= vocab_size:
            break
        fillers += vocab_size - size
    corpus.unlink()
    (out / "bpe.vocab").unlink(missing_ok=True)
    return int(spm.SentencePieceProcessor(model_file=str(out / "bpe.model")).get_piece_size())


def build_sensevoice_small(out: Path, seed: int = 0) -> Path:
    """SenseVoiceSmall dimensions (encoder 512/4/2048/50+20, kernel 11, 560-dim input, vocab 25055)."""
    seed_all(seed)
    out.mkdir(parents=True, exist_ok=True)
    vocab = _sentencepiece(out, SENSEVOICE_VOCAB)
    model = write_sensevoice_dir(out, SENSEVOICE_SMALL_ENCODER, vocab)
    _card(out, "SenseVoiceSmall", model, vocab)
    return out


def write_paraformer_dir(
    out: Path,
    tokens: list[str],
    encoder_conf: dict[str, Any],
    decoder_conf: dict[str, Any],
    cmvn_from: Path | None = None,
) -> Any:
    """A Paraformer directory (SANM encoder, SANM decoder, CifPredictorV2, char tokens): tokens.json,
    config.yaml, am.mvn (written, or copied from `cmvn_from`) and random weights in model.pt. Returns the model."""
    import shutil

    import funasr.models.paraformer.cif_predictor
    import funasr.models.paraformer.decoder
    import funasr.models.paraformer.model
    import funasr.models.sanm.encoder  # noqa: F401
    import torch
    import yaml
    from funasr.register import tables

    (out / "tokens.json").write_text(json.dumps(tokens, ensure_ascii=False))
    idim = encoder_conf["output_size"]
    config: dict[str, Any] = {
        "model": "Paraformer",
        "model_conf": {"ctc_weight": 0.0, "lsm_weight": 0.1, "length_normalized_loss": True,
                       "predictor_weight": 1.0, "predictor_bias": 1, "sampling_ratio": 0.75},
        "encoder": "SANMEncoder",
        "encoder_conf": encoder_conf,
        "decoder": "ParaformerSANMDecoder",
        "decoder_conf": decoder_conf,
        "predictor": "CifPredictorV2",
        "predictor_conf": {"idim": idim, "threshold": 1.0, "l_order": 1, "r_order": 1, "tail_threshold": 0.45},
        "frontend": "WavFrontend",
        "frontend_conf": FRONTEND_CONF,
        "tokenizer": "CharTokenizer",
        "tokenizer_conf": {"unk_symbol": "<unk>"},
    }  # fmt: skip
    (out / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False, allow_unicode=True))
    if cmvn_from is not None:
        shutil.copy(cmvn_from, out / "am.mvn")
    else:
        write_cmvn(out / "am.mvn")
    parts = {k: v for k, v in config.items() if k.endswith(("coder", "coder_conf", "predictor", "predictor_conf"))}
    model = tables.model_classes.get("Paraformer")(
        input_size=560, vocab_size=len(tokens), **parts, **config["model_conf"]
    )
    with torch.no_grad():  # random weights still fire the CIF predictor
        model.predictor.cif_output.bias.fill_(0.0)
    torch.save(model.state_dict(), out / "model.pt")
    return model


def build_paraformer_large(out: Path, seed: int = 0) -> Path:
    """Paraformer-large dimensions (SANM encoder 512/4/2048/50, SANM decoder 16 blocks, CifPredictorV2,
    vocab 8404). config.yaml + model.pt + tokens.json + am.mvn."""
    seed_all(seed)
    out.mkdir(parents=True, exist_ok=True)
    tokens = ["<blank>", "<s>", "</s>"]
    tokens += [chr(0x4E00 + i) for i in range(PARAFORMER_VOCAB - len(tokens) - 1)]
    tokens.append("<unk>")
    model = write_paraformer_dir(out, tokens, PARAFORMER_LARGE_ENCODER, PARAFORMER_LARGE_DECODER)
    _card(out, "Paraformer", model, len(tokens))
    return out


def _card(out: Path, arch: str, model: Any, vocab: int) -> None:
    params = sum(p.numel() for p in model.parameters())
    (out / "BENCH_MODEL.json").write_text(
        json.dumps({"architecture": arch, "parameters": params, "vocab_size": vocab, "weights": "random"}, indent=1)
    )


BUILDERS = {"sensevoice-small": build_sensevoice_small, "paraformer-large": build_paraformer_large}


def ensure(kind: str, out: Path) -> Path:
    """Build the model directory unless it is already complete."""
    if (out / "model.pt").is_file() and (out / "BENCH_MODEL.json").is_file():
        return out
    return BUILDERS[kind](out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m asr_bench.make_model", description=__doc__.split("\n\n")[0])
    parser.add_argument("kind", choices=sorted(BUILDERS))
    parser.add_argument("out", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    t0 = time.monotonic()
    out = BUILDERS[args.kind](args.out, seed=args.seed)
    card = json.loads((out / "BENCH_MODEL.json").read_text())
    print(f"{args.kind}: {out} ({card['parameters']:,} parameters, vocab {card['vocab_size']}) "
          f"in {time.monotonic() - t0:.0f} s")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
