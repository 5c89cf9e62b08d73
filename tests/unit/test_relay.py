"""The stream relay on scripted upstream events: endings, errors, garbage."""

from __future__ import annotations

import asyncio
import json
from typing import Any, cast

from gateway.backends import TGIDialect
from gateway.upstream.client import EventStream
from gateway.upstream.relay import relay

DIALECT = TGIDialect()
CHUNK = (
    b'{"object":"chat.completion.chunk","id":"","created":1,"model":"m/sql","choices":'
    b'[{"index":0,"delta":{"role":"assistant","content":"hi"},"finish_reason":null}]}'
)


class Script:
    """An EventStream stand-in that plays a list of payloads."""

    def __init__(self, payloads: list[bytes]) -> None:
        self.payloads = payloads
        self.closed: bool | None = None

    @property
    def ready(self) -> bool:
        return bool(self.payloads)  # as if every event came in one read

    async def next(self) -> bytes | None:
        return self.payloads.pop(0) if self.payloads else None

    async def drain(self) -> bool:
        return True

    def close(self, finished: bool) -> None:
        self.closed = finished


def run(first: bytes, rest: list[bytes]) -> tuple[list[bytes], list[Any], Script]:
    script = Script(rest)
    ends: list[Any] = []

    async def collect() -> list[bytes]:
        frames = relay(
            cast(EventStream, script),
            first,
            DIALECT.rewriter("c-1", "sql", False, None, False),
            DIALECT,
            lambda outcome, relayed: ends.append((relayed, outcome)),
        )
        return [frame async for frame in frames]

    raw = b"".join(asyncio.run(collect()))
    events = [event + b"\n\n" for event in raw.split(b"\n\n") if event]
    return events, ends, script


def test_a_complete_stream_ends_with_done_and_releases_the_connection() -> None:
    frames, ends, script = run(CHUNK, [CHUNK, b"[DONE]"])
    assert frames[-1] == b"data: [DONE]\n\n" and len(frames) == 3
    assert ends == [(2, "ok")] and script.closed is True


def test_garbage_mid_stream_becomes_one_error_event_never_reflected() -> None:
    final = b'{"object":"chat.completion.chunk","id":"","choices":[{"finish_reason":"stop",<<<'
    frames, ends, script = run(CHUNK, [final, b"[DONE]"])
    error = json.loads(frames[-2].removeprefix(b"data: "))["error"]
    assert error["code"] == "upstream_error" and "<<<" not in frames[-2].decode()
    assert frames[-1] == b"data: [DONE]\n\n"
    assert ends == [(1, "upstream_error")] and script.closed is False


def test_an_upstream_that_just_stops_is_an_error_not_a_fake_done() -> None:
    frames, ends, _ = run(CHUNK, [])
    assert json.loads(frames[-2].removeprefix(b"data: "))["error"]["code"] == "upstream_error"
    assert ends == [(1, "upstream_error")]


def test_events_of_one_read_leave_in_one_write() -> None:
    script = Script([CHUNK, CHUNK, b"[DONE]"])  # all at hand, as after one upstream read

    async def writes() -> list[bytes]:
        frames = relay(
            cast(EventStream, script),
            CHUNK,
            DIALECT.rewriter("c-1", "sql", False, None, False),
            DIALECT,
            lambda outcome, relayed: None,
        )
        return [frame async for frame in frames]

    sent = asyncio.run(writes())
    assert len(sent) == 1
    assert sent[0].count(b"data: ") == 4 and sent[0].endswith(b"data: [DONE]\n\n")


def test_a_garbage_line_mid_stream_never_reaches_the_client() -> None:
    frames, ends, script = run(CHUNK, [b"{not json", CHUNK, b"[DONE]"])
    assert not any(b"not json" in frame for frame in frames)
    assert b'"upstream_error"' in frames[-2] and frames[-1] == b"data: [DONE]\n\n"
    assert ends == [(1, "upstream_error")] and script.closed is False
