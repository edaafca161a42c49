"""The batched SenseVoice forward as one module, and tracing it into a TorchScript graph that is checked before use.

Why a graph: a small model's forward is hundreds of short torch ops, and in eager mode every one of them needs
Python's GIL. In the server the event loop (HTTP, multipart) and the decode/feature threads hold the GIL too, so
the inference thread waits for hand-overs between ops: measured on 2 CPU cores, a batch of 8 demo-model clips took
15 ms alone and 79 ms next to one busy Python thread. A traced module runs in TorchScript's C++ interpreter, which
releases the GIL for the whole call: 13 ms alone, 17 ms next to the same thread.

A trace records the ops of one example run; shapes stay symbolic (sizes read during tracing are traced values),
and SenseVoice's encoder has no data-dependent Python control flow, so one trace serves every batch size and
length. That is an argument, not a proof: `trace_checked` runs the graph and the eager module on batches of other
shapes than the example and keeps the graph only if every output matches.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch

ForwardFn = Callable[..., tuple[torch.Tensor, torch.Tensor]]


class SenseVoiceForward(torch.nn.Module):
    """Prompt embeddings + encoder + CTC logits for a padded batch: the per-batch part of
    `SenseVoiceSmall.inference`, with per-item language and text-normalisation queries.

    Logits, not `ctc.log_softmax`: serving needs only each frame's best token, which the monotone log-softmax does
    not change; skipping it saves a full-vocabulary pass (in fp32 under autocast) and a (B, T', vocab) fp32 tensor.

    Inputs: feats (B, T, D) padded, lengths (B,) int, language ids (B, 1), text-norm ids (B, 1).
    Outputs: logits (B, 4 + T', vocab) and valid output lengths (B,)."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.embed = model.embed
        self.encoder = model.encoder
        self.ctc = model.ctc
        # the event and emotion queries are the fixed ids 1, 2 in SenseVoiceSmall.inference
        device = model.embed.weight.device  # the model is already on its serving device (cuda:N or cpu)
        self.register_buffer("event_emo_ids", torch.tensor([[1, 2]], device=device), persistent=False)

    def forward(
        self, feats: torch.Tensor, lengths: torch.Tensor, language: torch.Tensor, textnorm: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        event_emo = self.embed(self.event_emo_ids).expand(feats.size(0), -1, -1)
        speech = torch.cat(
            (self.embed(language), event_emo, self.embed(textnorm), feats.to(self.embed.weight.dtype)), dim=1
        )
        encoder_out, encoder_lens = self.encoder(speech, lengths + 4)
        if isinstance(encoder_out, tuple):
            encoder_out = encoder_out[0]
        return self.ctc.ctc_lo(encoder_out), encoder_lens


def trace_checked(
    module: torch.nn.Module,
    example: Sequence[torch.Tensor],
    checks: Sequence[Sequence[torch.Tensor]],
    atol: float = 1e-5,
    eager_context: Callable[[], contextlib.AbstractContextManager[Any]] = contextlib.nullcontext,
    optimize: bool = True,
) -> tuple[ForwardFn | None, str | None]:
    """Trace `module` on `example`, then compare graph and eager outputs on every batch in `checks`. Returns
    (graph, None), or (None, why) when tracing fails or any output differs — the caller then keeps the eager module.

    `optimize=False` runs the graph with TorchScript's optimising passes off (`Unoptimized`) — for CUDA: there they
    fuse elementwise ops, re-specialising (compiling) the graph for new input shapes while serving (latency spikes)
    and rounding differently from the eager kernels the graph is checked against; the point here is running without
    the GIL, not fusion. On CPU TorchScript does not fuse (`torch._C._jit_can_fuse_on_cpu()` is False), and the
    optimised executor was ~5 % faster in the server (runs `ab-unopt`, `check-unopt`), so the caller keeps it on.

    `eager_context`: entered around tracing and around the eager reference runs, not around the graph runs. For
    autocast (fp16/bf16) this is the point: tracing under autocast records the casts it makes, so the graph run
    *outside* autocast reproduces the eager forward run *inside* it (run inside, the casts would apply twice).

    `atol` is for fp32 outputs; reduced-precision outputs may differ by a few units in their last place (fused
    kernels round differently), so for them the bound is 8 machine epsilons of their dtype times their largest
    magnitude — and the best token of every frame must still be the same."""
    try:
        with torch.no_grad(), eager_context(), warnings.catch_warnings():
            # TracerWarnings flag constructs that may not generalise; the checks below decide that instead.
            # torch.jit is deprecated upstream (DeprecationWarning); when it goes, this falls back to eager.
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            traced = torch.jit.trace(module, tuple(t.clone() for t in example), check_trace=False)
    except Exception as exc:  # an untraceable model is served eagerly, not refused
        return None, f"tracing raised {type(exc).__name__}: {exc}"
    graph: ForwardFn = traced if optimize else Unoptimized(traced)
    for inputs in checks:
        with torch.inference_mode():
            with eager_context():
                expected = module(*(t.clone() for t in inputs))
            # twice: the optimising executor profiles the first runs and optimises after them
            for _ in range(2 if optimize else 1):
                got = graph(*(t.clone() for t in inputs))
                problem = _compare(expected, got, atol)
                if problem is not None:
                    shape = tuple(inputs[0].shape)
                    return None, f"traced graph differs from eager on a batch of shape {shape}: {problem}"
    return graph, None


class Unoptimized:
    """A traced graph called with TorchScript's optimising executor passes off (see `trace_checked`)."""

    def __init__(self, graph: Any) -> None:
        self.graph = graph

    def __call__(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.jit.optimized_execution(False):
            out: tuple[torch.Tensor, torch.Tensor] = self.graph(*inputs)
        return out


def _compare(expected: Sequence[torch.Tensor], got: Sequence[torch.Tensor], atol: float) -> str | None:
    for i, (a, b) in enumerate(zip(expected, got, strict=True)):
        if a.shape != b.shape or a.dtype != b.dtype:
            return f"output {i} is {b.dtype}{tuple(b.shape)}, eager gives {a.dtype}{tuple(a.shape)}"
        if a.is_floating_point():
            if not torch.equal(a.argmax(-1), b.argmax(-1)):
                return f"output {i}: best tokens differ"
            diff = float((a.float() - b.float()).abs().nan_to_num(nan=float("inf")).max()) if a.numel() else 0.0
            bound = atol
            if a.dtype in (torch.float16, torch.bfloat16) and a.numel():
                bound = max(atol, 8 * torch.finfo(a.dtype).eps * float(a.float().abs().max()))
            if diff > bound:
                return f"output {i}: max abs difference {diff:.3g} > {bound:.3g}"
        elif not torch.equal(a, b):
            return f"output {i} differs"
    return None
