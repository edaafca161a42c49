"""The CUDA-only settings made at load and at scrape, checked for their wiring on a machine without a GPU (a CUDA
torch.device can be named without one; torch.cuda's calls are replaced where they would need the device)."""

from __future__ import annotations

from typing import Any

import pytest


@pytest.mark.parametrize(("enabled", "matmul"), [(True, "high"), (False, "highest")])
def test_tf32_is_set_for_cuda_and_left_alone_on_cpu(enabled: bool, matmul: str) -> None:
    """Wiring only (no GPU here): a CUDA device gets torch's TF32 matmul precision as --tf32 says; a CPU device
    changes nothing process-wide."""
    import torch
    from asr_inference.backends.cuda_setup import configure_tf32

    before = (torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32)
    try:
        assert configure_tf32(torch.device("cpu"), enabled) is None
        assert (torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32) == before
        assert configure_tf32(torch.device("cuda", 0), enabled) is enabled
        assert torch.get_float32_matmul_precision() == matmul and torch.backends.cudnn.allow_tf32 is enabled
    finally:
        torch.set_float32_matmul_precision(before[0])
        torch.backends.cudnn.allow_tf32 = before[1]


def test_an_indexed_cuda_device_becomes_current(monkeypatch: pytest.MonkeyPatch) -> None:
    """Wiring only (torch.cuda mocked): --device cuda:1 makes GPU 1 current, so that calls without a device never
    land on GPU 0; plain cuda and cpu leave the current device alone."""
    import torch
    from asr_inference.backends.cuda_setup import select_device

    chosen: list[Any] = []
    monkeypatch.setattr(torch.cuda, "set_device", chosen.append)
    for device in ("cpu", "cuda", "cuda:1"):
        select_device(torch.device(device))
    assert chosen == [torch.device("cuda", 1)]


def test_gpu_memory_gauges_report_the_peak_between_scrapes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Wiring only (torch.cuda mocked): each scrape reports the peak since the previous one and starts a new window;
    allocated and reserved are read at the scrape. A CPU device sets nothing."""
    import torch
    from asr_inference.gpu_memory import refresh_gpu_memory
    from asr_inference.metrics import Metrics

    allocator = {"peak": 9_000, "allocated": 1_000, "reserved": 12_000}
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device: allocator["peak"])
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda device: allocator.update(peak=1_000))
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device: allocator["allocated"])
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device: allocator["reserved"])
    metrics = Metrics()
    refresh_gpu_memory(metrics, torch.device("cpu"))
    assert metrics.gpu_memory_peak_bytes._value.get() == 0
    refresh_gpu_memory(metrics, torch.device("cuda", 0))
    assert metrics.gpu_memory_peak_bytes._value.get() == 9_000  # the batch's activations, not the model alone
    assert metrics.gpu_memory_allocated_bytes._value.get() == 1_000
    assert metrics.gpu_memory_reserved_bytes._value.get() == 12_000
    refresh_gpu_memory(metrics, torch.device("cuda", 0))
    assert metrics.gpu_memory_peak_bytes._value.get() == 1_000  # a quiet window: the peak was reset
