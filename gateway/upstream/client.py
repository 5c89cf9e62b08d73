"""The only module that talks to backends: one aiohttp session per process.

aiohttp rather than httpx on this path: measured here, httpx 0.28 costs ~5x the CPU per
relayed request and collapses at 64 concurrent streams (encode/httpx#3215).
"""

from __future__ import annotations

import asyncio
from collections import deque

import aiohttp

from gateway import __version__
from gateway.errors import (
    GatewayError,
    UpstreamError,
    UpstreamRefused,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from gateway.settings import Settings
from gateway.upstream.sse import SSEDecoder

HOP_HEADER = "x-lgw-hop"
"""Sent on every upstream request; a gateway receiving it refuses it (508): a pool that
points back at a gateway would otherwise loop."""
_JSON = {
    "Content-Type": "application/json",
    "Accept": "application/json, text/event-stream",
    # Ours rather than aiohttp's: and setting it beats skip_auto_headers, which costs
    # aiohttp a sorted copy of the headers on every request.
    "User-Agent": f"lora-gateway/{__version__}",
    HOP_HEADER: "1",
}
MAX_RESPONSE_BYTES = 16 * 1024 * 1024
"""Largest non-streamed body read from a backend; more is a protocol violation."""

_FAIR_STEPS = 64
"""Events handed out and reads made between two turns given to the event loop. Neither
suspends when the data is already buffered: a fast backend relayed to a client whose
writes cost nothing (it left: they are dropped), or one sending nothing but keep-alive
comments, would otherwise hold the loop, starving every other request and the watch
for the hang-up."""

DRAIN_SECONDS = 1.0
"""How long the end of a finished stream's body may lag its ``[DONE]`` event."""

TRANSPORT_FAILURES = (aiohttp.ClientError, asyncio.TimeoutError, ConnectionError)


class Client:
    """A pooled HTTP client for every backend replica."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        """Open the connection pool (needs the running event loop)."""
        s = self._settings
        connector = aiohttp.TCPConnector(
            limit=s.upstream_max_connections, limit_per_host=0, ttl_dns_cache=10
        )
        # No read timeout here: a long non-streamed answer is silent until it is done
        # (the request's deadline bounds it); a stream's first event has its own timeout
        # and the silence between events is EventStream's idle timer.
        timeout = aiohttp.ClientTimeout(
            total=s.upstream_total_timeout, sock_connect=s.upstream_connect_timeout
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=timeout,
            auto_decompress=False,
            raise_for_status=False,
        )

    async def close(self) -> None:
        """Close every pooled connection."""
        if self._session is not None:
            await self._session.close()

    async def post(
        self, url: str, body: bytes, trace_headers: dict[str, str] | None = None
    ) -> aiohttp.ClientResponse:
        """POST ``body`` as JSON; the caller must release or close the response."""
        assert self._session is not None, "Client.start() was not awaited"
        headers = {**_JSON, **trace_headers} if trace_headers else _JSON
        try:
            # A redirect is an upstream error, never followed: it would send the prompt to
            # a host the registry does not name (and LGW_UPSTREAM_ALLOW never checked).
            return await self._session.post(url, data=body, headers=headers, allow_redirects=False)
        except TRANSPORT_FAILURES as exc:
            raise transport_error(exc) from None

    @property
    def idle_timeout(self) -> float:
        """Seconds allowed between two events of a stream."""
        return self._settings.upstream_idle_timeout

    @property
    def first_event_timeout(self) -> float:
        """Seconds allowed until the response head and the first streamed event."""
        return self._settings.upstream_first_event_timeout


def transport_error(exc: BaseException) -> GatewayError:
    """The gateway error for a failure of the connection itself (no HTTP answer)."""
    if isinstance(exc, asyncio.TimeoutError):
        return UpstreamTimeout("The model did not answer in time.")
    if isinstance(exc, aiohttp.ClientConnectorError):
        return UpstreamRefused(
            "The model backend could not be reached.", headers={"Retry-After": "1"}
        )
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return UpstreamUnavailable(
            "The model backend could not be reached.", headers={"Retry-After": "1"}
        )
    return UpstreamError("The connection to the model backend failed.")


async def read_body(response: aiohttp.ClientResponse) -> bytes:
    """The whole body of a non-streamed answer, bounded."""
    if (response.content_length or 0) > MAX_RESPONSE_BYTES:
        raise UpstreamError("The model backend returned an oversized response.")
    body = await response.content.read(MAX_RESPONSE_BYTES + 1)
    if len(body) > MAX_RESPONSE_BYTES:
        raise UpstreamError("The model backend returned an oversized response.")
    return body


class EventStream:
    """The ``data:`` payloads of one upstream SSE response, pulled one at a time.

    The idle timeout bounds each wait for an event (keep-alive comments do not count);
    it is one timer per stream that looks at the current wait's deadline, rather than a
    timeout set up for every read. When a wait outlasts it, the connection is closed,
    which ends the pending read. Time the relay spends writing to a slow client is not
    the backend's silence and does not count. Before the first event, the caller's
    first-event timeout applies instead.
    """

    def __init__(self, response: aiohttp.ClientResponse, idle_timeout: float) -> None:
        self._response = response
        self._decoder = SSEDecoder()
        self._pending: deque[bytes] = deque()
        self._idle = idle_timeout
        self._loop = asyncio.get_running_loop()
        self._deadline = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._reading = False
        self._expired = False
        self._steps = 0

    @property
    def ready(self) -> bool:
        """Whether ``next()`` has a payload at hand (returns without waiting)."""
        return bool(self._pending)

    async def next(self) -> bytes | None:
        """The next payload, or ``None`` once the upstream closed the stream; an
        ``UpstreamTimeout`` when no event came within the idle timeout."""
        self._steps += 1
        if self._steps == _FAIR_STEPS:  # (see _FAIR_STEPS)
            self._steps = 0
            await asyncio.sleep(0)
        if self._pending:
            return self._pending.popleft()
        self._deadline = self._loop.time() + self._idle  # the wait for an event starts
        self._reading = True
        try:
            while not self._pending:
                chunk = await self._response.content.readany()
                if not chunk:
                    self._raise_if_expired()
                    return None
                self._pending.extend(self._decoder.feed(chunk))
                self._steps += 1
                if self._steps == _FAIR_STEPS:
                    self._steps = 0
                    await asyncio.sleep(0)
        except TRANSPORT_FAILURES:
            self._raise_if_expired()
            raise
        finally:
            self._reading = False
        if self._timer is None:
            self._timer = self._loop.call_at(self._deadline, self._expire)
        return self._pending.popleft()

    def _raise_if_expired(self) -> None:
        """The read ended without an event: ``UpstreamTimeout`` if the idle timer ended it."""
        if self._expired:
            raise UpstreamTimeout("The model backend stopped sending tokens.") from None

    def _expire(self) -> None:
        now = self._loop.time()
        if self._reading and now >= self._deadline:
            self._expired = True
            self._response.close()  # ends the pending read
            return
        # Still in time, or not waiting on the upstream at all (a slow client holds the
        # relay, which is no fault of the backend): look again later.
        later = self._deadline if self._reading else now + self._idle
        self._timer = self._loop.call_at(later, self._expire)

    async def drain(self) -> bool:
        """Read what follows ``[DONE]`` (the chunked terminator, usually there already)
        so that the connection can be reused: aiohttp drops a connection released before
        the end of its body, and a new one per stream costs a connect. ``False`` if the
        end did not come within ``DRAIN_SECONDS``."""
        content = self._response.content
        if content.is_eof():
            return True
        try:
            async with asyncio.timeout(DRAIN_SECONDS):
                while await content.readany():
                    pass
        except TRANSPORT_FAILURES:
            return False
        return True

    def close(self, finished: bool) -> None:
        """Give the connection back when the stream finished, else drop it.

        Dropping the connection is how TGI learns the client left: it then frees the
        request's batch slot (``tgi_request_failure{err="dropped"}``).
        """
        if self._timer is not None:
            self._timer.cancel()
        if finished:
            self._response.release()
        else:
            self._response.close()
