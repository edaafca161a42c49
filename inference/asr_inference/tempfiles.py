"""Where decoded audio and ffmpeg's inputs live on disk: one directory per server process, `asr-<pid>-<random>` in
the system temp dir, removed when the process exits. A process killed without exiting (SIGKILL, OOM) leaves its
directory behind; the next server start sweeps every directory whose process is gone. So an upload's temp files
never outlive the process that wrote them by more than one restart."""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import re
import shutil
import tempfile
import threading

log = logging.getLogger(__name__)
_NAME = re.compile(r"asr-(\d+)-[a-z0-9_]+")
_dirs: dict[str, str] = {}  # system temp dir -> this process' directory in it
_lock = threading.Lock()


def process_temp_dir() -> str:
    """This process' directory under the current system temp dir (made on first use, removed at exit)."""
    base = tempfile.gettempdir()
    with _lock:
        path = _dirs.get(base)
        if path is None or not os.path.isdir(path):
            path = tempfile.mkdtemp(prefix=f"asr-{os.getpid()}-", dir=base)
            _dirs[base] = path
            atexit.register(shutil.rmtree, path, True)
        return path


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def sweep_stale(base: str | None = None) -> list[str]:
    """Remove the directories of server processes that are gone; returns what was removed. A directory named with
    this process' own pid but not made by it is stale too (a restarted container whose server is pid 1 again)."""
    base = base or tempfile.gettempdir()
    ours = set(_dirs.values())
    removed = []
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(base):
            match = _NAME.fullmatch(entry.name)
            if not match or not entry.is_dir(follow_symlinks=False) or entry.path in ours:
                continue
            pid = int(match.group(1))
            if pid == os.getpid() or not _alive(pid):
                shutil.rmtree(entry.path, ignore_errors=True)
                removed.append(entry.path)
    if removed:
        log.info("removed %d temp directories of server processes that are gone", len(removed))
    return removed
