"""graph_mode=trace: SenseVoice's batched forward runs as a traced TorchScript graph, kept only when it reproduces
the eager module; everything served is identical to graph_mode=eager."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import torch
from asr_inference.backends import graph as graph_module
from asr_inference.backends.graph import SenseVoiceForward, Unoptimized, trace_checked
from serving import serve, transcribe

CLIPS = ["short_hello.wav", "digits_a.wav", "digits_b.wav", "command_c.wav", "sentence_d.wav", "sentence_e.wav"]


async def _serve_and_transcribe(model_dir: Path, clips: list[Path], graph_mode: str) -> tuple[dict, list[Any], int]:
    """/readyz, then a concurrent burst (one batch) and each clip alone with explicit languages; returns the
    responses and how many eager forwards ran after warm-up."""
    async with serve(
        model=str(model_dir), graph_mode=graph_mode, max_batch_size=len(clips), max_wait_ms=1500, cache_entries=0
    ) as (app, client):
        ready = (await client.get("/readyz")).json()
        eager = app.state.asr.backend._sv_forward
        before = getattr(eager, "test_calls", 0)
        burst = await asyncio.gather(*(transcribe(client, c, response_format="verbose_json") for c in clips))
        alone = [await transcribe(client, c, response_format="verbose_json", language="en") for c in clips]
        after = getattr(eager, "test_calls", 0)
    return ready, [r.json() for r in (*burst, *alone)], after - before


@pytest.fixture
def eager_calls(monkeypatch: pytest.MonkeyPatch) -> None:
    original = SenseVoiceForward.forward

    def counted(module: SenseVoiceForward, *args: Any) -> Any:
        module.test_calls = getattr(module, "test_calls", 0) + 1  # type: ignore[assignment]
        return original(module, *args)

    monkeypatch.setattr(SenseVoiceForward, "forward", counted)


@pytest.mark.usefixtures("eager_calls")
async def test_traced_graph_serves_exactly_what_eager_serves(sensevoice_dir: Path, speech_files: dict[str, Path]):
    clips = [speech_files[name] for name in CLIPS]
    ready, traced, eager_forwards_traced = await _serve_and_transcribe(sensevoice_dir, clips, "trace")
    assert ready["graph_mode"] == "trace" and ready["graph_fallback_reason"] is None
    assert eager_forwards_traced == 0, "with a checked graph no request should run the eager module"
    ready, eager, eager_forwards = await _serve_and_transcribe(sensevoice_dir, clips, "eager")
    assert ready["graph_mode"] == "eager" and ready["graph_fallback_reason"] is None
    assert eager_forwards >= 1 + len(clips)  # the burst's batch(es) and every single request
    assert traced == eager  # text, segments, token times, language: all of it
    assert len({r["text"] for r in traced}) > 1


async def test_untraceable_model_is_served_eagerly_with_the_reason(
    sensevoice_dir: Path, speech_files: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("this op cannot be traced")

    monkeypatch.setattr(graph_module.torch.jit, "trace", refuse)
    async with serve(model=str(sensevoice_dir)) as (_, client):
        ready = (await client.get("/readyz")).json()
        response = await transcribe(client, speech_files["digits_a.wav"])
    assert ready["graph_mode"] == "eager"
    assert "tracing raised RuntimeError: this op cannot be traced" in ready["graph_fallback_reason"]
    assert response.status_code == 200 and response.json()["text"]


async def test_paraformer_runs_eagerly_and_says_why(paraformer_dir: Path) -> None:
    async with serve(model=str(paraformer_dir)) as (_, client):
        ready = (await client.get("/readyz")).json()
    assert ready["graph_mode"] == "eager"
    assert "paraformer" in ready["graph_fallback_reason"]


# ------------------------------------------------------------------------------------------ trace_checked
class _Masked(torch.nn.Module):
    """Shape-generic: the mask is built from traced sizes."""

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mask = torch.arange(x.size(1))[None, :] < lengths[:, None]
        return (x * mask[..., None]).log_softmax(-1), mask.sum(1)


class _BakesLength(torch.nn.Module):
    """Not shape-generic: `int(...)` turns the example's longest length into a constant of the trace."""

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        longest = int(lengths.max())
        return x[:, :longest].log_softmax(-1), lengths


def _batch(b: int, t: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, t + 1, (b,), generator=g)
    lengths[0] = t
    return torch.randn(b, t, 5, generator=g), lengths


def test_trace_checked_keeps_a_shape_generic_graph() -> None:
    graph, reason = trace_checked(_Masked(), _batch(2, 7, 0), [_batch(5, 13, 1), _batch(1, 3, 2)])
    assert reason is None and graph is not None
    x, lengths = _batch(3, 21, 3)  # a shape neither traced nor checked
    expected = _Masked()(x, lengths)
    got = graph(x, lengths)
    assert torch.equal(got[1], expected[1]) and torch.allclose(got[0], expected[0])


