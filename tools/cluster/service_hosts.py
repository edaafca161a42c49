#!/usr/bin/env python3
"""Cluster DNS for one host process, as a hosts file: every few seconds, list the Services and write
`<clusterIP> <name>.<namespace> <name>.<namespace>.svc <name>.<namespace>.svc.cluster.local` for each, after the
host's own /etc/hosts lines. The local cluster runs no DNS server (no lookup may leave the machine); KEDA's HTTP
add-on interceptor, which forwards to `<service>.<namespace>:<port>`, reads this file as its /etc/hosts (a private
mount namespace, http_addon.py), and kube-proxy on the real node routes the ClusterIPs.

    service_hosts.py --kubectl BIN --kubeconfig FILE --out hosts [--interval 1]

The file is rewritten in place, never replaced: a bind mount follows the inode, not the name.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import subprocess
import time
from typing import Any


def hosts_lines(services: list[dict[str, Any]]) -> list[str]:
    lines = []
    for svc in services:
        meta, ip = svc["metadata"], (svc.get("spec") or {}).get("clusterIP")
        if not ip or ip == "None":
            continue
        base = f"{meta['name']}.{meta['namespace']}"
        lines.append(f"{ip} {base} {base}.svc {base}.svc.cluster.local")
    return sorted(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kubectl", required=True)
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--out", type=pathlib.Path, required=True)
    parser.add_argument("--interval", type=float, default=1.0)
    args = parser.parse_args()
    own = pathlib.Path("/etc/hosts").read_text().rstrip("\n")
    written = None
    while True:
        listed = subprocess.run(
            [args.kubectl, f"--kubeconfig={args.kubeconfig}", "get", "services", "--all-namespaces", "-o", "json"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        if listed.returncode == 0:
            services = hosts_lines(json.loads(listed.stdout)["items"])
            text = "\n".join([own, "# cluster Services (service_hosts.py)", *services]) + "\n"
            if text != written:
                with open(args.out, "r+") as f:  # same inode: the bind mount keeps seeing it
                    f.write(text)
                    f.truncate()
                written = text
        time.sleep(args.interval)


if __name__ == "__main__":
    raise SystemExit(main())
