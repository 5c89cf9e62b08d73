"""Relaying a stream: the backend's events rewritten and framed for the client as they
arrive, ending in ``[DONE]`` however the stream ends."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable

from gateway.backends import ChunkRewriter, Dialect
from gateway.errors import GatewayError, UpstreamError
from gateway.upstream.attempt import ENDED_EARLY, is_error
from gateway.upstream.client import TRANSPORT_FAILURES, EventStream
from gateway.upstream.sse import DONE, error_frames, frame

_FAILED_MID_STREAM = "The connection to the model backend failed mid-stream."
_MALFORMED = "The model backend sent a malformed event."


def _ending(payload: bytes | None, dialect: Dialect) -> tuple[bytes, str] | None:
    """The last bytes and the outcome when ``payload`` ends the stream (``[DONE]``, an
    error event, or the upstream closing early); ``None`` for a chunk to relay."""
    if payload is None:
        return error_frames(UpstreamError(ENDED_EARLY)), "upstream_error"
    if payload == b"[DONE]":
        return DONE, "ok"
    if is_error(payload):
        error = dialect.event_error(payload)
        return error_frames(error), error.code
    if not (payload.startswith(b"{") and payload.endswith(b"}")):
        # Not a JSON object: chunks are spliced, not parsed, so this is the one check
        # that keeps a garbage line from reaching the client as it came.
        return error_frames(UpstreamError(_MALFORMED)), "upstream_error"
    return None


async def relay(
    stream: EventStream,
    first: bytes,
    rewriter: ChunkRewriter,
    dialect: Dialect,
    on_end: Callable[[str, int], None],
) -> AsyncGenerator[bytes, None]:
    """The client's SSE bytes as they arrive, ending in ``[DONE]``: the events of one
    upstream read leave together, and nothing waits for the next read.

    Closing this generator early (the client left) drops the upstream connection.
    ``on_end(outcome, chunks relayed)`` runs on every ending, cancellation included
    (outcome: ``ok``, an error code, or ``client_disconnect``).
    """
    outcome, relayed, reusable = "client_disconnect", 0, False
    out: list[bytes] = []
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
        on_end(outcome, relayed)
