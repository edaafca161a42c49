"""The demo model's batched forward alone and next to a busy Python thread, eager vs traced (docs/performance.md).

A pure-Python loop in another thread holds the GIL whenever it runs; an eager forward needs the GIL between every
torch op, a TorchScript graph does not. Prints the mean forward time of a batch of 8 held-out clips in each case.

    python tools/gil_contention.py
"""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import soundfile as sf
from asr_inference.backends import DecodeOptions
from asr_inference.backends.funasr_backend import FunASRBackend
from asr_inference.config import Settings
from asr_inference.warmup import warmup_samples

ROOT = Path(__file__).resolve().parents[1]


def forward_ms(backend: FunASRBackend, items: list, reps: int = 50) -> float:
    options = [DecodeOptions()] * len(items)
    for _ in range(5):
        backend.transcribe_batch(items, options)
    t0 = time.perf_counter()
    for _ in range(reps):
        backend.transcribe_batch(items, options)
    return 1000 * (time.perf_counter() - t0) / reps


def in_thread(fn, *args):  # type: ignore[no-untyped-def]
    out = []
    worker = threading.Thread(target=lambda: out.append(fn(*args)))
    worker.start()
    worker.join()
    return out[0]


def spin(stop: threading.Event) -> None:
    while not stop.is_set():
        sum(range(1000))


def main() -> None:
    sys.setswitchinterval(2e-4)  # as asr-serve sets it
    for mode in ("eager", "trace"):
        settings = Settings(model="builtin:demo", device="cpu", ncpu=1, graph_mode=mode)
        backend = FunASRBackend(settings)
        backend.load()
        backend.warm([backend.prepare(s) for s in warmup_samples(settings)])
        clips = sorted((ROOT / "tests/data/demo_heldout").glob("*.wav"))[:8]
        items = [backend.prepare(sf.read(c, dtype="float32")[0]) for c in clips]
        alone = in_thread(forward_ms, backend, items)
        stop = threading.Event()

        spinner = threading.Thread(target=spin, args=(stop,))
        spinner.start()
        try:
            contended = in_thread(forward_ms, backend, items)
        finally:
            stop.set()
            spinner.join()
        print(f"{mode:6s} ({backend.info.graph_mode}): batch of 8 alone {alone:5.1f} ms, "
              f"beside a busy Python thread {contended:5.1f} ms ({contended / alone:.1f}x)")  # fmt: skip


if __name__ == "__main__":
    main()
