"""A real Prometheus (Debian's /usr/bin/prometheus) on loopback, for tests: a temp config + data dir, and the
few HTTP API calls the tests make (instant and range queries, series, label values)."""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import yaml
from live_server import free_port, wait_http_ok

PROMETHEUS = os.environ.get("ASR_TEST_PROMETHEUS") or shutil.which("prometheus") or "/usr/bin/prometheus"


@contextmanager
def run_prometheus(scrape_configs: list[dict[str, Any]], scrape_interval: str = "1s") -> Iterator[str]:
    """Start Prometheus with these scrape configs; yield its base URL once /-/ready answers."""
    port = free_port()
    config = {"global": {"scrape_interval": scrape_interval, "evaluation_interval": scrape_interval},
              "scrape_configs": scrape_configs}  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="prometheus-") as tmp:
        (Path(tmp) / "prometheus.yml").write_text(yaml.safe_dump(config))
        log = Path(tmp) / "prometheus.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [PROMETHEUS, f"--config.file={tmp}/prometheus.yml", f"--storage.tsdb.path={tmp}/data",
                 f"--web.listen-address=127.0.0.1:{port}", "--storage.tsdb.retention.time=1h"],
                stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
            base = f"http://127.0.0.1:{port}"
            try:
                wait_http_ok(f"{base}/-/ready", proc, 60, "prometheus", log)
                yield base
            finally:
                proc.terminate()
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


class PromAPI:
    def __init__(self, base: str) -> None:
        self.client = httpx.Client(base_url=base, timeout=30)

    def _get(self, path: str, **params: Any) -> Any:
        response = self.client.get(path, params=params)
        body = response.json()
        assert response.status_code == 200 and body["status"] == "success", (path, params, body)
        assert not body.get("warnings"), (path, params, body["warnings"])
        return body["data"]

    def query(self, expr: str, at: float) -> list[dict[str, Any]]:
        data = self._get("/api/v1/query", query=expr, time=at)
        assert data["resultType"] == "vector", (expr, data["resultType"])
        return list(data["result"])

    def query_range(self, expr: str, start: float, end: float, step: str = "1s") -> list[dict[str, Any]]:
        data = self._get("/api/v1/query_range", query=expr, start=start, end=end, step=step)
        return list(data["result"])

    def series(self, match: str, start: float, end: float) -> list[dict[str, str]]:
        return list(self._get("/api/v1/series", **{"match[]": match}, start=start, end=end))

    def label_values(self, label: str, match: str, start: float, end: float) -> list[str]:
        return list(self._get(f"/api/v1/label/{label}/values", **{"match[]": match}, start=start, end=end))

    def targets_up(self) -> int:
        data = self._get("/api/v1/targets")
        return sum(1 for t in data["activeTargets"] if t["health"] == "up")

    def scraped_since(self, when: float) -> bool:
        """Every target has a successful scrape that started after `when` (epoch seconds)."""
        from datetime import datetime

        targets = self._get("/api/v1/targets")["activeTargets"]
        return bool(targets) and all(
            t["health"] == "up" and datetime.fromisoformat(t["lastScrape"].replace("Z", "+00:00")).timestamp() > when
            for t in targets
        )


def values(series: list[dict[str, Any]]) -> list[float]:
    """Every finite sample value of a range (or instant) query result."""
    out = []
    for s in series:
        points = s.get("values") or [s["value"]]
        out.extend(float(v) for _, v in points if math.isfinite(float(v)))
    return out
