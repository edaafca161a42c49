"""One temp directory per server process: removed at exit, swept at the next start when the process was killed."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from asr_inference import tempfiles


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_sweep_removes_directories_of_gone_processes_only(tmp_path: Path) -> None:
    dead = tmp_path / f"asr-{_dead_pid()}-abc123"
    alive = tmp_path / f"asr-{os.getppid()}-abc123"  # the process that started pytest: alive
    same_pid_not_ours = tmp_path / f"asr-{os.getpid()}-zzz999"  # a restarted container's previous pid 1
    unrelated = tmp_path / "asr-cache"
    for d in (dead, alive, same_pid_not_ours, unrelated):
        d.mkdir()
        (d / "asr-audio-1.f32").write_bytes(b"\0" * 64)
    removed = tempfiles.sweep_stale(str(tmp_path))
    assert sorted(removed) == sorted([str(dead), str(same_pid_not_ours)])
    assert alive.is_dir() and unrelated.is_dir() and not dead.exists() and not same_pid_not_ours.exists()


def test_the_process_directory_goes_when_the_process_exits(tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        import tempfile, sys
        tempfile.tempdir = sys.argv[1]
        from asr_inference import tempfiles
        d = tempfiles.process_temp_dir()
        open(d + "/asr-audio-x.f32", "wb").write(b"0" * 1024)
        print(d)
        """
    )
    made = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, check=True)
    made_dir = Path(made.stdout.strip())
    assert made_dir.parent == tmp_path and made_dir.name.startswith("asr-")
    assert not made_dir.exists()
    assert list(tmp_path.iterdir()) == []
