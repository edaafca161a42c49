"""`--host ::` (what the operator sets): one listening socket for both families, so the same pod spec serves
IPv4-only, IPv6-only and dual-stack clusters. A real asr-serve answers on 127.0.0.1 and on ::1."""

from __future__ import annotations

import socket

import httpx
from asr_inference.listen import dual_stack_socket, fallback_host
from live_server import asr_serve
from requirements_check import skip_unless_ci


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


def test_dual_stack_socket_serves_both_families() -> None:
    if not _has_ipv6_loopback():
        skip_unless_ci("this kernel has no IPv6 loopback")
    sock = dual_stack_socket("::", 0)
    assert sock is not None
    with sock:
        assert sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 0  # IPv4 too, whatever the sysctl
        port = sock.getsockname()[1]
        sock.listen()
        for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
            with socket.socket(family, socket.SOCK_STREAM) as client:
                client.connect((host, port))


def test_other_hosts_are_left_to_uvicorn() -> None:
    assert dual_stack_socket("127.0.0.1", 0) is None
    assert fallback_host("127.0.0.1") == "127.0.0.1" and fallback_host("::") == "0.0.0.0"


def test_asr_serve_on_any_address_answers_ipv4_and_ipv6() -> None:
    if not _has_ipv6_loopback():
        skip_unless_ci("this kernel has no IPv6 loopback")
    with asr_serve("--host", "::") as base:  # waits for /readyz on 127.0.0.1 (IPv4 through the v6 socket)
        port = base.rsplit(":", 1)[1]
        assert httpx.get(f"http://[::1]:{port}/readyz", timeout=30).json()["status"] == "ready"
        assert httpx.get(f"{base}/healthz", timeout=30).status_code == 200
