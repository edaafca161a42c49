"""Logging: JSON lines (or text) to stdout, and optionally to a size-rotated file. Never audio or keys."""

from __future__ import annotations

import json
import logging
import logging.handlers
import sys
import time
from collections.abc import Callable
from typing import Any

from .config import Settings

# LogRecord attributes that are not user-supplied `extra` fields.
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


class Sampler:
    """At most one log line per `period_s`; the lines left out are counted into the next one that is written.
    For the 429s of an overload: thousands a second would cost the CPU the server is short of."""

    def __init__(self, period_s: float = 1.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.period_s, self.clock = period_s, clock
        self._next = float("-inf")
        self._left_out = 0

    def take(self) -> int | None:
        """None: leave this line out. Else write it, with the number of lines left out since the last one."""
        now = self.clock()
        if now < self._next:
            self._left_out += 1
            return None
        self._next = now + self.period_s
        left_out, self._left_out = self._left_out, 0
        return left_out


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        extra = {k: v for k, v in vars(record).items() if k not in _STANDARD}
        base = super().format(record)
        return base + ("  " + " ".join(f"{k}={v}" for k, v in extra.items()) if extra else "")


def configure_logging(settings: Settings) -> list[logging.Handler]:
    """Install handlers on the root logger (replacing earlier ones of ours). Returns them."""
    formatter: logging.Formatter = JsonFormatter() if settings.log_format == "json" else TextFormatter()
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stdout)]
    if settings.log_file is not None:
        settings.log_file.parent.mkdir(parents=True, exist_ok=True)
        handlers.append(
            logging.handlers.RotatingFileHandler(
                settings.log_file,
                maxBytes=settings.log_max_bytes,
                backupCount=settings.log_backup_count,
                encoding="utf-8",
            )
        )
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "_asr_handler", False)]:
        root.removeHandler(old)
        old.close()
    for h in handlers:
        h.setFormatter(formatter)
        h._asr_handler = True  # type: ignore[attr-defined]
        root.addHandler(h)
    root.setLevel(settings.log_level.upper())
    for noisy in ("uvicorn.access", "jieba", "modelscope", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return handlers
