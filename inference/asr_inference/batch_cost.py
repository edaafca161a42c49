"""How long a batch takes, learned from the batches run: seconds ≈ fixed + per_s × padded audio seconds.

Admission's wait budget (`--max-queue-wait-s`) and `Retry-After` need the time of the batches ahead of a new
request. One moving average of batch times mixes a long file's 30-s windows with 2-s clips: beside such a file
every estimate grows and short requests were refused for waits they would not have had. A batch's time grows
with the audio it computes — its items × its longest item, padding included — plus a fixed cost per batch (on a
GPU nearly all of it), so both are fitted by weighted least squares with exponential forgetting: recent batches
count most, and the fit follows a change of load.
"""

from __future__ import annotations

from collections.abc import Sequence


def padded_audio_s(lengths: Sequence[float]) -> float:
    """Audio seconds a batch of items of these lengths computes: every item padded to the longest."""
    return len(lengths) * max(lengths, default=0.0)


class BatchCost:
    """Used from the event loop only (the batcher observes, admission estimates): no lock."""

    def __init__(self, initial_s: float = 0.05, forget: float = 0.9) -> None:
        self.initial_s = initial_s  # the estimate before any batch ran
        self.forget = forget  # each observation's weight shrinks by this factor per later observation
        self._w = self._x = self._y = self._xx = self._xy = 0.0

    def observe(self, padded_audio_s: float, seconds: float) -> None:
        f = self.forget
        self._w = f * self._w + 1.0
        self._x = f * self._x + padded_audio_s
        self._y = f * self._y + seconds
        self._xx = f * self._xx + padded_audio_s * padded_audio_s
        self._xy = f * self._xy + padded_audio_s * seconds

    def estimate(self, padded_audio_s: float) -> float:
        """Seconds a batch of this much padded audio is expected to take."""
        fixed, per_s = self.fit()
        return max(fixed + per_s * padded_audio_s, 0.0)

    def fit(self) -> tuple[float, float]:
        """(fixed seconds per batch, seconds per padded audio second). Batches all of one size cannot separate the
        two: their time is then taken as proportional to the audio (the fixed cost counted in it)."""
        w, x, y, xx, xy = self._w, self._x, self._y, self._xx, self._xy
        if w == 0.0:
            return self.initial_s, 0.0
        mean_x, mean_y = x / w, y / w
        variance = xx / w - mean_x * mean_x
        if variance > 1e-6 * max(mean_x * mean_x, 1e-9):
            per_s = (xy / w - mean_x * mean_y) / variance
            fixed = mean_y - per_s * mean_x
            if per_s >= 0.0 and fixed >= 0.0:
                return fixed, per_s
        if mean_x <= 0.0:
            return mean_y, 0.0
        return 0.0, mean_y / mean_x
