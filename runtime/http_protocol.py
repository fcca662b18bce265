"""uvicorn's httptools HTTP protocol (a C parser) with one bound more: a connection that has not sent a complete
request head within `timeout_keep_alive` seconds of connecting (an idle socket, or headers that stop half-way)
is closed. uvicorn itself bounds only the idle time between requests; a request body that stops is bounded by
the server (ServeSettings.body_timeout_s)."""

from __future__ import annotations

import asyncio

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class FirstRequestDeadline(HttpToolsProtocol):
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._first_request_deadline = self.loop.call_later(self.timeout_keep_alive, self._close_if_no_request)

    def _close_if_no_request(self) -> None:
        if self.cycle is None:  # no request head arrived: an idle or stalled client
            self.timeout_keep_alive_handler()

    def connection_lost(self, exc: Exception | None) -> None:
        self._first_request_deadline.cancel()
        super().connection_lost(exc)
