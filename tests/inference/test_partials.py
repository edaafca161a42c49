"""Which part of a growing partial hypothesis is settled enough to send as a delta (partials.py)."""

from __future__ import annotations

import pytest
from asr_inference.partials import OpenPartial, agreed_prefix


@pytest.mark.parametrize(
    ("previous", "current", "settled"),
    [
        ("", "hello", ""),  # one decode alone settles nothing
        ("hello wor", "hello world", "hello "),  # not inside a word of spaced text
        ("hello world foo", "hello world", "hello world"),  # a whole word in both
        ("hello worldwide", "hello world", "hello "),  # a prefix of a longer word is not a word
        ("hello world", "hello world", "hello world"),
        ("hallo world", "hello world", ""),  # they differ inside the first word: nothing
        ("今天天气", "今天天晴", "今天天"),  # no spaces (Chinese, Japanese): characters
    ],
)
def test_agreed_prefix(previous: str, current: str, settled: str) -> None:
    assert agreed_prefix(previous, current) == settled


def test_deltas_are_the_settled_text_beyond_what_was_sent_and_the_final_adds_the_rest() -> None:
    p = OpenPartial("item_1")
    hypotheses = ["the", "the cat", "the cat sat", "the cat sat on", "the cap sat on the"]
    deltas = [p.settle(h) for h in hypotheses]
    assert deltas == ["", "the", " cat", " sat", ""]  # the last one revised "cat": nothing new is settled
    assert "".join(deltas) == p.sent == "the cat sat"
    assert p.final_delta("the cat sat on the mat") == " on the mat"
    assert p.final_delta("the cap sat on the mat") == ""  # a revision: `completed` carries the whole text
