"""The warm-up check that decides whether a reduced precision (fp16/bf16) is served: pure functions, no model.

Exact transcript equality is the wrong test for a real model: frames whose two best logits are nearly tied flip
under any rounding change (bf16 flipped some frame on 8 of 8 warm-up items of SenseVoice-Small's real dims on CPU),
so an exact gate refuses every real model and `--precision fp16` silently serves fp32. What matters is how often
the best token of an output frame changes (per-frame argmax agreement) and what that does to the text (character
error rate against the fp32 transcripts). NaN/inf anywhere is a refusal whatever the agreement.

`choose` makes the warm-up decision for every backend (funasr, transformers); `rerun_if_not_finite` is the
serving-time half.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("asr_inference.backend")


@dataclass(frozen=True)
class Verdict:
    keep: bool
    reason: str | None  # why the candidate is refused (None when kept)
    agreement: float | None  # share of output frames with the same best token as fp32; None: family has no frames
    cer: float | None  # character error rate of the candidate's transcripts against fp32's


def argmax_agreement(reference: Sequence[Any], candidate: Sequence[Any]) -> float:
    """Share of output frames whose best token equals fp32's. Items are 1-D sequences of token ids per frame; where
    a candidate has more or fewer frames (Paraformer's predictor may fire differently), the extra frames disagree."""
    agree = total = 0
    for ref, cand in zip(reference, candidate, strict=True):
        ref, cand = _ids(ref), _ids(cand)
        agree += sum(a == b for a, b in zip(ref, cand, strict=False))
        total += max(len(ref), len(cand))
    return agree / total if total else 1.0


def _ids(frames: Any) -> list[int]:
    return list(frames.tolist() if hasattr(frames, "tolist") else frames)  # a CPU tensor or a list of ints


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance in characters (one row of the DP table at a time)."""
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def character_error_rate(references: Sequence[str], hypotheses: Sequence[str]) -> float:
    """Corpus CER: total edits over total reference characters (an empty reference counts its hypothesis whole)."""
    edits = sum(edit_distance(r, h) for r, h in zip(references, hypotheses, strict=True))
    chars = sum(len(r) for r in references)
    if chars == 0:
        return 0.0 if edits == 0 else 1.0
    return edits / chars


def judge(
    precision: str,
    *,
    finite: bool,
    reference_texts: Sequence[str],
    candidate_texts: Sequence[str],
    reference_frames: Sequence[Any] | None,
    candidate_frames: Sequence[Any] | None,
    min_agreement: float,
    max_cer: float,
) -> Verdict:
    """Keep `precision` only if its outputs are finite, its per-frame best tokens agree with fp32's on at least
    `min_agreement` of the frames (where the family has frames), and its transcripts' CER is at most `max_cer`."""
    cer = character_error_rate(reference_texts, candidate_texts)
    agreement = None
    if reference_frames is not None and candidate_frames is not None:
        agreement = argmax_agreement(reference_frames, candidate_frames)
    if not finite:
        return Verdict(False, f"{precision} produced NaN/inf outputs on the warm-up batch", agreement, cer)
    if agreement is not None and agreement < min_agreement:
        return Verdict(
            False,
            f"{precision} per-frame best tokens agree with fp32 on {100 * agreement:.2f} % of the warm-up frames "
            f"(at least {100 * min_agreement:.2f} % needed)",
            agreement,
            cer,
        )
    if cer > max_cer:
        return Verdict(
            False,
            f"{precision} transcripts differ from fp32 with a character error rate of {100 * cer:.2f} % on the "
            f"warm-up items (at most {100 * max_cer:.2f} % allowed)",
            agreement,
            cer,
        )
    return Verdict(True, None, agreement, cer)


@dataclass(frozen=True)
class Choice:
    """The precision a backend serves after the warm-up check, and why (for ModelInfo and /readyz)."""

    precision: str
    check_failure: str | None  # the check's refusal, also when the precision is forced
    verdict: Verdict | None  # None when no reduced precision ran
    forced: bool

    @property
    def fallback_reason(self) -> str | None:
        return self.check_failure if self.precision == "fp32" else None


def judge_outputs(label: str, reference: Any, candidate: Any, settings: Any) -> Verdict:
    """`judge` on two BatchOutputs with the settings' thresholds: a reduced precision or another runtime against
    PyTorch fp32."""
    return judge(
        label,
        finite=candidate.finite,
        reference_texts=[r.text for r in reference.results],
        candidate_texts=[r.text for r in candidate.results],
        reference_frames=reference.frames,
        candidate_frames=candidate.frames,
        min_agreement=settings.precision_min_agreement,
        max_cer=settings.precision_max_cer,
    )


def choose(settings: Any, device_type: str, reference: Any, run: Callable[[str], Any]) -> Choice:
    """The warm-up decision every backend makes: fp32 unless the requested reduced precision runs (`run(precision)`
    → BatchOutput) and passes `judge_outputs` against `reference` (fp32's outputs on the same items), or fails it
    with `force_precision` set. A reduced run that raises is a failed check, not a failed start."""
    requested = settings.precision
    if requested == "fp32":
        return Choice("fp32", None, None, False)
    if requested == "fp16" and device_type == "cpu":
        reason = "fp16 is not supported on CPU (only bf16 is reduced there)"
        log.warning("precision %s requested; serving fp32: %s", requested, reason)
        return Choice("fp32", reason, None, False)
    try:
        reduced = run(requested)
    except Exception as exc:  # a dtype error in some op
        reason = f"{requested} forward raised {type(exc).__name__}: {exc}"
        log.warning("precision %s requested; serving fp32: %s", requested, reason)
        return Choice("fp32", reason, None, False)
    verdict = judge_outputs(requested, reference, reduced, settings)
    if verdict.reason is None:
        return Choice(requested, None, verdict, False)
    if settings.force_precision:
        log.warning("precision %s fails the warm-up check but is forced: %s", requested, verdict.reason)
        return Choice(requested, verdict.reason, verdict, True)
    log.warning("precision %s requested; serving fp32: %s", requested, verdict.reason)
    return Choice("fp32", verdict.reason, verdict, False)


def record(info: Any, choice: Choice) -> str:
    """Write the choice into a ModelInfo; returns the precision to serve."""
    info.precision = choice.precision
    info.precision_fallback_reason = choice.fallback_reason
    info.precision_check_failure = choice.check_failure
    info.precision_forced = choice.forced
    if choice.verdict is not None:
        info.precision_agreement, info.precision_cer = choice.verdict.agreement, choice.verdict.cer
    return choice.precision


def autocast(device_type: str, precision: str) -> contextlib.AbstractContextManager[Any]:
    """torch autocast for a reduced precision (fp16 / bf16); nothing for fp32."""
    if precision == "fp32":
        return contextlib.nullcontext()
    import torch

    dtype = torch.float16 if precision == "fp16" else torch.bfloat16
    return torch.autocast(device_type=device_type, dtype=dtype)


def rerun_if_not_finite(run: Callable[[str], Any], precision: str, metrics: Any, size: int) -> Any:
    """`run(precision)`, and again in fp32 when a reduced precision's outputs were not finite on real traffic
    (the warm-up gate cannot see every input): never return what NaN/inf logits decode to."""
    out = run(precision)
    if not out.finite and precision != "fp32":
        log.warning("%s outputs of a batch of %d were not finite; rerunning it in fp32", precision, size)
        if metrics is not None:
            metrics.fp32_reruns_total.inc()
        out = run("fp32")
    return out
