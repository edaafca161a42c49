"""Partial transcripts of an open realtime utterance: which part of a growing hypothesis is settled enough to send.

Every partial decode re-reads the whole open utterance, so a later decode may revise what an earlier one said.
Deltas cannot be taken back, so only text two consecutive decodes agree on is sent ("local agreement", as
whisper-streaming does), cut back to a word boundary where the text has spaces; each delta is the settled text
beyond what was already sent. The final decode's `completed` event carries the whole utterance either way.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass


def agreed_prefix(previous: str, current: str) -> str:
    """The longest common prefix of two hypotheses, not ending inside a word of text that has spaces."""
    n = 0
    while n < min(len(previous), len(current)) and previous[n] == current[n]:
        n += 1
    at_word_boundary = all(n == len(text) or text[n] == " " for text in (previous, current))
    if at_word_boundary or " " not in current:
        return current[:n]
    return current[: current.rfind(" ", 0, n) + 1]  # back to the last space (none: nothing settled yet)


@dataclass
class OpenPartial:
    """The partial-transcript state of one open utterance."""

    item_id: str
    sent: str = ""  # the deltas sent so far, joined
    hypothesis: str = ""  # the last partial decode's text
    decoded_samples: int = 0  # the open utterance's length when the last partial decode started
    task: asyncio.Task[None] | None = None
    closed: bool = False  # the utterance was committed: its final text, not partials, comes next

    def settle(self, hypothesis: str) -> str:
        """Take a new partial hypothesis; return the newly settled text to send ("" when nothing new settled)."""
        settled = agreed_prefix(self.hypothesis, hypothesis)
        self.hypothesis = hypothesis
        if len(settled) <= len(self.sent) or not settled.startswith(self.sent):
            return ""
        delta, self.sent = settled[len(self.sent) :], settled
        return delta

    def final_delta(self, text: str) -> str:
        """What the final text adds to the deltas sent ("" if a partial was revised: `completed` has it whole)."""
        return text[len(self.sent) :] if text.startswith(self.sent) else ""
