"""Voice activity detection with silero-vad: speech probabilities per 32 ms frame, speech regions, upload segments.

The silero-vad wheel ships its TorchScript model, so nothing is fetched. We load the file ourselves instead of
importing `silero_vad.model`, whose import calls `torch.set_num_threads(1)` for the whole process (the inference
thread would lose its cores). The scripted wrapper keeps its RNN state inside the module, so one instance could
serve only one stream; we call the inner network, which is a pure function of (64 samples of context + 512 new
samples, state) → (probability, state). One loaded model then serves every thread and every realtime session,
each stream carrying its own `StreamState`, and a long upload is scored as up to `MAX_LANES` lanes in one batch.
"""

from __future__ import annotations

import functools
import importlib.util
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .segments import Window

SAMPLE_RATE = 16000
FRAME = 512  # samples per decision (32 ms at 16 kHz), fixed by the model
CONTEXT = 64  # samples of the previous frame the model sees before each frame
FRAME_S = FRAME / SAMPLE_RATE
MAX_LANES = 64  # a long upload is scored as this many parallel lanes (one batched call per step)
MIN_LANE_FRAMES = 940  # ~30 s: shorter lanes would spend too much of their length with a cold RNN state
EXIT_MARGIN = 0.15  # hysteresis: speech ends below threshold - margin (silero's own rule)
BLOCK_STEPS = 64  # frames per lane read from the recording at once


def _read_span(samples: np.ndarray, start: int, out: np.ndarray) -> None:
    """`out[:] = samples[start : start + len(out)]`, zeros where that runs outside the recording."""
    a, b = max(start, 0), min(start + len(out), len(samples))
    out[:] = 0.0
    if b > a:
        out[a - start : b - start] = samples[a:b]


@functools.cache
def available() -> bool:
    """Whether the silero-vad package (and its bundled model) is installed. Asked once: every request's chunking asks,
    and each search of sys.path stats directories on the event loop (~8 % of its CPU per request before)."""
    return importlib.util.find_spec("silero_vad") is not None


def _model_path() -> Path:
    spec = importlib.util.find_spec("silero_vad")  # locates the package without running its __init__
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("silero-vad is not installed (pip install silero-vad), or use --segmenter windows")
    return Path(next(iter(spec.submodule_search_locations))) / "data" / "silero_vad.jit"


@dataclass(frozen=True)
class VadParams:
    """OpenAI's `server_vad` knobs: speech above `threshold`; a turn ends after `silence_duration_ms` below it;
    `prefix_padding_ms` of audio before detected speech (and as much after it) is kept."""

    threshold: float = 0.5
    prefix_padding_ms: int = 300
    silence_duration_ms: int = 500
    min_speech_ms: int = 250  # shorter bursts (clicks, breaths) are not speech


@dataclass
class StreamState:
    """One stream's VAD memory: the model's RNN state and the last CONTEXT samples."""

    rnn: object = None  # torch.Tensor [2, 1, 128]; None = cold
    context: np.ndarray = field(default_factory=lambda: np.zeros(CONTEXT, np.float32))


