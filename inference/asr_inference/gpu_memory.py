"""GPU memory as a scrape sees it. Read after a batch, allocated memory is the model alone (the batch's activations
are freed by then): the peak between two scrapes is what sizing needs, so torch's peak counter is read and reset
at each scrape, and the current allocated/reserved figures are read then too."""

from __future__ import annotations

from typing import Any

from .metrics import Metrics


def refresh_gpu_memory(metrics: Metrics, device: Any) -> None:
    """Set the GPU memory gauges for `device` (nothing on a CPU device) and start the next peak window."""
    if getattr(device, "type", "") != "cuda":
        return
    import torch

    metrics.gpu_memory_peak_bytes.set(torch.cuda.max_memory_allocated(device))
    torch.cuda.reset_peak_memory_stats(device)
    metrics.gpu_memory_allocated_bytes.set(torch.cuda.memory_allocated(device))
    metrics.gpu_memory_reserved_bytes.set(torch.cuda.memory_reserved(device))
