"""The vectorised fbank equals funasr's WavFrontend (kaldi-native-fbank) on real speech, for every frame; a batch's
features equal each item's alone; LFR + CMVN as one gather equal funasr's apply_lfr + apply_cmvn."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from asr_inference.features import FastFbank, kaldi_mel_banks
from funasr.frontends.wav_frontend import apply_cmvn, apply_lfr


@pytest.fixture(scope="module")
def frontend(sensevoice_dir: Path):  # type: ignore[no-untyped-def]
    from asr_inference.backends.funasr_backend import FunASRBackend
    from asr_inference.config import Settings

    backend = FunASRBackend(Settings(model=str(sensevoice_dir), device="cpu"))
    backend.load()
    return backend.frontend


def _speech_waves(speech_files: dict[str, Path]) -> dict[str, torch.Tensor]:
    waves = {}
    for path in speech_files.values():
        if path.suffix != ".wav":
            continue
        samples, rate = sf.read(path, dtype="float32")
        if rate == 16000 and samples.ndim == 1:
            waves[path.name] = torch.from_numpy(samples)
    assert len(waves) >= 6
    return waves


@pytest.mark.parametrize("batched", [False, True], ids=["alone", "one-batch"])
def test_matches_wavfrontend_on_speech(frontend, speech_files: dict[str, Path], batched: bool) -> None:  # type: ignore[no-untyped-def]
    fast = FastFbank(frontend)
    waves = _speech_waves(speech_files)
    if batched:  # every file in one batch: each item's rows, then zeros
        feats, lengths = fast.batch(list(waves.values()), torch.device("cpu"))
        made = {name: feats[i, : int(lengths[i])] for i, name in enumerate(waves)}
        for i, name in enumerate(waves):
            assert int(feats[i, int(lengths[i]) :].abs().sum()) == 0, name
    else:
        made = {name: fast.single(wave) for name, wave in waves.items()}
    for name, wave in waves.items():
        reference, _ = frontend(wave[None], [len(wave)])
        ours = made[name]
        assert ours.shape == reference[0].shape and fast.frames(len(wave)) == ours.shape[0]
        # Bounded by the features' own scale, not by one machine's FFT: float32 FFT/log rounding differs by CPU
        # (max 1.27e-3 on an Intel Xeon with AVX-512, < 1e-3 on the AMD EPYC the old absolute bound was fitted
        # on), at the large-magnitude log energies of near-silent frames. A real defect (window, mel bank, LFR,
        # CMVN) moves features by O(scale); rounding stays ~1e-4 of it at the worst element, ~1e-6 on average.
        diff = (ours - reference[0]).abs()
        scale = reference[0].abs().max().item()
        assert diff.max().item() <= 5e-4 * scale, name
        assert diff.mean().item() <= 1e-5 * scale, name


def test_a_batch_gives_each_item_its_features_alone(frontend) -> None:  # type: ignore[no-untyped-def]
    """Lengths at the framing edges (exactly one window, one sample over, a shift apart) beside a long item: the
    padding never reaches an item's rows. Equal up to float rounding of batched FFT/matmul kernels, not exactly:
    BLAS may block a (B*F)-row product differently from an F-row one."""
    fast = FastFbank(frontend)
    rng = np.random.default_rng(3)
    lengths = [fast.win, fast.win + 1, fast.win + fast.shift, 1600, 16000 + 7, 5 * 16000]
    waves = [torch.from_numpy((rng.standard_normal(n) * 0.1).astype(np.float32)) for n in lengths]
    feats, rows = fast.batch(waves, torch.device("cpu"))
    assert feats.dtype == torch.float32 and rows.tolist() == [fast.frames(n) for n in lengths]
    for i, wave in enumerate(waves):
        alone = fast.single(wave)
        assert alone.shape[0] == int(rows[i])
        torch.testing.assert_close(feats[i, : int(rows[i])], alone, rtol=1e-5, atol=1e-5 * alone.abs().max().item())
        assert int(feats[i, int(rows[i]) :].abs().sum()) == 0


def test_lfr_and_cmvn_gather_equals_funasr(frontend) -> None:  # type: ignore[no-untyped-def]
    """Every frame count from 1 to 3 LFR windows past lfr_m, padded in a batch: bit-equal to apply_lfr + apply_cmvn."""
    fast = FastFbank(frontend)
    torch.manual_seed(0)
    for frames in range(1, 3 * fast.lfr_m + 12):
        mel = torch.randn(frames, frontend.n_mels)
        reference = apply_cmvn(apply_lfr(mel.clone(), fast.lfr_m, fast.lfr_n), frontend.cmvn)
        padded = torch.nn.functional.pad(mel, (0, 0, 0, 9))[None]  # padding rows must not leak in
        rows = torch.tensor([-(-frames // fast.lfr_n)])
        ours = fast._lfr_cmvn(padded, torch.tensor([frames]), rows)[0]
        assert ours.shape == reference.shape, frames
        assert torch.equal(ours, reference), frames


def test_backend_makes_batch_features_in_fp32_under_autocast(sensevoice_dir: Path) -> None:
    """The serving precision's autocast must not reach the features: power spectra overflow fp16 and bf16 rounds
    log energies. Items too short for the batched path (funasr's own frontend made them) pad in beside waveforms."""
    from asr_inference.backends.base import Prepared
    from asr_inference.backends.funasr_backend import FunASRBackend
    from asr_inference.config import Settings

    backend = FunASRBackend(Settings(model=str(sensevoice_dir), device="cpu"))
    backend.load()
    rng = np.random.default_rng(5)
    items = [backend.prepare((rng.standard_normal(n) * 0.1).astype(np.float32)) for n in (3200, 16000)]
    assert all(it.data.dim() == 1 for it in items)  # waveforms: features come with the batch
    plain, lengths = backend.batch_features(items)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under_autocast, _ = backend.batch_features(items)
    assert under_autocast.dtype == torch.float32 and torch.equal(under_autocast, plain)
    assert lengths.tolist() == [it.length for it in items]
    made_early = Prepared(backend._features.single(items[0].data), items[0].length, items[0].duration_s)
    mixed, _ = backend.batch_features([made_early, items[1]])
    torch.testing.assert_close(mixed, plain, rtol=1e-5, atol=1e-4)


def test_raw_log_mel_matches_kaldi_native_fbank(frontend) -> None:  # type: ignore[no-untyped-def]
    import kaldi_native_fbank as knf

    rng = np.random.default_rng(0)
    wave = (np.sin(2 * np.pi * 300 * np.arange(24000) / 16000) * 0.3 + rng.standard_normal(24000) * 0.01).astype(
        np.float32
    )
    opts = knf.FbankOptions()
    opts.frame_opts.dither = 0.0
    opts.frame_opts.window_type = "hamming"
    opts.frame_opts.snip_edges = True
    opts.mel_opts.num_bins = 80
    opts.energy_floor = 0.0
    fb = knf.OnlineFbank(opts)
    fb.accept_waveform(16000, (wave * 32768).tolist())
    fb.input_finished()
    reference = np.stack([fb.get_frame(i) for i in range(fb.num_frames_ready)])
    ours = FastFbank(frontend).fbank(torch.from_numpy(wave)).numpy()
    assert ours.shape == reference.shape
    assert np.abs(ours - reference).max() < 2e-3


def test_mel_banks_are_triangles_summing_to_a_partition() -> None:
    banks = kaldi_mel_banks(80, 512, 16000.0, 20.0, 0.0)
    assert banks.shape == (80, 257) and float(banks.min()) == 0.0 and float(banks.max()) <= 1.0
    assert banks[:, -1].abs().sum() == 0  # no weight on the Nyquist bin, as in Kaldi
