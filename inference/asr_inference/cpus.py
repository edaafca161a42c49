"""How many CPUs this process may really use: its affinity, capped by its cgroup's CPU quota.

In a container with `limits.cpu: 2` on a 64-core node, `os.sched_getaffinity` still reports 64: sizing torch's
threads and the decode pool from it starts 64 busy threads on a 2-CPU quota, and the kernel throttles them all.
The quota is `cpu.max` on cgroup v2 ("<quota> <period>" or "max <period>") and `cpu.cfs_quota_us` /
`cpu.cfs_period_us` on cgroup v1 (-1 = no limit)."""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _own_cgroup_dirs(root: Path) -> list[Path]:
    """This process' cgroup directories (v2: the unified path; v1: the cpu controller's), then the root itself
    (inside a container the namespace's root is the container's cgroup)."""
    dirs = []
    for line in (_read(Path("/proc/self/cgroup")) or "").splitlines():
        if line.count(":") < 2:
            continue
        _, controllers, path = line.split(":", 2)
        if controllers == "" or "cpu" in controllers.split(","):
            for base in (root, root / "cpu", root / "cpu,cpuacct"):
                candidate = base / path.lstrip("/")
                if candidate != base and candidate.is_dir():
                    dirs.append(candidate)
    return [*dirs, root, root / "cpu", root / "cpu,cpuacct"]


def quota_cpus(root: Path = CGROUP_ROOT) -> float | None:
    """CPUs allowed by the first CPU quota found for this process, or None when there is none."""
    for d in _own_cgroup_dirs(root):
        v2 = _read(d / "cpu.max")
        if v2 is not None:
            quota, _, period = v2.partition(" ")
            if quota != "max" and period:
                return int(quota) / int(period)
            continue
        quota_us, period_us = _read(d / "cpu.cfs_quota_us"), _read(d / "cpu.cfs_period_us")
        if quota_us is not None and period_us is not None and int(quota_us) > 0:
            return int(quota_us) / int(period_us)
    return None


def usable_cpus(root: Path = CGROUP_ROOT) -> int:
    """min(affinity, quota rounded up), at least 1."""
    cpus = len(os.sched_getaffinity(0))
    quota = quota_cpus(root)
    if quota is not None:
        cpus = min(cpus, math.ceil(quota))
    return max(1, cpus)


def intra_op_threads(device_type: str, cpus: int, requested: int = 0) -> int:
    """Torch's intra-op threads (`--ncpu`; 0 = this choice). On CPU one less than the usable CPUs: the forward pass
    is the work, and decoding, features and the event loop need a core. On CUDA one: the inference thread only
    launches kernels, while the decode workers (one per CPU) compute features with torch on the CPU, each in its
    own thread — with N intra-op threads each, N workers would run N x N threads on N CPUs."""
    if requested:
        return requested
    return 1 if device_type == "cuda" else max(1, cpus - 1)