class SileroVad:
    """One loaded silero model, safe to call from several threads (no state inside)."""

    def __init__(self, path: Path | None = None) -> None:
        import torch

        path = path or _model_path()
        if not path.is_file():
            raise RuntimeError(f"silero-vad model file missing: {path}")
        wrapper = torch.jit.load(str(path), map_location="cpu")
        wrapper.eval()
        self._net = wrapper._model  # the 16 kHz network: forward(x [B, 576], state [2, B, 128])
        self._torch = torch

    def _forward(self, frames: np.ndarray, rnn: object) -> tuple[np.ndarray, object]:
        torch = self._torch
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(frames, dtype=np.float32))
            state = rnn if rnn is not None else torch.zeros(2, x.shape[0], 128)
            out, new_state = self._net(x, state)
        return out[:, 0].numpy().copy(), new_state

    def probabilities(self, samples: np.ndarray) -> np.ndarray:
        """Speech probability of every 32 ms frame of a whole recording (16 kHz), scored in parallel lanes. The
        samples (a memory-mapped upload) are read a block of steps at a time: what is held at once is
        `MAX_LANES x BLOCK_STEPS` frames (~8 MiB at most), not a float32 copy of the recording (~220 MiB an hour)."""
        n_frames = math.ceil(len(samples) / FRAME)
        if n_frames == 0:
            return np.zeros(0, np.float32)
        lanes = max(1, min(MAX_LANES, n_frames // MIN_LANE_FRAMES))
        per_lane = math.ceil(n_frames / lanes)
        probs = np.zeros((lanes, per_lane), np.float32)
        rnn: object = None
        starts = np.arange(lanes) * per_lane * FRAME  # each lane's first sample
        block = np.zeros((lanes, CONTEXT + BLOCK_STEPS * FRAME), np.float32)  # reused: one block held at a time
        for first in range(0, per_lane, BLOCK_STEPS):
            steps = min(BLOCK_STEPS, per_lane - first)
            # each lane's next `steps` frames with the CONTEXT samples before them (zeros before the start and
            # past the end, as the model's first frame and the last lane's tail expect)
            for lane, start in enumerate(starts):
                _read_span(samples, int(start) + first * FRAME - CONTEXT, block[lane, : CONTEXT + steps * FRAME])
            for step in range(steps):
                frames = block[:, step * FRAME : step * FRAME + CONTEXT + FRAME]
                probs[:, first + step], rnn = self._forward(frames, rnn)
        return probs.reshape(-1)[:n_frames]

    def stream(self, state: StreamState, samples: np.ndarray) -> np.ndarray:
        """Probabilities of consecutive whole frames of one live stream (`len(samples)` a multiple of FRAME)."""
        n = len(samples) // FRAME
        out = np.zeros(n, np.float32)
        for k in range(n):
            frame = samples[k * FRAME : (k + 1) * FRAME]
            x = np.concatenate([state.context, frame])[None, :]
            p, state.rnn = self._forward(x, state.rnn)
            out[k] = p[0]
            state.context = np.array(frame[-CONTEXT:], np.float32)
        return out


# ---------------------------------------------------------------------------------------------- regions
def speech_regions(probs: np.ndarray, params: VadParams) -> list[tuple[int, int]]:
    """Speech as [start, end) frame ranges: starts at p >= threshold, ends once p stayed below
    threshold - EXIT_MARGIN for `silence_duration_ms`; bursts shorter than `min_speech_ms` are dropped."""
    silence_frames = max(1, round(params.silence_duration_ms / 1000 / FRAME_S))
    min_frames = max(1, round(params.min_speech_ms / 1000 / FRAME_S))
    exit_level = max(params.threshold - EXIT_MARGIN, 0.01)
    regions: list[tuple[int, int]] = []
    start: int | None = None
    quiet_since: int | None = None
    for i, p in enumerate(probs):
        if start is None:
            if p >= params.threshold:
                start, quiet_since = i, None
            continue
        if p >= params.threshold:
            quiet_since = None
        elif p < exit_level and quiet_since is None:
            quiet_since = i
        if quiet_since is not None and i + 1 - quiet_since >= silence_frames:
            if quiet_since - start >= min_frames:
                regions.append((start, quiet_since))
            start = quiet_since = None
    if start is not None and len(probs) - start >= min_frames:
        regions.append((start, quiet_since if quiet_since is not None else len(probs)))
    return regions


def _split_long(probs: np.ndarray, start: int, end: int, max_frames: int) -> list[tuple[int, int]]:
    """Cut a region longer than `max_frames` at its quietest frame in the second half of each piece."""
    pieces = []
    while end - start > max_frames:
        lo, hi = start + max_frames // 2, start + max_frames
        cut = lo + int(np.argmin(probs[lo:hi]))
        pieces.append((start, cut))
        start = cut
    pieces.append((start, end))
    return pieces


def _merge_tiny(spans: list[tuple[float, float]], min_s: float, max_s: float) -> list[tuple[float, float]]:
    """A span shorter than `min_s` joins its nearer neighbour when the joined span still fits in `max_s`."""
    spans = list(spans)
    i = 0
    while i < len(spans):
        a, b = spans[i]
        if b - a >= min_s or len(spans) == 1:
            i += 1
            continue
        gap_before = a - spans[i - 1][1] if i > 0 else math.inf
        gap_after = spans[i + 1][0] - b if i + 1 < len(spans) else math.inf
        j = i - 1 if gap_before <= gap_after else i + 1
        lo, hi = min(spans[j][0], a), max(spans[j][1], b)
        if hi - lo <= max_s:
            spans[min(i, j)] = (lo, hi)
            del spans[max(i, j)]
            i = max(min(i, j) - 1, 0)  # the joined span may itself still be tiny
        else:
            i += 1
    return spans


def plan_speech_segments(
    probs: np.ndarray, duration_s: float, params: VadParams, max_segment_s: float, min_segment_s: float = 1.0
) -> list[Window]:
    """Upload segments that cover the speech only, each at most `max_segment_s`, in the original timeline.

    Regions are padded by `prefix_padding_ms` each side (never past the middle of the gap to the next region, so
    segments do not overlap), cut at their quietest frame when too long, and tiny ones merged into a neighbour.
    """
    max_frames = max(2, int(max_segment_s / FRAME_S) - 2 * round(params.prefix_padding_ms / 1000 / FRAME_S))
    frames = [p for s, e in speech_regions(probs, params) for p in _split_long(probs, s, e, max_frames)]
    pad = params.prefix_padding_ms / 1000
    spans: list[tuple[float, float]] = []
    for k, (s, e) in enumerate(frames):
        start, end = s * FRAME_S, min(e * FRAME_S, duration_s)
        prev_end = frames[k - 1][1] * FRAME_S if k > 0 else -math.inf
        next_start = frames[k + 1][0] * FRAME_S if k + 1 < len(frames) else math.inf
        start = max(0.0, start - pad, (prev_end + start) / 2 if k > 0 else 0.0)
        end = min(duration_s, end + pad, (end + next_start) / 2 if k + 1 < len(frames) else duration_s)
        spans.append((start, min(end, start + max_segment_s)))
    spans = _merge_tiny(spans, min_segment_s, max_segment_s)
    return [Window(k, a, b, a, b) for k, (a, b) in enumerate(spans) if b > a]
