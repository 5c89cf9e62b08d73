"""The connections a plane accepts: bounded in number, and in the time a client may take
to send its request's headers, so that clients who connect and then dawdle (slowloris)
cannot hold the process's file descriptors while real requests wait.

- A connection must deliver complete headers within ``LGW_HEADER_TIMEOUT_SECONDS`` of
  opening, or of its first byte after a finished request, and then the request's body
  within ``LGW_BODY_TIMEOUT_SECONDS``; else it gets a 408 and is closed. An idle
  kept-alive connection closes after ``LGW_KEEPALIVE_SECONDS``.
- A client that stops reading (its socket full, the gateway's buffer past its high-water
  mark) for ``LGW_CLIENT_WRITE_TIMEOUT_SECONDS`` is cut off: the connection is aborted,
  which ends the response like a hang-up (a stream's upstream closed, its slot and
  limits released, ``client_disconnect``).
- At ``LGW_MAX_CONNECTIONS`` open connections, a new one evicts the oldest idle
  kept-alive connection (closed quietly, as its keep-alive timeout would), else the
  oldest still waiting for its headers (408); when every connection is busy with a
  request, the new one gets a 503 with ``Retry-After`` and is closed. Real requests thus
  keep being served under a flood of idle or dawdling connections.
Every shed connection is counted in ``lgw_connections_shed_total{plane, reason}``.

After a flood (``FLOOD`` connections or more, then three quarters of them closed), the
memory they held goes back to the system: their objects form reference cycles that only
a full collection frees, and glibc keeps freed heap until ``malloc_trim``.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import gc
import logging
from http import HTTPStatus
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from gateway.errors import GatewayError, RequestTimeout, ServerBusy
from gateway.metrics import Metrics


def _response(error: GatewayError, retry_after: str | None) -> bytes:
    """A whole HTTP/1.1 response carrying ``error`` in OpenAI's shape, closing."""
    body = error.to_json()
    head = [
        f"HTTP/1.1 {error.status} {HTTPStatus(error.status).phrase}",
        "content-type: application/json",
        f"content-length: {len(body)}",
        "connection: close",
    ]
    if retry_after is not None:
        head.append(f"retry-after: {retry_after}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


log = logging.getLogger("gateway.connections")
FLOOD = 1000
"""Open connections from which their closing is followed by giving memory back."""


def _release_memory() -> None:
    """A full collection, then glibc's ``malloc_trim`` (nothing elsewhere)."""
    gc.collect()
    name = ctypes.util.find_library("c")
    try:
        trim = ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):
        trim = None
    if trim is not None:
        trim(0)
    log.info("memory released after a flood of connections")


_LATE = _response(RequestTimeout("The request headers did not arrive in time."), None)
_SLOW_BODY = _response(RequestTimeout("The request body did not arrive in time."), None)
_BUSY = _response(ServerBusy("The gateway has too many open connections; retry."), "1")


