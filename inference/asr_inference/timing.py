"""The `Server-Timing` header of a transcription response (W3C Server Timing): where one request's time went.

`queue`: the longest any of its items waited for a batch; `inference`: forward time of the batches it ran in;
`total`: receipt to response. A cached answer carries `cache` and `total` only (nothing was queued or run).
Browsers show these in their network panel and hand them to scripts (the playground reads them).
"""

from __future__ import annotations


def server_timing(*, queue_s: float, inference_s: float, total_s: float, cached: bool) -> str:
    def metric(name: str, seconds: float) -> str:
        return f"{name};dur={seconds * 1000:.1f}"

    parts = ["cache;desc=hit"] if cached else [metric("queue", queue_s), metric("inference", inference_s)]
    return ", ".join([*parts, metric("total", total_s)])
