"""CPU seconds per group of the server's threads, read from /proc at each scrape (Linux; nothing elsewhere).

Where the CPU of a pod goes decides what caps it: the event loop (HTTP, multipart, responses), the decode workers
(decoding, per-item model input), the inference threads (features of each batch, the forward's kernel launches or
its CPU math), and threads with no Python object (`native`: torch's intra-op pool, ONNX Runtime's, CUDA's). Python
threads are grouped by name without their pool index (`asr-decode_3` -> `asr-decode`; `MainThread` runs the event
loop), so the label stays low-cardinality. A thread that exits takes its seconds with it (a counter reset).
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterator
from pathlib import Path

from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_POOL_INDEX = re.compile(r"_\d+$")


def thread_cpu_by_group(task_dir: Path = Path("/proc/self/task")) -> dict[str, float]:
    """User + system CPU seconds of this process's threads, summed per group; {} where /proc is absent."""
    names = {t.native_id: _POOL_INDEX.sub("", t.name) for t in threading.enumerate() if t.native_id is not None}
    groups: dict[str, float] = {}
    try:
        tids = os.listdir(task_dir)
    except OSError:
        return groups
    for tid in tids:
        try:
            fields = (task_dir / tid / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # the thread ended between the listing and the read
        group = names.get(int(tid), "native")
        groups[group] = groups.get(group, 0.0) + (int(fields[11]) + int(fields[12])) / _TICKS
    return groups


class ThreadCpuCollector(Collector):
    """`asr_thread_cpu_seconds_total{threads}` at scrape time."""

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(
            "asr_thread_cpu_seconds",
            "CPU seconds of the server's threads per group: MainThread (the event loop), asr-decode (decoding, "
            "per-item model input), asr-inference (batches: features and forward), native (threads without a "
            "Python object: torch's intra-op pool, ONNX Runtime, CUDA).",
            labels=["threads"],
        )
        for group, seconds in sorted(thread_cpu_by_group().items()):
            family.add_metric([group], seconds)
        yield family
