"""Long audio: split into overlapping fixed windows, stitch the windows' tokens back into one transcript.

Each window "owns" the stretch of time nearer to its centre than to its neighbours' (boundaries at the middle of
each overlap). A token is kept only from the window that owns its time, so words cut at a window edge come from
the window where they are whole. Backends without token times get windows with no overlap, joined in order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

MIN_TAIL_S = 1.0  # a last window shorter than this is stretched backwards (tiny windows confuse the model)


@dataclass(frozen=True)
class Window:
    index: int
    start_s: float  # audio the model sees
    end_s: float
    own_start_s: float  # the part whose tokens this window contributes
    own_end_s: float


def plan_windows(duration_s: float, segment_s: float, overlap_s: float) -> list[Window]:
    """Windows covering [0, duration_s]; one window when the audio fits in `segment_s`."""
    if duration_s <= segment_s:
        return [Window(0, 0.0, duration_s, 0.0, duration_s)]
    overlap_s = min(overlap_s, segment_s / 2)
    step = segment_s - overlap_s
    count = max(2, math.ceil((duration_s - overlap_s) / step))
    spans: list[tuple[float, float]] = []
    for k in range(count):
        start = k * step
        end = min(start + segment_s, duration_s)
        if k == count - 1:
            end = duration_s
            start = min(start, max(0.0, end - max(MIN_TAIL_S, end - start)))
        spans.append((start, end))
    windows = []
    for k, (start, end) in enumerate(spans):
        own_start = 0.0 if k == 0 else (spans[k - 1][1] + start) / 2
        own_end = duration_s if k == count - 1 else (end + spans[k + 1][0]) / 2
        windows.append(Window(k, start, end, own_start, own_end))
    return windows
