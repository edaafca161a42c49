"""The vectorised fbank equals funasr's WavFrontend (kaldi-native-fbank) on real speech, for every frame."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from asr_inference.features import FastFbank, kaldi_mel_banks


@pytest.fixture(scope="module")
def frontend(sensevoice_dir: Path):  # type: ignore[no-untyped-def]
    from asr_inference.backends.funasr_backend import FunASRBackend
    from asr_inference.config import Settings

    backend = FunASRBackend(Settings(model=str(sensevoice_dir), device="cpu"))
    backend.load()
    return backend.frontend


def test_matches_wavfrontend_on_speech(frontend, speech_files: dict[str, Path]) -> None:  # type: ignore[no-untyped-def]
    fast = FastFbank(frontend)
    checked = 0
    for path in speech_files.values():
        if path.suffix != ".wav":
            continue
        samples, rate = sf.read(path, dtype="float32")
        if rate != 16000 or samples.ndim != 1:
            continue
        wave = torch.from_numpy(samples)
        reference, _ = frontend(wave[None], [len(samples)])
        ours = fast(wave)
        assert ours.shape == reference[0].shape
        # Bounded by the features' own scale, not by one machine's FFT: float32 FFT/log rounding differs by CPU
        # (max 1.27e-3 on an Intel Xeon with AVX-512, < 1e-3 on the AMD EPYC the old absolute bound was fitted
        # on), at the large-magnitude log energies of near-silent frames. A real defect (window, mel bank, LFR,
        # CMVN) moves features by O(scale); rounding stays ~1e-4 of it at the worst element, ~1e-6 on average.
        diff = (ours - reference[0]).abs()
        scale = reference[0].abs().max().item()
        assert diff.max().item() <= 5e-4 * scale, path.name
        assert diff.mean().item() <= 1e-5 * scale, path.name
        checked += 1
    assert checked >= 6


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
