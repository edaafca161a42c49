"""The machine a benchmark ran on, for the record: CPUs and package versions, other busy processes, the load
average, and which server code was measured."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]


def machine(device: str) -> dict[str, Any]:
    info: dict[str, Any] = {
        "device": device,
        "cpus": len(os.sched_getaffinity(0)),
        "cpu_model": "",
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu_model"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    from importlib.metadata import PackageNotFoundError, version

    for pkg in ("torch", "funasr", "aiohttp"):
        try:
            info[pkg] = version(pkg)
        except PackageNotFoundError:
            info[pkg] = None
    return info


def busy_processes(exclude: set[int]) -> list[dict[str, Any]]:
    """Other processes using CPU right now (machine state for the record)."""
    try:
        out = subprocess.run(
            ["ps", "-eo", "pid,pcpu,etimes,args", "--sort=-pcpu"], capture_output=True, text=True, timeout=5
        ).stdout.splitlines()[1:8]
    except (OSError, subprocess.SubprocessError):
        return []
    rows = []
    for line in out:
        parts = line.split(None, 3)
        if len(parts) == 4 and int(parts[0]) not in exclude and float(parts[1]) >= 5.0:
            rows.append({"pid": int(parts[0]), "pcpu": float(parts[1]), "cmd": parts[3][:120]})
    return rows


def git_state() -> dict[str, Any]:
    """Which server code was measured: the commit, and whether inference/ had uncommitted changes."""

    def git(*a: str) -> str:
        try:
            return subprocess.run(
                ["git", "-C", str(REPO), *a], capture_output=True, text=True, timeout=10
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    import hashlib
    import importlib.util

    spec = importlib.util.find_spec("asr_inference")
    pkg = Path(spec.origin).parent if spec is not None and spec.origin else None
    digest = hashlib.sha256()
    for f in sorted(pkg.rglob("*.py")) if pkg is not None else []:
        digest.update(f.read_bytes())
    return {
        "commit": git("rev-parse", "HEAD") or None,
        "inference_dirty": bool(git("status", "--porcelain", "--", "inference")),
        "asr_inference_path": str(pkg) if pkg is not None else None,  # a PYTHONPATH snapshot shows up here
        "asr_inference_sha256": digest.hexdigest()[:16],  # of its .py files: identifies the code measured
    }


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]
