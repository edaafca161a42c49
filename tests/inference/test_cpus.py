"""CPUs the server sizes its threads by: affinity capped by the cgroup's CPU quota (v1 and v2)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from asr_inference import cpus


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@pytest.fixture(autouse=True)
def many_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    """A 64-core node: only the quota can bring the count down."""
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: set(range(64)))


@pytest.mark.parametrize(
    ("files", "quota", "usable"),
    [
        ({"cpu.max": "200000 100000"}, 2.0, 2),  # v2, limits.cpu: 2
        ({"cpu.max": "150000 100000"}, 1.5, 2),  # v2, 1500m: rounded up
        ({"cpu.max": "50000 100000"}, 0.5, 1),  # v2, 500m: at least 1
        ({"cpu.max": "max 100000"}, None, 64),  # v2, no limit
        ({"cpu/cpu.cfs_quota_us": "400000", "cpu/cpu.cfs_period_us": "100000"}, 4.0, 4),  # v1
        ({"cpu,cpuacct/cpu.cfs_quota_us": "-1", "cpu,cpuacct/cpu.cfs_period_us": "100000"}, None, 64),  # v1, none
        ({}, None, 64),  # no cgroup files at all
    ],
)
def test_quota_caps_the_cpu_count(tmp_path: Path, files: dict[str, str], quota: float | None, usable: int) -> None:
    for name, text in files.items():
        _write(tmp_path / name, text)
    assert cpus.quota_cpus(tmp_path) == quota
    assert cpus.usable_cpus(tmp_path) == usable


def test_this_machine_reads_without_error() -> None:
    assert 1 <= cpus.usable_cpus() <= 64


@pytest.mark.parametrize(
    ("device", "n_cpus", "requested", "expected"),
    [
        ("cpu", 8, 0, 7),  # the forward pass is the work; one core for decoding and the event loop
        ("cpu", 1, 0, 1),
        ("cuda", 16, 0, 1),  # 16 decode workers with 16 intra-op threads each would be 256 threads on 16 CPUs
        ("cuda", 16, 4, 4),  # --ncpu wins
    ],
)
def test_intra_op_threads_leave_the_cpus_to_the_decode_workers_on_cuda(
    device: str, n_cpus: int, requested: int, expected: int
) -> None:
    assert cpus.intra_op_threads(device, n_cpus, requested) == expected
