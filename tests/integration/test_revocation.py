"""What a revoked key stops, and what it does not: a request that was admitted before the
revocation runs to its end (the decision was made at admission, and cutting an answer
half-way would waste the GPU work already done and break the app mid-sentence); every
request after it is refused. A stream is bounded anyway by its ``max_tokens`` and the
upstream deadline."""

from __future__ import annotations

import json

import httpx

from gateway.sim import SimConfig
from tests.integration.harness import ADMIN_TOKEN, LoopThread, running_stack

HELLO = {"model": "sql", "messages": [{"role": "user", "content": "one two three four five"}]}
# The first token, then silence until the stall ends: the revocation surely lands mid-stream.
STALLED = {"model": "sql", "messages": [{"role": "user", "content": "sim-fault=stall go on"}]}


def _key_id(plaintext: str) -> str:
    return plaintext.split("-")[1]


def test_a_stream_admitted_before_a_revocation_finishes_and_the_next_request_is_refused(
    loop: LoopThread,
) -> None:
    with running_stack(loop, SimConfig(stall_seconds=3)) as stack:
        key = stack.keys["analytics"]
        auth = {"Authorization": f"Bearer {key}"}
        url = f"{stack.url}/v1/chat/completions"
        with httpx.stream("POST", url, json={**STALLED, "stream": True}, headers=auth) as streamed:
            lines = streamed.iter_lines()
            first = next(line for line in lines if line.startswith("data: "))
            assert json.loads(first.removeprefix("data: "))["choices"]  # it has begun
            revoked = httpx.delete(
                f"{stack.admin_url}/admin/v1/teams/analytics/keys/{_key_id(key)}",
                headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
                timeout=10,
            )
            assert revoked.status_code == 204
            assert stack.sim.seen[-1].outcome == "open"  # the stream is still running
            rest = [line for line in lines if line.startswith("data: ")]
        assert rest[-1] == "data: [DONE]"
        assert not any('"error"' in line for line in rest)
        after = httpx.post(url, json=HELLO, headers=auth, timeout=10)
        assert after.status_code == 401
