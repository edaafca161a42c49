"""asr_thread_cpu_seconds_total: the server's CPU per thread group, read from /proc at scrape time."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import pytest
from asr_inference.metrics import Metrics
from asr_inference.thread_cpu import thread_cpu_by_group
from prometheus_client import generate_latest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc (Linux)")


def _burn(seconds: float, burned: threading.Barrier, release: threading.Event) -> None:
    start = time.thread_time()
    while time.thread_time() - start < seconds:
        pass
    burned.wait()
    release.wait()


def test_python_threads_are_grouped_by_name_without_their_pool_index() -> None:
    burned, release = threading.Barrier(3), threading.Event()
    threads = [threading.Thread(target=_burn, args=(0.2, burned, release), name=f"asr-test-burn_{i}") for i in range(2)]
    for t in threads:
        t.start()
    try:
        burned.wait()  # both threads spent 0.2 s of CPU each and are still alive
        groups = thread_cpu_by_group()
    finally:
        release.set()
        for t in threads:
            t.join()
    assert "asr-test-burn_0" not in groups and "asr-test-burn_1" not in groups
    assert groups["asr-test-burn"] >= 0.3  # 2 x 0.2 s, less a clock tick each
    assert "MainThread" in groups


def test_no_proc_means_no_groups(tmp_path: Path) -> None:
    assert thread_cpu_by_group(tmp_path / "absent") == {}


def test_the_metric_is_exported_per_group() -> None:
    text = generate_latest(Metrics().registry).decode()
    assert 'asr_thread_cpu_seconds_total{threads="MainThread"}' in text