class ConnectionGuard:
    """One plane's connections, oldest first: those idle between requests, waiting for
    headers, or waiting for a body (how many are open, uvicorn counts already)."""

    def __init__(
        self,
        plane: str,
        limit: int,
        header_timeout: float,
        body_timeout: float,
        write_timeout: float,
        metrics: Metrics,
    ) -> None:
        self.plane, self.limit = plane, limit
        self.header_timeout, self.body_timeout = header_timeout, body_timeout
        self.write_timeout = write_timeout
        self._shed = metrics.connections_shed
        self.peak = 0
        """Most connections open since memory was last given back."""
        self.waiting: dict[GuardedProtocol, float] = {}
        """When each started waiting (``loop.time()``); insertion order is age, so the
        first waited longest. One sweep a second closes the late ones: no timer per
        request (their creation and cancellation cost every request a few microseconds)."""
        self._sweeping = False
        self.idle: dict[GuardedProtocol, None] = {}
        """Kept-alive connections between requests, oldest first."""
        self.reading: dict[GuardedProtocol, float] = {}
        """Requests whose headers arrived and whose body has not, since when."""

    def opened(self, open_now: int) -> None:
        """One more connection, ``open_now`` in all."""
        self.peak = max(self.peak, open_now)

    def closed(self, open_now: int, loop: asyncio.AbstractEventLoop) -> None:
        """One connection less; after a flood has mostly closed, give memory back (soon,
        once: the closing connections' own callbacks run first)."""
        if self.peak >= FLOOD and open_now <= self.peak // 4:
            self.peak = open_now
            loop.call_later(1.0, _release_memory)

    def watch(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start sweeping late connections (once, in the serving loop)."""
        if not self._sweeping:
            self._sweeping = True
            loop.call_later(self._sweep_every, self._sweep, loop)

    @property
    def _sweep_every(self) -> float:
        return min(1.0, self.header_timeout / 4, self.body_timeout / 4)

    def _sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        """408 every connection late with its headers or its body, oldest first."""
        now = loop.time()
        for late in _overdue(self.waiting, now - self.header_timeout):
            self.shed("header_timeout")
            late._close_with(_LATE)
        for late in _overdue(self.reading, now - self.body_timeout):
            late._body_late()
        loop.call_later(self._sweep_every, self._sweep, loop)

    def shed(self, reason: str) -> None:
        """Count one connection closed for ``reason``."""
        self._shed.labels(self.plane, reason).inc()

    def protocol(self) -> type[GuardedProtocol]:
        """uvicorn's httptools protocol, answering to this guard."""
        return type("Guarded", (GuardedProtocol,), {"guard": self})


class GuardedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the guard's bounds (see the module's top)."""

    guard: ConnectionGuard
    _stalled: asyncio.TimerHandle | None = None
    _in_message = False
    """Between a request's first byte and its last (its body may outlive its answer)."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        guard = self.guard
        guard.watch(self.loop)
        guard.opened(len(self.connections))  # uvicorn's set of this server's connections
        if len(self.connections) > guard.limit and not self._make_room():
            guard.shed("connection_limit")
            self._close_with(_BUSY)
            return
        self._await_headers()

    def _make_room(self) -> bool:
        """Close the oldest idle connection, else the oldest dawdling one; ``False`` when
        every connection is busy with a request."""
        guard = self.guard
        if guard.idle:
            guard.shed("evicted_idle")
            oldest = next(iter(guard.idle))
            del guard.idle[oldest]  # now: its connection_lost comes a turn later
            oldest.transport.close()  # between requests: nothing is lost
            return True
        if guard.waiting:
            guard.shed("evicted")
            next(iter(guard.waiting))._close_with(_LATE)
            return True
        return False

    def data_received(self, data: bytes) -> None:
        self.guard.idle.pop(self, None)
        if not self._in_message and self not in self.guard.waiting:
            self._await_headers()  # the first byte of the next request on this connection
        super().data_received(data)

    def on_message_begin(self) -> None:
        self._in_message = True
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        self._headers_arrived()
        self.guard.reading[self] = self.loop.time()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._in_message = False
        self.guard.reading.pop(self, None)
        super().on_message_complete()
        if self.cycle is not None and self.cycle.response_complete:
            self._now_idle()  # answered before its body ended: idle from here

    def _now_idle(self) -> None:
        """Between requests: evictable first, and closed after the keep-alive time (the
        body's bytes had cancelled uvicorn's keep-alive timer)."""
        if self.transport.is_closing() or self.pipeline:
            return
        self.guard.idle[self] = None
        if self.timeout_keep_alive_task is None:
            self.timeout_keep_alive_task = self.loop.call_later(
                self.timeout_keep_alive, self.timeout_keep_alive_handler
            )

    def pause_writing(self) -> None:
        super().pause_writing()
        self._stalled = self.loop.call_later(self.guard.write_timeout, self._reader_gone)

    def resume_writing(self) -> None:
        if self._stalled is not None:
            self._stalled.cancel()
            self._stalled = None
        super().resume_writing()

    def _reader_gone(self) -> None:
        self.guard.shed("write_stall")
        self.transport.abort()  # connection_lost follows: the response ends as a hang-up

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self._in_message:
            self._now_idle()  # kept alive, waiting for the next request

    def _body_late(self) -> None:
        """Its body is late: a 408, unless it was answered already (a 401 needs no body),
        then the connection just closes."""
        self.guard.shed("body_timeout")
        answered = self.cycle is not None and self.cycle.response_complete
        self._close_with(b"" if answered else _SLOW_BODY)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._stalled is not None:
            self._stalled.cancel()
        self.guard.idle.pop(self, None)
        self.guard.reading.pop(self, None)
        self._headers_arrived()
        super().connection_lost(exc)  # (which takes it out of ``self.connections``)
        self.guard.closed(len(self.connections), self.loop)

    def _await_headers(self) -> None:
        self.guard.waiting[self] = self.loop.time()

    def _headers_arrived(self) -> None:
        self.guard.waiting.pop(self, None)

    def _close_with(self, response: bytes) -> None:
        self._headers_arrived()
        self.guard.reading.pop(self, None)
        if not self.transport.is_closing():
            self.transport.write(response)
            self.transport.close()


def _overdue(since: dict[GuardedProtocol, float], deadline: float) -> list[GuardedProtocol]:
    """The connections that started before ``deadline`` (the dict is oldest first)."""
    late = []
    for connection, started in since.items():
        if started > deadline:
            break  # every one after it started later
        late.append(connection)
    return late


def uvicorn_options(guard: ConnectionGuard, keepalive_seconds: float) -> dict[str, Any]:
    """What ``uvicorn.Config`` takes to apply the guard."""
    return {"http": guard.protocol(), "timeout_keep_alive": keepalive_seconds}
