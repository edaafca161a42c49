"""Kaldi-compatible log-mel filterbank, vectorised in torch, + funasr's LFR and CMVN: WavFrontend's features.

Why not WavFrontend itself: without torchaudio, funasr computes fbank with kaldi-native-fbank and copies it out
one frame at a time through Python (`np.stack([fb.get_frame(i) ...])`), holding the GIL: ~5.5 ms per 5 s clip,
more than the encoder. This computes the same Kaldi recipe (DC removal, pre-emphasis, window, power spectrum,
Kaldi mel banks, log with float-epsilon floor; snip_edges framing) as a few tensor ops on all frames at once,
which releases the GIL and runs on whatever device the tensor is on. `tests/inference/test_features.py` checks
it against kaldi-native-fbank.
"""

from __future__ import annotations

import math
from typing import Any

import torch

_EPS = torch.finfo(torch.float32).eps


def _mel(freq: torch.Tensor) -> torch.Tensor:
    return 1127.0 * torch.log(1.0 + freq / 700.0)


def kaldi_mel_banks(num_bins: int, padded_window: int, fs: float, low_freq: float, high_freq: float) -> torch.Tensor:
    """(num_bins, padded_window // 2 + 1) triangular filters on the mel scale, as Kaldi builds them (the Nyquist
    bin gets no weight)."""
    num_fft_bins = padded_window // 2
    nyquist = 0.5 * fs
    if high_freq <= 0.0:
        high_freq += nyquist
    mel_low, mel_high = (
        _mel(torch.tensor(low_freq, dtype=torch.float64)),
        _mel(torch.tensor(high_freq, dtype=torch.float64)),
    )
    delta = (mel_high - mel_low) / (num_bins + 1)
    b = torch.arange(num_bins, dtype=torch.float64).unsqueeze(1)
    left, center, right = mel_low + b * delta, mel_low + (b + 1) * delta, mel_low + (b + 2) * delta
    mel = _mel((fs / padded_window) * torch.arange(num_fft_bins, dtype=torch.float64)).unsqueeze(0)
    up = (mel - left) / (center - left)
    down = (right - mel) / (right - center)
    banks = torch.clamp(torch.minimum(up, down), min=0.0)
    return torch.nn.functional.pad(banks, (0, 1)).to(torch.float32)


class FastFbank:
    """Features for one waveform exactly as funasr's WavFrontend computes them, fbank vectorised."""

    def __init__(self, frontend: Any) -> None:
        self.frontend = frontend
        fs = float(frontend.fs)
        self.win = int(fs * frontend.frame_length / 1000)
        self.shift = int(fs * frontend.frame_shift / 1000)
        self.nfft = 1 << math.ceil(math.log2(self.win))
        self.upscale = bool(getattr(frontend, "upsacle_samples", True))
        self.snip_edges = bool(getattr(frontend, "snip_edges", True))
        if frontend.window == "hamming":
            window = torch.hamming_window(self.win, periodic=False, dtype=torch.float64)
        elif frontend.window in ("hanning", "hann"):
            window = torch.hann_window(self.win, periodic=False, dtype=torch.float64)
        elif frontend.window == "povey":
            window = torch.hann_window(self.win, periodic=False, dtype=torch.float64).pow(0.85)
        else:
            raise ValueError(f"unsupported window {frontend.window!r}")
        self.window = window.to(torch.float32)
        self.banks = kaldi_mel_banks(frontend.n_mels, self.nfft, fs, 20.0, 0.0)
        self.preemph = 0.97
        self.supported = self.snip_edges and float(getattr(frontend, "dither", 0.0)) == 0.0

    def fbank(self, wave: torch.Tensor, chunk_frames: int = 1024) -> torch.Tensor:
        """Log-mel frames. Frames are independent, so they are computed `chunk_frames` at a time: the
        temporaries (frames, spectrum) stay ~10 MB whatever the audio length."""
        x = wave * 32768.0 if self.upscale else wave
        frames = x.unfold(0, self.win, self.shift)  # (T, win) view, snip_edges framing
        return torch.cat(
            [self._fbank_frames(frames[i : i + chunk_frames]) for i in range(0, len(frames), chunk_frames)]
        )

    def _fbank_frames(self, frames: torch.Tensor) -> torch.Tensor:
        frames = frames - frames.mean(dim=1, keepdim=True)
        emph = torch.empty_like(frames)
        emph[:, 1:] = frames[:, 1:] - self.preemph * frames[:, :-1]
        emph[:, 0] = frames[:, 0] * (1.0 - self.preemph)
        spectrum = torch.fft.rfft(emph * self.window, n=self.nfft).abs().pow(2.0)
        return torch.clamp(spectrum @ self.banks.T, min=_EPS).log()

    def __call__(self, wave: torch.Tensor) -> torch.Tensor:
        """(frames, n_mels * lfr_m) features of a 1-D float32 waveform in [-1, 1]."""
        from funasr.frontends.wav_frontend import apply_cmvn, apply_lfr

        if not self.supported or wave.shape[0] < self.win:
            feats, _ = self.frontend(wave[None, :], [wave.shape[0]])  # rare shapes: funasr's own path
            return feats[0]
        mat = self.fbank(wave)
        fe = self.frontend
        if fe.lfr_m != 1 or fe.lfr_n != 1:
            mat = apply_lfr(mat, fe.lfr_m, fe.lfr_n)
        if fe.cmvn is not None:
            mat = apply_cmvn(mat, fe.cmvn)
        return mat
