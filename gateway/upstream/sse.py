"""Server-sent events: parsing the backend's stream and framing the client's.

Upstream, TGI writes ``data:<json>`` with no space and sends ``:`` keep-alive comments;
the parser accepts any SSE framing (CRLF, ``data: ``, multi-line data) and bounds the
size of one event. Downstream, the gateway writes OpenAI's ``data: <json>``.
"""

from __future__ import annotations

from gateway.errors import GatewayError, UpstreamError

DONE = b"data: [DONE]\n\n"
MAX_EVENT_BYTES = 1024 * 1024


def frame(payload: bytes) -> bytes:
    """One downstream SSE event."""
    return b"data: " + payload + b"\n\n"


def error_frames(error: GatewayError) -> bytes:
    """How an error ends a stream that already began: one error event, then ``[DONE]``."""
    return frame(error.to_json()) + DONE


class EventTooLarge(UpstreamError):
    """The backend sent one event larger than ``MAX_EVENT_BYTES``."""


class SSEDecoder:
    """Incremental SSE parser: bytes in, ``data`` payloads out (comments, other fields dropped)."""

    def __init__(self, max_event_bytes: int = MAX_EVENT_BYTES) -> None:
        self._buffer = b""
        self._max = max_event_bytes

    def feed(self, chunk: bytes) -> list[bytes]:
        """The payloads of every event completed by ``chunk``."""
        buffer = self._buffer + chunk
        if b"\r" in buffer:
            # A trailing CR may be half of a CRLF split across reads: keep it for later.
            held = buffer.endswith(b"\r")
            buffer = buffer[:-1] if held else buffer
            buffer = buffer.replace(b"\r\n", b"\n").replace(b"\r", b"\n") + (b"\r" if held else b"")
        events = buffer.split(b"\n\n")
        self._buffer = events.pop()
        if len(self._buffer) > self._max:
            raise EventTooLarge("The model backend sent an oversized event.")
        payloads = []
        for event in events:
            payload = _data(event)
            if payload is not None:
                payloads.append(payload)
        return payloads


def _data(event: bytes) -> bytes | None:
    if event.startswith(b"data:") and b"\n" not in event:  # the common case, TGI's framing
        value = event[5:]
        return value[1:] if value.startswith(b" ") else value
    lines = []
    for line in event.split(b"\n"):
        if line.startswith(b"data:"):
            value = line[5:]
            lines.append(value[1:] if value.startswith(b" ") else value)
    return b"\n".join(lines) if lines else None
