"""Streaming behaviour that needs real sockets: pass-through, disconnects, broken upstreams."""

from __future__ import annotations

import json
import socket

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from gateway.sim import SimConfig
from tests.integration.harness import LoopThread, Stack, running_stack
from tests.integration.sse import chunks, open_raw_request, post_stream
from tests.redis_servers import PATIENCE

LONG: list[ChatCompletionMessageParam] = [
    {"role": "user", "content": "one two three four five six seven eight"}
]
# The first token, then silence until the client hangs up: the stream cannot end first.
STALLED: list[ChatCompletionMessageParam] = [
    {"role": "user", "content": "sim-fault=stall one two three four five six seven eight"}
]


def _last_outcome(stack: Stack, outcome: str) -> bool:
    return stack.sim.wait_for(
        lambda seen: bool(seen) and seen[-1].outcome == outcome, timeout=PATIENCE
    )


def test_first_token_reaches_the_client_before_the_upstream_finishes(stack: Stack) -> None:
    with openai.OpenAI(
        base_url=stack.base_url, api_key=stack.keys["analytics"], max_retries=0, timeout=PATIENCE
    ) as client:
        stream = client.chat.completions.create(model="sql", messages=STALLED, stream=True)
        first = next(iter(stream))
        assert first.choices[0].delta.content
        # The simulator has sent one token and holds the rest: nothing was buffered.
        assert stack.sim.seen[-1].outcome == "open"
        stream.close()
    assert _last_outcome(stack, "disconnected")


def test_client_disconnect_mid_stream_closes_the_upstream(stack: Stack) -> None:
    with httpx.Client(timeout=PATIENCE) as client:
        with client.stream(
            "POST",
            stack.url + "/v1/chat/completions",
            headers={"Authorization": f"Bearer {stack.keys['analytics']}"},
            json={"model": "sql", "messages": STALLED, "stream": True},
        ) as response:
            lines = response.iter_lines()
            assert next(lines).startswith("data: ")
        assert _last_outcome(stack, "disconnected")


@pytest.mark.parametrize("stream", [True, False])
def test_client_disconnect_before_the_first_token_closes_the_upstream(
    loop: LoopThread, stream: bool
) -> None:
    with running_stack(loop, SimConfig(ttft=30)) as stack:
        sock = open_raw_request(
            stack.url, stack.keys["analytics"], {"model": "sql", "messages": LONG, "stream": stream}
        )
        assert stack.sim.wait_for(lambda seen: len(seen) == 1, timeout=PATIENCE)
        sock.close()
        assert _last_outcome(stack, "disconnected")


def test_upstream_reset_mid_stream_ends_with_an_error_event(stack: Stack) -> None:
    response, payloads = post_stream(
        stack.url,
        stack.keys["analytics"],
        {
            "model": "sql",
            "stream": True,
            "messages": [{"role": "user", "content": "sim-fault=reset then some words"}],
        },
    )
    assert response.status_code == 200
    assert len(chunks(payloads[:-2])) == 2
    assert json.loads(payloads[-2])["error"]["code"] == "upstream_error"
    assert payloads[-1] == "[DONE]"


def test_upstream_reset_before_an_answer_is_503(stack: Stack) -> None:
    with (
        openai.OpenAI(
            base_url=stack.base_url, api_key=stack.keys["analytics"], max_retries=0
        ) as client,
        pytest.raises(openai.APIStatusError) as caught,
    ):
        client.chat.completions.create(
            model="sql", messages=[{"role": "user", "content": "sim-fault=reset"}]
        )
    assert caught.value.status_code in (502, 503)


@pytest.mark.parametrize("fault", ["stall", "keepalive"])
def test_a_silent_stream_is_cut_by_the_idle_timeout(loop: LoopThread, fault: str) -> None:
    """Nothing after the first token: silence, or only keep-alive comments (which do not
    count as events)."""
    with running_stack(loop, upstream_idle_timeout=0.5) as stack:
        _, payloads = post_stream(
            stack.url,
            stack.keys["analytics"],
            {
                "model": "sql",
                "stream": True,
                "messages": [{"role": "user", "content": f"sim-fault={fault} now"}],
            },
        )
        assert len(chunks(payloads[:-2])) == 1
        assert json.loads(payloads[-2])["error"]["code"] == "upstream_timeout"
        assert payloads[-1] == "[DONE]"
        assert _last_outcome(stack, "disconnected")


def test_no_first_event_in_time_is_504(loop: LoopThread) -> None:
    with running_stack(loop, SimConfig(ttft=30), upstream_first_event_timeout=0.5) as stack:
        response, _ = _raw_post(stack, {"model": "sql", "messages": LONG, "stream": True})
        assert response.status_code == 504
        assert response.json()["error"]["code"] == "upstream_timeout"
        assert _last_outcome(stack, "disconnected")


@pytest.mark.parametrize("stream", [True, False])
def test_the_idle_timeout_does_not_apply_before_the_first_token(
    loop: LoopThread, stream: bool
) -> None:
    """A long prefill (or a long non-streamed generation, silent until done) is bounded by
    the first-event timeout and the deadline, never by the idle timeout between events."""
    with running_stack(
        loop, SimConfig(ttft=1.5), upstream_idle_timeout=0.3, upstream_first_event_timeout=20
    ) as stack:
        response, _ = _raw_post(stack, {"model": "sql", "messages": LONG, "stream": stream})
        assert response.status_code == 200
        assert _last_outcome(stack, "ok")


def test_streams_reuse_their_upstream_connection(stack: Stack) -> None:
    late = [{"role": "user", "content": "sim-fault=late-end: [DONE] before the body ends"}]
    for _ in range(5):
        _, payloads = post_stream(
            stack.url, stack.keys["analytics"], {"model": "sql", "messages": late, "stream": True}
        )
        assert payloads[-1] == "[DONE]"
    streams = [seen for seen in stack.sim.seen if seen.body.get("stream")][-5:]
    assert len({seen.connection for seen in streams}) == 1  # kept alive, not reconnected


def test_an_unreachable_pool_is_503(loop: LoopThread) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{probe.getsockname()[1]}"  # bound, never listening
        with running_stack(loop, endpoints=(dead,)) as stack:
            for stream in (False, True):
                response, _ = _raw_post(stack, {"model": "sql", "messages": LONG, "stream": stream})
                assert response.status_code == 503
                assert response.json()["error"]["code"] == "upstream_unavailable"
                assert response.headers["retry-after"] == "1"


def _raw_post(stack: Stack, body: dict[str, object]) -> tuple[httpx.Response, str]:
    response = httpx.post(
        stack.url + "/v1/chat/completions",
        json=body,
        timeout=20,
        headers={"Authorization": f"Bearer {stack.keys['analytics']}"},
    )
    return response, response.text
