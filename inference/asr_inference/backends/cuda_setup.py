"""Process-wide CUDA settings made once at load.

The device: `--device cuda:N` must make GPU N torch's current device, or every call that takes no device (the
caching allocator's cache, synchronize(), funasr's own helpers) lands on GPU 0, which may be another pod's.

TF32 for fp32 work on CUDA. torch 2.x defaults fp32 matrix products to full fp32 ("highest"), leaving Ampere and
Hopper tensor cores idle for an fp32 model; TF32 ("high") keeps fp32 storage and accumulation and rounds the inputs
of each product to a 10-bit mantissa, which ASR decoding tolerates (the fp16 warm-up check compares against it).
The setting is process-wide, as torch's is."""

from __future__ import annotations

from typing import Any


def configure_tf32(device: Any, enabled: bool) -> bool | None:
    """Set torch's fp32 matmul precision for `device`; returns whether TF32 is on, None on a non-CUDA device (where
    nothing is changed: CPU kernels ignore it, and a CPU server must not change a process it shares)."""
    if getattr(device, "type", "") != "cuda":
        return None
    import torch

    torch.set_float32_matmul_precision("high" if enabled else "highest")
    torch.backends.cudnn.allow_tf32 = enabled
    return enabled


def select_device(device: Any) -> None:
    """Make an indexed CUDA device the current one (a no-op for CPU and for plain "cuda", which is current)."""
    if getattr(device, "type", "") == "cuda" and device.index is not None:
        import torch

        torch.cuda.set_device(device)


def resolve_device(device: str) -> Any:
    """`--device` as a torch.device: auto → cuda when available, else cpu; a CUDA device without CUDA fails."""
    import torch

    from ..errors import ModelLoadError

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelLoadError(f"device {device!r} requested but CUDA is not available")
    return torch.device(device)
