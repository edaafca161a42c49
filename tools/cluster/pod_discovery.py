#!/usr/bin/env python3
"""Prometheus' Kubernetes pod discovery, for a Prometheus built without it (Debian's 2.42 has no
`kubernetes_sd_configs`): every few seconds, list the real node's pods and write them as a `file_sd_configs` target
file carrying the labels the Kubernetes discovery gives (`__meta_kubernetes_pod_*`, one target per declared container
port, `__address__` = podIP:port). Prometheus then applies the usual `kubernetes-pods` relabelling itself.

    pod_discovery.py --kubectl BIN --kubeconfig FILE --node NAME --out targets.json [--interval 2]
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import re
import subprocess
import time
from typing import Any


def _name(label: str) -> str:
    """A label or annotation key as Prometheus' discovery names it (every invalid character becomes '_')."""
    return re.sub(r"[^a-zA-Z0-9_]", "_", label)


def targets(pods: list[dict[str, Any]]) -> list[dict[str, Any]]:
    groups = []
    for pod in pods:
        meta, spec, status = pod["metadata"], pod["spec"], pod.get("status") or {}
        ip = status.get("podIP")
        if not ip:
            continue
        ready = any(c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions") or [])
        labels = {
            "__meta_kubernetes_namespace": meta["namespace"],
            "__meta_kubernetes_pod_name": meta["name"],
            "__meta_kubernetes_pod_ip": ip,
            "__meta_kubernetes_pod_node_name": spec.get("nodeName", ""),
            "__meta_kubernetes_pod_phase": status.get("phase", ""),
            "__meta_kubernetes_pod_ready": str(ready).lower(),
            **{f"__meta_kubernetes_pod_label_{_name(k)}": v for k, v in (meta.get("labels") or {}).items()},
            **{f"__meta_kubernetes_pod_annotation_{_name(k)}": v for k, v in (meta.get("annotations") or {}).items()},
        }
        for container in spec.get("containers", []):
            for port in container.get("ports") or []:
                groups.append({
                    "targets": [f"{ip}:{port['containerPort']}"],
                    "labels": {**labels, "__meta_kubernetes_pod_container_name": container["name"],
                               "__meta_kubernetes_pod_container_port_name": port.get("name", ""),
                               "__meta_kubernetes_pod_container_port_number": str(port["containerPort"])},
                })  # fmt: skip
    return groups


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kubectl", required=True)
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--node", required=True)
    parser.add_argument("--out", type=pathlib.Path, required=True)
    parser.add_argument("--interval", type=float, default=2.0)
    args = parser.parse_args()
    while True:
        listed = subprocess.run(
            [args.kubectl, f"--kubeconfig={args.kubeconfig}", "get", "pods", "--all-namespaces", "-o", "json",
             f"--field-selector=spec.nodeName={args.node}"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        if listed.returncode == 0:
            tmp = args.out.with_suffix(".tmp")
            tmp.write_text(json.dumps(targets(json.loads(listed.stdout)["items"]), indent=1))
            os.replace(tmp, args.out)  # Prometheus never reads a half-written file
        time.sleep(args.interval)


if __name__ == "__main__":
    raise SystemExit(main())
