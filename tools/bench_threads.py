"""Where a running server's CPU goes, per Python thread, under closed-loop load (docs/performance.md).

Starts `asr-serve` (extra flags after `--`), maps OS thread ids to Python thread names with `py-spy dump`, drives
`--concurrency` clients with asr-bench's load generator for `--seconds`, and prints each thread group's CPU
milliseconds per request (from /proc/<pid>/task/<tid>/stat) next to the load generator's own.

    python tools/bench_threads.py --concurrency 16 -- --ncpu 0 --graph-mode eager
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from asr_bench import load  # noqa: E402
from asr_bench.clips import load_dir  # noqa: E402


def thread_cpu_s(pid: int, names: dict[str, str]) -> dict[str, float]:
    out: dict[str, float] = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        group = re.sub(r"_\d+$", "", names.get(tid, "other (no Python frame)"))
        out[group] = out.get(group, 0.0) + (load.process_cpu_s(pid, int(tid)) or 0.0)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=12.0)
    parser.add_argument("--port", type=int, default=18123)
    parser.add_argument("--clips", type=Path, default=ROOT / "tests/data/demo_heldout")
    parser.add_argument("server_args", nargs="*", help="extra asr-serve flags (after --)")
    args = parser.parse_args()
    bindir = Path(sys.executable).parent
    cmd = [str(bindir / "asr-serve"), "--host", "127.0.0.1", "--port", str(args.port), "--cache-entries", "0"]
    proc = subprocess.Popen([*cmd, "--log-level", "warning", *args.server_args], stdout=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{args.port}"
    try:
        for _ in range(600):
            try:
                if httpx.get(url + "/readyz", trust_env=False).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        dump = subprocess.run(
            [str(bindir / "py-spy"), "dump", "--pid", str(proc.pid), "--nonblocking"], capture_output=True, text=True
        ).stdout
        names = {m.group(1): m.group(2) for m in re.finditer(r'Thread (\d+) \(\w+\): "([^"]+)"', dump)}
        clips = load_dir(args.clips)
        asyncio.run(load.closed_loop(url, clips, {}, concurrency=args.concurrency, requests=10**6, max_s=3.0))
        before, client0, t0 = thread_cpu_s(proc.pid, names), load.self_cpu_s(), time.perf_counter()
        result = asyncio.run(
            load.closed_loop(url, clips, {}, concurrency=args.concurrency, requests=10**6, max_s=args.seconds)
        )
        after, client1, wall = thread_cpu_s(proc.pid, names), load.self_cpu_s(), time.perf_counter() - t0
    finally:
        proc.terminate()
        proc.wait()
    n = sum(s.status == 200 for s in result.samples)
    audio = sum(s.audio_s for s in result.samples if s.status == 200)
    print(f"asr-serve {' '.join(args.server_args)}: {n} requests, {n / wall:.0f}/s, RTFx {audio / wall:.0f}")
    for group, cpu in sorted(((g, after[g] - before.get(g, 0.0)) for g in after), key=lambda x: -x[1]):
        if cpu > 0:
            print(f"  {group:28s} {1000 * cpu / n:6.3f} CPU-ms/request  {cpu / wall:4.2f} cores")
    print(f"  {'load generator':28s} {1000 * (client1 - client0) / n:6.3f} CPU-ms/request")


if __name__ == "__main__":
    main()
