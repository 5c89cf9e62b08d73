"""Stage 5, forward: send the translated request to the chosen replica and relay the answer.

A stream's first upstream event is read before the client gets any header: TGI reports
overload, validation and generation errors as HTTP 200 plus an error event, and that
is the last moment such an error can still become a real HTTP status.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import aiohttp

from gateway.backends import ChunkRewriter, TGIDialect, Usage
from gateway.errors import GatewayError, UpstreamError
from gateway.routing import Route
from gateway.streaming import DONE, error_frames, frame
from gateway.upstream import TRANSPORT_FAILURES, EventStream, Upstream, read_body, transport_error

_ENDED_EARLY = "The model backend ended the stream before finishing."
_FAILED_MID_STREAM = "The connection to the model backend failed mid-stream."
_MALFORMED = "The model backend sent a malformed event."


def _is_error(payload: bytes) -> bool:
    return payload.startswith(b'{"error"')


def _ending(payload: bytes | None, dialect: TGIDialect) -> tuple[bytes, str] | None:
    """The last bytes and the outcome when ``payload`` ends the stream (``[DONE]``, an
    error event, or the upstream closing early); ``None`` for a chunk to relay."""
    if payload is None:
        return error_frames(UpstreamError(_ENDED_EARLY)), "upstream_error"
    if payload == b"[DONE]":
        return DONE, "ok"
    if _is_error(payload):
        error = dialect.event_error(payload)
        return error_frames(error), error.code
    return None


@dataclass(frozen=True, slots=True)
class Outbound:
    """One translated request on its way to a replica."""

    route: Route
    path: str
    body: bytes
    trace_headers: dict[str, str] | None = None
    """``traceparent`` (and ``tracestate``) when tracing is on."""

    async def send(self, upstream: Upstream) -> aiohttp.ClientResponse:
        """POST it to the route's replica."""
        return await upstream.post(self.route.endpoint + self.path, self.body, self.trace_headers)


async def exchange(
    upstream: Upstream, dialect: TGIDialect, out: Outbound, response_id: str, stop: list[str] | None
) -> tuple[bytes, Usage | None]:
    """A non-streamed request: the clean OpenAI body and its usage."""
    response = await out.send(upstream)
    try:
        raw = await read_body(response)
    except TRANSPORT_FAILURES as exc:
        response.close()
        raise transport_error(exc) from None
    response.release()
    if response.status != 200:
        raise dialect.http_error(response.status, raw)
    return dialect.response(raw, response_id, out.route.task, stop)


async def open_stream(
    upstream: Upstream, dialect: TGIDialect, out: Outbound
) -> tuple[EventStream, bytes]:
    """Send a streamed request and read up to its first data event.

    Everything that goes wrong before that event is raised as a ``GatewayError``, so the
    client still gets a proper status code.
    """
    stream: EventStream | None = None
    try:
        async with asyncio.timeout(upstream.first_event_timeout):
            response = await out.send(upstream)
            if response.status != 200:
                raw = await read_body(response)
                response.release()
                raise dialect.http_error(response.status, raw)
            stream = EventStream(response, upstream.idle_timeout)
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
    if first is None or _is_error(first):
        stream.close(finished=False)
        raise UpstreamError(_ENDED_EARLY) if first is None else dialect.event_error(first)
    return stream, first


async def relay(
    stream: EventStream,
    first: bytes,
    rewriter: ChunkRewriter,
    dialect: TGIDialect,
    on_first: Callable[[], None],
    on_end: Callable[[int, str], None],
) -> AsyncIterator[bytes]:
    """The client's SSE bytes as they arrive, ending in ``[DONE]``: the events of one
    upstream read leave together, and nothing waits for the next read.

    Closing this generator early (the client left) drops the upstream connection.
    ``on_first()`` runs as the first chunk leaves; ``on_end(chunks relayed, outcome)``
    runs on every ending, cancellation included (outcome: ``ok``, an error code, or
    ``client_disconnect``).
    """
    outcome, relayed, reusable = "client_disconnect", 0, False
    out: list[bytes] = []
    on_first()
    try:
        payload: bytes | None = first
        while (ending := _ending(payload, dialect)) is None:
            assert payload is not None  # (None is an ending)
            try:
                chunk = rewriter.rewrite(payload)
            except ValueError:  # not JSON: never reflected to the client
                ending = error_frames(UpstreamError(_MALFORMED)), "upstream_error"
                break
            if chunk is not None:
                relayed += 1
                out.append(frame(chunk))
            if out and not stream.ready:  # the next event needs a read: send what we have
                yield b"".join(out)
                out.clear()
            try:
                payload = await stream.next()
            except GatewayError as exc:
                ending = error_frames(exc), exc.code
                break
            except TRANSPORT_FAILURES:
                ending = error_frames(UpstreamError(_FAILED_MID_STREAM)), "upstream_error"
                break
        last, outcome = ending
        yield b"".join((*out, last))
        if outcome == "ok":
            reusable = await stream.drain()
    finally:
        stream.close(reusable)
        on_end(relayed, outcome)