def test_unoptimized_graph_for_cuda_computes_the_same() -> None:
    """`optimize=False` (what CUDA serving uses: no fusion) gives the same graph, run with TorchScript's
    optimising passes off for the call only."""
    graph, reason = trace_checked(_Masked(), _batch(2, 7, 0), [_batch(5, 13, 1)], optimize=False)
    assert reason is None and isinstance(graph, Unoptimized)
    x, lengths = _batch(3, 21, 3)
    expected = _Masked()(x, lengths)
    got = graph(x, lengths)
    assert torch.equal(got[1], expected[1]) and torch.allclose(got[0], expected[0])
    assert torch._C._get_graph_executor_optimize()  # restored after the call


def test_trace_checked_rejects_a_graph_that_baked_a_shape() -> None:
    graph, reason = trace_checked(_BakesLength(), _batch(2, 7, 0), [_batch(5, 13, 1)])
    assert graph is None
    assert reason is not None and "differs from eager on a batch of shape (5, 13, 5)" in reason


def test_trace_checked_rejects_a_graph_with_different_values() -> None:
    """Same shapes, other numbers (here a Python float the trace kept as a constant): refused on the values."""
    graph, reason = trace_checked(_Switching(), _batch(2, 7, 0), [_batch(4, 9, 1)])
    assert graph is None
    assert reason is not None and "max abs difference" in reason


class _Switching(torch.nn.Module):
    """Traced with scale 3.0 (a Python float, so a constant of the graph); eager calls after that use 1.0."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = 3.0
        self.inner = _Masked()

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not torch.jit.is_tracing():
            self.scale = 1.0
        out, n = self.inner(x * self.scale, lengths)
        return out, n


def test_forward_module_lives_on_the_models_device(sensevoice_dir: Path) -> None:
    """Its own constant (the event/emotion query ids) is created where the model is, so CUDA serving does not
    index a CUDA embedding with CPU ids. The `meta` device stands in for a GPU here."""
    from asr_inference.backends.funasr_backend import FunASRBackend
    from asr_inference.config import Settings

    backend = FunASRBackend(Settings(model=str(sensevoice_dir), device="cpu"))
    backend.load()
    module = SenseVoiceForward(backend.model.to("meta"))
    assert {b.device.type for b in module.buffers()} == {"meta"}
    assert {p.device.type for p in module.parameters()} == {"meta"}


def test_bf16_graph_traced_under_autocast_replays_it_exactly(sensevoice_dir: Path, speech_files: dict[str, Path]):
    """A graph traced inside autocast and run outside it gives what the eager module gives inside autocast — on
    batches of other shapes than the one traced. (Run inside autocast, the casts would apply twice.)"""
    import soundfile as sf
    from asr_inference.backends import DecodeOptions
    from asr_inference.backends.funasr_backend import FunASRBackend
    from asr_inference.config import Settings

    backend = FunASRBackend(Settings(model=str(sensevoice_dir), device="cpu"))
    backend.load()
    items = [backend.prepare(sf.read(speech_files[name], dtype="float32")[0]) for name in CLIPS]

    def inputs(batch: list) -> tuple[torch.Tensor, ...]:
        return backend._sensevoice_inputs(batch, [DecodeOptions()] * len(batch))

    autocast = lambda: torch.autocast("cpu", dtype=torch.bfloat16)  # noqa: E731
    module = backend._sv_forward
    graph, reason = trace_checked(module, inputs(items[:2]), [inputs(items[2:5])], eager_context=autocast)
    assert reason is None and graph is not None
    for batch in (items, items[3:4]):  # shapes neither traced nor checked
        with torch.inference_mode():
            with autocast():
                expected = module(*inputs(batch))
            got = graph(*inputs(batch))
        assert expected[0].dtype == got[0].dtype == torch.bfloat16
        assert torch.equal(expected[0], got[0]) and torch.equal(expected[1], got[1])
    with torch.inference_mode(), autocast():
        twice = graph(*inputs(items))
    assert twice[0].dtype != torch.bfloat16 or not torch.equal(twice[0], expected[0])  # why it runs outside


def test_served_forward_returns_logits_without_a_vocabulary_log_softmax(sensevoice_dir: Path) -> None:
    """Serving needs each frame's best token only: no log-softmax pass over the vocabulary in the graph."""
    from asr_inference.backends.funasr_backend import FunASRBackend
    from asr_inference.config import Settings

    backend = FunASRBackend(Settings(model=str(sensevoice_dir), device="cpu", ncpu=1))
    backend.load()
    forward = backend._sv_forward
    assert forward is not None
    feats = torch.randn(2, 30, 560)
    inputs = (feats, torch.tensor([30, 20]), torch.tensor([[0], [0]]), torch.tensor([[14], [14]]))
    traced = torch.jit.trace(forward, inputs, check_trace=False)
    assert "log_softmax" not in str(traced.inlined_graph)
    logits, _ = forward(*inputs)
    assert not torch.allclose(logits.logsumexp(-1), torch.zeros(()))  # raw logits, not log-probabilities
