"""The learned batch cost behind the wait budget and Retry-After (batch_cost.py)."""

from __future__ import annotations

import pytest
from asr_inference.batch_cost import BatchCost


def test_fixed_and_per_audio_second_costs_are_both_learned() -> None:
    cost = BatchCost()
    for _ in range(10):  # 0.2 s per batch + 0.1 s per padded audio second, batches of 2 s and of 32 s
        cost.observe(2.0, 0.4)
        cost.observe(32.0, 3.4)
    fixed, per_s = cost.fit()
    assert fixed == pytest.approx(0.2, rel=1e-6) and per_s == pytest.approx(0.1, rel=1e-6)
    assert cost.estimate(8.0) == pytest.approx(1.0, rel=1e-6)


def test_batches_of_one_size_give_a_proportional_estimate() -> None:
    cost = BatchCost()
    for _ in range(5):
        cost.observe(10.0, 2.0)
    assert cost.fit() == pytest.approx((0.0, 0.2))
    assert cost.estimate(5.0) == pytest.approx(1.0)


def test_the_estimate_follows_a_change_of_load_and_never_goes_negative() -> None:
    cost = BatchCost(forget=0.8)
    for _ in range(30):
        cost.observe(10.0, 1.0)
    for _ in range(30):
        cost.observe(10.0, 3.0)  # the same batches got slower (a neighbour took the CPU)
    assert cost.estimate(10.0) == pytest.approx(3.0, rel=0.01)
    noisy = BatchCost()
    noisy.observe(2.0, 1.0)
    noisy.observe(4.0, 0.5)  # a larger batch faster: no negative slope, a proportional fit instead
    fixed, per_s = noisy.fit()
    assert fixed == 0.0 and per_s > 0 and noisy.estimate(0.0) == 0.0


def test_before_any_batch_the_initial_guess_is_used() -> None:
    assert BatchCost(initial_s=1.5).estimate(100.0) == 1.5
