"""uvicorn's httptools protocol with a cap on a request's head (request line + headers).

httptools (llhttp) sets no limit and uvicorn keeps every header it is given, so one client sending header bytes
without end grows the server's memory without end. Here, bytes that arrive while a request's head is still
incomplete are counted, and past `max_header_bytes` the connection gets 431 in the error envelope and is closed."""

from __future__ import annotations

import json
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from .errors import HeadersTooLarge


class HeaderCappedHttpToolsProtocol(HttpToolsProtocol):
    max_header_bytes = 64 * 1024  # set per server by `protocol_with_header_cap`

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = False
        self._head_bytes = 0

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head, self._head_bytes = True, 0

    def on_headers_complete(self) -> None:
        self._in_head = False
        super().on_headers_complete()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if not self._in_head or self.transport.is_closing():
            return
        self._head_bytes += len(data)
        if self._head_bytes > self.max_header_bytes:
            self._send_431()

    def _send_431(self) -> None:
        err = HeadersTooLarge(f"request headers exceed {self.max_header_bytes // 1024} KiB")
        body = json.dumps(err.body()).encode()
        head = (
            f"HTTP/1.1 {err.status_code} Request Header Fields Too Large\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
        ).encode()
        self.transport.write(head + body)
        self.transport.close()


def protocol_with_header_cap(max_header_kb: int) -> type[HeaderCappedHttpToolsProtocol]:
    """The protocol class for uvicorn's `http=` with this server's cap."""
    return type("HeaderCappedHttpTools", (HeaderCappedHttpToolsProtocol,), {"max_header_bytes": max_header_kb * 1024})
