"""Tiny random-weight funasr model directories for tests, built in seconds through funasr's own classes.

Each loads offline through `funasr.AutoModel` exactly as a real model directory does (config.yaml + model.pt +
tokenizer + am.mvn [+ configuration.json]). Random weights give nonsense text, but deterministic nonsense: enough
to check that batching, precision and the HTTP layer change nothing about what the model computes.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import Any

import torch
import yaml
from asr_bench.make_model import (
    FRONTEND_CONF,
    seed_all,
    write_configuration_json,
    write_paraformer_dir,
    write_sensevoice_dir,
)

SPECIAL = [
    "<|zh|>", "<|en|>", "<|yue|>", "<|ja|>", "<|ko|>", "<|nospeech|>",
    "<|HAPPY|>", "<|SAD|>", "<|ANGRY|>", "<|NEUTRAL|>", "<|EMO_UNKNOWN|>",
    "<|Speech|>", "<|BGM|>", "<|Laughter|>", "<|Applause|>", "<|Event_UNK|>",
    "<|withitn|>", "<|woitn|>",
]  # fmt: skip
WORDS = (
    "the a of to and in is it you that he was for on are with as his they be at one have this from or had "
    "by hot word but what some we can out other were all there when up use your how said an each she "
    "which do their time if will way about many then them write would like so these her long make thing "
    "see him two has look more day could go come did number sound no most people my over know water than "
    "call first who may down side been now find any new work part take get place made live where after "
    "back little only round man year came show every good me give our under name very through just form "
    "great think say help low line turn cause much mean before move right boy old too same tell does set "
    "three want air well also play small end put home read hand port large spell add even land here must "
    "big high such follow act why ask men change went light kind off need house"
).split()
ENCODER_CONF = {
    "output_size": 96, "attention_heads": 4, "linear_units": 192, "num_blocks": 3, "tp_blocks": 2,
    "dropout_rate": 0.1, "positional_dropout_rate": 0.1, "attention_dropout_rate": 0.1, "input_layer": "pe",
    "pos_enc_class": "SinusoidalPositionEncoder", "normalize_before": True, "kernel_size": 11, "sanm_shfit": 0,
    "selfattention_layer_type": "sanm",
}  # fmt: skip


def build_sensevoice(out: Path, seed: int = 1234) -> Path:
    import sentencepiece as spm

    seed_all(seed)
    out.mkdir(parents=True, exist_ok=True)
    corpus = out / "_corpus.txt"
    corpus.write_text(
        "\n".join(" ".join(random.choice(WORDS) for _ in range(random.randint(4, 14))) for _ in range(4000))
    )
    spm.SentencePieceTrainer.train(
        input=str(corpus), model_prefix=str(out / "bpe"), model_type="bpe", vocab_size=400,
        character_coverage=1.0, user_defined_symbols=SPECIAL, unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
        num_threads=2, minloglevel=2,
    )  # fmt: skip
    corpus.unlink()
    (out / "bpe.vocab").unlink()
    vocab = spm.SentencePieceProcessor(model_file=str(out / "bpe.model")).get_piece_size()
    write_sensevoice_dir(out, ENCODER_CONF, vocab)
    return out


def build_paraformer(out: Path, cmvn_from: Path, seed: int = 0) -> Path:
    """config.yaml + model.pt + tokens.json + am.mvn, no configuration.json (funasr's config-only branch)."""
    seed_all(seed)
    out.mkdir(parents=True, exist_ok=True)
    tokens = [
        "<blank>",
        "<s>",
        "</s>",
        *"abcdefghijklmnopqrstuvwxyz",
        *"的一是不了人我在有他这中大来上国个到说们为子和你地出道也时年",
        "<unk>",
    ]
    encoder = {k: v for k, v in ENCODER_CONF.items() if k != "tp_blocks"}
    decoder = {
        "attention_heads": 4, "linear_units": 192, "num_blocks": 2, "dropout_rate": 0.1,
        "positional_dropout_rate": 0.1, "self_attention_dropout_rate": 0.1, "src_attention_dropout_rate": 0.1,
        "att_layer_num": 2, "kernel_size": 11, "sanm_shfit": 0,
    }  # fmt: skip
    write_paraformer_dir(out, tokens, encoder, decoder, cmvn_from=cmvn_from / "am.mvn")
    return out


def build_funasr_nano(out: Path, cmvn_from: Path, seed: int = 0) -> Path:
    """SenseVoice encoder → Transformer adaptor → tiny Qwen3 (transformers, from config)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen3Config

    seed_all(seed)
    llm_dir = out / "Qwen3-tiny"
    llm_dir.mkdir(parents=True, exist_ok=True)
    special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"]
    words = [
        "hello",
        "world",
        "speech",
        "recognition",
        "tiny",
        "random",
        "model",
        "test",
        "kubernetes",
        "server",
        "audio",
        "语音",
        "转写",
        "成",
        "文本",
    ]
    corpus = [" ".join(random.choice(words) for _ in range(random.randint(3, 10))) for _ in range(3000)]
    corpus += ["You are a helpful assistant.", "system user assistant", "语音转写：", "热词列表"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(
        corpus,
        trainers.BpeTrainer(
            vocab_size=600, special_tokens=special, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
        ),
    )
    hf_tok = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>", unk_token=None
    )
    hf_tok.save_pretrained(str(llm_dir))
    Qwen3Config(
        vocab_size=len(hf_tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=16, max_position_embeddings=4096, tie_word_embeddings=True,
        initializer_range=0.5, eos_token_id=hf_tok.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=hf_tok.convert_tokens_to_ids("<|endoftext|>"),
        bos_token_id=hf_tok.convert_tokens_to_ids("<|endoftext|>"),
    ).save_pretrained(str(llm_dir))  # fmt: skip
    config: dict[str, Any] = {
        "model": "FunASRNano",
        "model_conf": {"length_normalized_loss": True},
        "audio_encoder": "SenseVoiceEncoderSmall",
        "audio_encoder_conf": {**ENCODER_CONF, "freeze": True},
        "audio_adaptor": "Transformer",
        "audio_adaptor_conf": {"downsample_rate": 1, "ffn_dim": 128, "n_layer": 1, "attention_heads": 4,
                               "use_low_frame_rate": False},
        "llm": "Qwen3-tiny",
        "llm_conf": {"init_param_path": "Qwen3-tiny", "freeze": True, "llm_dtype": "fp32"},
        "tokenizer": "HuggingfaceTokenizer",
        "tokenizer_conf": {"init_param_path": "Qwen3-tiny"},
        "frontend": "WavFrontend",
        "frontend_conf": {**FRONTEND_CONF, "cmvn_file": None},
        "ctc_decoder": None,
    }  # fmt: skip
    (out / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False, allow_unicode=True))
    write_configuration_json(
        out,
        {
            "init_param": "model.pt",
            "config": "config.yaml",
            "tokenizer_conf": {"init_param_path": "Qwen3-tiny"},
            "llm_conf": {"init_param_path": "Qwen3-tiny"},
            "frontend_conf": {"cmvn_file": "am.mvn"},
        },
    )
    shutil.copy(cmvn_from / "am.mvn", out / "am.mvn")
    import funasr.models.fun_asr_nano.model
    import funasr.models.llm_asr.adaptor
    import funasr.models.sense_voice.model  # noqa: F401
    from funasr.register import tables

    conf = json.loads(json.dumps(config))
    conf["llm_conf"]["init_param_path"] = str(llm_dir)
    model = tables.model_classes.get("FunASRNano")(input_size=560, **conf)
    torch.save(model.state_dict(), out / "model.pt")
    return out


def derive_sensevoice(src: Path, out: Path, ctc_bias: dict[int, float], zero_ctc_weight: bool = True) -> Path:
    """Copy a SenseVoice dir and rewrite its CTC output layer: decisions then hinge on these biases alone.
    Used to build models whose fp32 and reduced-precision outputs provably agree or disagree."""
    shutil.copytree(src, out)
    state = torch.load(out / "model.pt", map_location="cpu")
    if zero_ctc_weight:
        state["ctc.ctc_lo.weight"].zero_()
    bias = state["ctc.ctc_lo.bias"]
    bias.fill_(-10.0)
    for token, value in ctc_bias.items():
        bias[token] = value
    torch.save(state, out / "model.pt")
    return out
