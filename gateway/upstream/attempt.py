"""One try on one replica: POST the translated request and read the answer, or a stream
up to its first event.

A stream's first upstream event is read before the client gets any header: TGI reports
overload, validation and generation errors as HTTP 200 plus an error event, and that
is the last moment such an error can still become a real HTTP status.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import aiohttp

from gateway.backends import Dialect, Usage
from gateway.errors import GatewayError, UpstreamError
from gateway.routing import Route
from gateway.upstream.client import (
    TRANSPORT_FAILURES,
    Client,
    EventStream,
    read_body,
    transport_error,
)

ENDED_EARLY = "The model backend ended the stream before finishing."


def is_error(payload: bytes) -> bool:
    """Whether a stream's event is an error event."""
    return payload.startswith(b'{"error"')


@dataclass(frozen=True, slots=True)
class Outbound:
    """One translated request on its way to a replica."""

    route: Route
    path: str
    body: bytes
    trace_headers: dict[str, str] | None = None
    """``traceparent`` (and ``tracestate``) when tracing is on."""

    async def send(self, client: Client) -> aiohttp.ClientResponse:
        """POST it to the route's replica."""
        return await client.post(self.route.endpoint + self.path, self.body, self.trace_headers)


async def call(
    client: Client, dialect: Dialect, out: Outbound, response_id: str, stop: list[str] | None
) -> tuple[bytes, Usage | None]:
    """A non-streamed request: the clean OpenAI body and its usage."""
    response = await out.send(client)
    try:
        raw = await read_body(response)
    except TRANSPORT_FAILURES as exc:
        response.close()
        raise transport_error(exc) from None
    response.release()
    if response.status != 200:
        raise dialect.http_error(response.status, raw)
    return dialect.response(raw, response_id, out.route.task, stop)


async def open_stream(client: Client, dialect: Dialect, out: Outbound) -> tuple[EventStream, bytes]:
    """Send a streamed request and read up to its first data event.

    Everything that goes wrong before that event is raised as a ``GatewayError``, so the
    client still gets a proper status code.
    """
    stream: EventStream | None = None
    try:
        async with asyncio.timeout(client.first_event_timeout):
            response = await out.send(client)
            if response.status != 200:
                raw = await read_body(response)
                response.release()
                raise dialect.http_error(response.status, raw)
            stream = EventStream(response, client.idle_timeout)
            first = await stream.next()
    except GatewayError:
        if stream is not None:
            stream.close(finished=False)
        raise
    except TRANSPORT_FAILURES as exc:
        if stream is not None:
            stream.close(finished=False)
        raise transport_error(exc) from None
    except BaseException:  # cancelled: the client left while we waited
        if stream is not None:
            stream.close(finished=False)
        raise
    if first is None or is_error(first):
        stream.close(finished=False)
        raise UpstreamError(ENDED_EARLY) if first is None else dialect.event_error(first)
    return stream, first
