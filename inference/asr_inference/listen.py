"""The listening socket for `--host ::`: every address of both families where the kernel has IPv6, so one pod
spec serves IPv4-only, IPv6-only and dual-stack clusters; plain IPv4 (0.0.0.0) where IPv6 is disabled.

uvicorn binds `::` itself, but then whether IPv4 is served depends on the node's net.ipv6.bindv6only; here the
socket says so explicitly (IPV6_V6ONLY off)."""

from __future__ import annotations

import errno
import logging
import socket

log = logging.getLogger(__name__)
ANY_HOSTS = frozenset({"::", "[::]"})
NO_IPV6 = frozenset({errno.EAFNOSUPPORT, errno.EADDRNOTAVAIL, errno.EPROTONOSUPPORT})


def dual_stack_socket(host: str, port: int) -> socket.socket | None:
    """A bound dual-stack socket for `::`; None when `host` is something else or the kernel has no IPv6 (then
    `fallback_host` says what to bind instead)."""
    if host not in ANY_HOSTS:
        return None
    try:
        sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    except OSError as e:
        if e.errno in NO_IPV6:
            log.warning("no IPv6 in this kernel: listening on 0.0.0.0 instead of ::")
            return None
        raise
    try:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("::", port))
    except OSError as e:
        sock.close()
        if e.errno in NO_IPV6:
            log.warning("IPv6 unavailable (%s): listening on 0.0.0.0 instead of ::", e.strerror)
            return None
        raise
    sock.set_inheritable(True)
    return sock


def fallback_host(host: str) -> str:
    """What uvicorn binds when `dual_stack_socket` returned None."""
    return "0.0.0.0" if host in ANY_HOSTS else host
