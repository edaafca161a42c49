"""What a failed forward pass says about the device, from the exception alone (no device call: after a sticky
error every CUDA call fails too).

  - out of memory: this batch did not fit. The allocator's cache is released and the batch is run as two halves
    (not one item at a time: B forward passes for B items, where two would do), recursively;
  - sticky: the CUDA context is corrupted (an illegal address, an uncorrectable ECC error, a device-side assert)
    and every later call will fail the same way. Nothing in the process can repair it: the server stops taking
    work (/readyz and /healthz answer 503) so that the kubelet restarts the container with a fresh context.
"""

from __future__ import annotations

from typing import Any

# The CUDA errors after which the context is unusable (cudaErrorIllegalAddress, cudaErrorECCUncorrectable,
# cudaErrorAssert, cudaErrorLaunchFailure, cudaErrorMisalignedAddress, cudaErrorIllegalInstruction,
# cudaErrorHardwareStackError, cudaErrorInvalidPc), as torch words them in the exception.
STICKY_PHRASES = (
    "illegal memory access",
    "uncorrectable ecc error",
    "device-side assert triggered",
    "unspecified launch failure",
    "misaligned address",
    "illegal instruction",
    "hardware stack error",
    "invalid program counter",
)


def is_out_of_memory(exc: BaseException) -> bool:
    import torch

    oom = getattr(torch, "OutOfMemoryError", None) or torch.cuda.OutOfMemoryError
    return isinstance(exc, oom) or "out of memory" in str(exc).lower()


def sticky_device_error(exc: BaseException) -> str | None:
    """The reason, when `exc` leaves the device unusable; None for an error of this batch only."""
    message = str(exc).lower()
    for phrase in STICKY_PHRASES:
        if phrase in message:
            return f"{type(exc).__name__}: {phrase}"
    return None


def release_cached_memory(device: Any) -> None:
    """Give the allocator's cached blocks back, so that the halves of an OOM'd batch start from a clean pool."""
    if getattr(device, "type", "") == "cuda":
        import torch

        torch.cuda.empty_cache()
