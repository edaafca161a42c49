"""CPU milliseconds of feature extraction per audio second, one thread: the batched path (one call for 12 clips)
against the same code one clip at a time, and optionally against an older `features.py` (per item).

    python tools/bench_features.py [--baseline /tmp/snap/inference/asr_inference/features.py]

Clips: 12 espeak-ng clips of 8-12 s (asr-bench's `espeak-10s`); model: the embedded demo model's frontend.
CPU time of this thread (`time.thread_time`), median of 7 rounds after 3 untimed ones.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", type=Path, help="an older features.py to compare (its FastFbank per item)")
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    import torch
    from asr_bench.clips import espeak_clips
    from asr_inference.backends.funasr_backend import FunASRBackend
    from asr_inference.config import Settings
    from asr_inference.features import FastFbank

    clips = espeak_clips(Path(tempfile.mkdtemp(prefix="bench-features-")), 12, 8.0, 12.0)
    backend = FunASRBackend(Settings(model=str(ROOT / "inference/asr_inference/models/demo"), device="cpu", ncpu=1))
    backend.load()
    torch.set_num_threads(1)
    waves = [torch.from_numpy(c.samples()) for c in clips]
    audio_s = sum(c.duration_s for c in clips)
    fast, cpu = FastFbank(backend.frontend), torch.device("cpu")
    cases: dict[str, Callable[[], object]] = {
        "batched, 12 clips in one call": lambda: fast.batch(waves, cpu),
        "batched code, one clip per call": lambda: [fast.batch([w], cpu) for w in waves],
    }
    if args.baseline is not None:
        spec = importlib.util.spec_from_file_location("baseline_features", args.baseline)
        assert spec is not None and spec.loader is not None
        baseline = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(baseline)
        old = baseline.FastFbank(backend.frontend)
        cases[f"baseline ({args.baseline.name}), per clip"] = lambda: [old(w) for w in waves]
    times: dict[str, list[float]] = {name: [] for name in cases}
    with torch.inference_mode():
        for _ in range(3):
            for fn in cases.values():
                fn()
        for _ in range(args.rounds):
            for name, fn in cases.items():
                t = time.thread_time()
                fn()
                times[name].append(1000 * (time.thread_time() - t) / audio_s)
    print(f"{len(clips)} clips, {audio_s:.1f} s of audio; CPU ms per audio second, median (min-max) of {args.rounds}:")
    for name, values in times.items():
        print(f"  {name:40s} {statistics.median(values):.3f} ({min(values):.3f}-{max(values):.3f})")


if __name__ == "__main__":
    main()
