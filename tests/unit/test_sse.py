"""The upstream SSE parser: any framing, any chunking, bounded events."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.upstream.sse import EventTooLarge, SSEDecoder

TGI_STREAM = (
    b'data:{"a":1}\n\n:\n\ndata:{"b":"x y"}\n\n'  # TGI: no space, ":" keep-alives
    b'data: {"c":3}\r\n\r\ndata:[DONE]\n\n'
)
EXPECTED = [b'{"a":1}', b'{"b":"x y"}', b'{"c":3}', b"[DONE]"]


def _decode(parts: list[bytes]) -> list[bytes]:
    decoder = SSEDecoder()
    return [payload for part in parts for payload in decoder.feed(part)]


def test_tgi_framing_comments_crlf_and_spaces() -> None:
    assert _decode([TGI_STREAM]) == EXPECTED


@given(st.lists(st.integers(min_value=0, max_value=len(TGI_STREAM)), max_size=20))
def test_any_rechunking_gives_the_same_events(cuts: list[int]) -> None:
    points = sorted(set(cuts))
    parts = [TGI_STREAM[a:b] for a, b in zip([0, *points], [*points, len(TGI_STREAM)], strict=True)]
    assert _decode(parts) == EXPECTED


def test_multi_line_data_is_joined_and_other_fields_ignored() -> None:
    assert _decode([b"event: x\nid: 7\ndata: one\ndata: two\n\n"]) == [b"one\ntwo"]


def test_an_oversized_event_is_refused_without_growing_forever() -> None:
    decoder = SSEDecoder(max_event_bytes=1024)
    decoder.feed(b"data:" + b"x" * 1000)
    with pytest.raises(EventTooLarge):
        decoder.feed(b"x" * 100)
