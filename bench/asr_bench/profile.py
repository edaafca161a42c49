"""Optional sampling profile of a server under load (py-spy, `pip install py-spy`): where its CPU time goes.

`py-spy record --format raw --threads` writes collapsed stacks ("thread;frame;frame... count"); this module
folds them into per-thread sample shares and the functions with the most inclusive / self samples.
"""

from __future__ import annotations

import collections
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

_THREAD = re.compile(r"^(?:process \d+:\S+;)?thread \((0x[0-9A-Fa-f]+)\)(?: \"?([^;\"]*)\"?)?")


def py_spy() -> str | None:
    exe = Path(sys.executable).parent / "py-spy"
    return str(exe) if exe.exists() else shutil.which("py-spy")


class Recorder:
    def __init__(self, pid: int, out: Path, rate: int = 97, gil: bool = False) -> None:
        self.out = out
        exe = py_spy()
        if exe is None:
            raise RuntimeError("py-spy is not installed (pip install py-spy)")
        cmd = [exe, "record", "--pid", str(pid), "--format", "raw", "--threads", "--nonblocking"]
        cmd += ["--rate", str(rate), "--output", str(out), "--subprocesses", *(["--gil"] if gil else [])]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def stop(self) -> str:
        import signal

        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            _, err = self.proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        return (err or b"").decode(errors="replace")[-500:]


def _short(frame: str) -> str:
    # "function (path/to/module.py:123)" -> "function (module.py)"
    m = re.match(r"^(.*?) \((.*?):\d+\)$", frame)
    if not m:
        return frame
    return f"{m.group(1)} ({Path(m.group(2)).name})"


def summarize(path: Path, top: int = 25) -> dict[str, Any]:
    inclusive: collections.Counter[str] = collections.Counter()
    self_: collections.Counter[str] = collections.Counter()
    threads: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_s = line.rpartition(" ")
        if not stack or not count_s.isdigit():
            continue
        count = int(count_s)
        frames = stack.split(";")
        thread = next((f for f in frames if f.startswith("thread ")), "thread ?")
        tm = _THREAD.match(thread)
        tname = (tm.group(2) or tm.group(1)) if tm else thread
        threads[re.sub(r"_\d+$", "_N", tname or "?")] += count
        code = [_short(f) for f in frames if not f.startswith(("thread ", "process "))]
        total += count
        for f in set(code):
            inclusive[f] += count
        if code:
            self_[code[-1]] += count
    pct = (lambda c: round(100 * c / total, 1)) if total else (lambda c: 0.0)
    return {
        "samples": total,
        "threads_pct": {k: pct(v) for k, v in threads.most_common()},
        "top_inclusive_pct": {k: pct(v) for k, v in inclusive.most_common(top)},
        "top_self_pct": {k: pct(v) for k, v in self_.most_common(top)},
    }
