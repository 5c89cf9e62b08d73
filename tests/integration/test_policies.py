"""Access and data-segregation policies on the running data plane: what is listed is what
is served, data never reaches a pool not cleared for it, caps refuse before any upstream
call, logs keep exactly what the team's policy allows, and shadow mode only counts."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from gateway.accounting.tracing import Telemetry
from gateway.registry import Registry
from gateway.registry.models import Policy
from gateway.sim import SimConfig, Simulator
from tests.integration.harness import LoopThread, Stack, eventually, running_stack
from tests.integration.sse import open_raw_request
from tests.redis_servers import PATIENCE

SQL = "google-cloud-partnership/gemma-2-2b-it-lora-sql"


def with_policy(registry: Registry, team: str, **policy: Any) -> Registry:
    teams = tuple(
        t.model_copy(update={"policy": Policy.model_validate(policy)}) if t.name == team else t
        for t in registry.teams
    )
    return registry.model_copy(update={"teams": teams})


def chat(stack: Stack, team: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(
        f"{stack.url}/v1/chat/completions",
        json=body,
        timeout=20,
        headers={"Authorization": f"Bearer {stack.keys[team]}"},
    )


HI = {"type": "text", "text": "hi"}
IMAGE = {"type": "image_url", "image_url": {"url": "data:image/png;base64," + "A" * 200_000}}
BIG_TOOL = {
    "type": "function",
    "function": {"name": "f", "description": "d" * 5000, "parameters": {"type": "object"}},
}
BIG_SCHEMA = {
    "type": "json_schema",
    "json_schema": {"name": "s", "schema": {"type": "object", "description": "d" * 5000}},
}
TOOL_TURNS = [
    {"role": "user", "content": "weather?"},
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "c1",
                "type": "function",
                "function": {"name": "weather", "arguments": '{"city": "' + "x" * 5000 + '"}'},
            }
        ],
    },
    {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
]


def ask(task: str, content: Any = "hello", **extra: Any) -> dict[str, Any]:
    return {"model": task, "messages": [{"role": "user", "content": content}], **extra}


def test_models_lists_exactly_what_the_data_plane_serves(stack: Stack, loop: LoopThread) -> None:
    # localization may not send its data to this pool (cleared for internal only)
    stack.reset(loop, with_policy(stack.registry, "localization", data_class="confidential"))
    tasks = sorted({m.task for m in stack.registry.mappings})
    for team in ("analytics", "devtools", "localization"):
        listed = httpx.get(
            f"{stack.url}/v1/models",
            timeout=10,
            headers={"Authorization": f"Bearer {stack.keys[team]}"},
        ).json()["data"]
        served = [task for task in tasks if chat(stack, team, ask(task)).status_code == 200]
        assert sorted(m["id"] for m in listed) == served
    assert served == []  # the last team, localization: nothing is cleared for its data


@pytest.fixture
def two_pools(stack: Stack, loop: LoopThread) -> Iterator[tuple[Stack, Simulator]]:
    """The same adapters on a second pool, cleared for confidential data."""
    pool = stack.registry.pools[0]
    cleared = Simulator(SimConfig(model_id=pool.base_model, lora_adapters=",".join(pool.adapters)))
    url = loop.run(cleared.start())
    confidential = pool.model_copy(
        update={"name": "gemma-confidential", "endpoints": (url,), "clearance": "confidential"}
    )
    registry = stack.registry.model_copy(update={"pools": (pool, confidential)})
    stack.reset(loop, with_policy(registry, "analytics", data_class="confidential"))
    yield stack, cleared
    loop.run(cleared.stop())


def test_confidential_data_never_reaches_an_internal_pool(
    two_pools: tuple[Stack, Simulator],
) -> None:
    stack, cleared = two_pools
    for _ in range(20):
        response = chat(stack, "analytics", ask("sql"))
        assert response.headers["x-lgw-pool"] == "gemma-confidential"
    assert len(cleared.seen) == 20
    assert stack.sim.seen == []  # the internal pool saw none of analytics' requests
    for _ in range(5):  # other teams' internal data may use either pool
        chat(stack, "devtools", ask("code"))
    assert len(stack.sim.seen) + len(cleared.seen) == 25


@pytest.mark.parametrize(
    ("caps", "body", "reason"),
    [
        (
            {"max_messages": 1},
            ask("sql", messages=None)
            | {
                "messages": [
                    {"role": "user", "content": "a"},
                    {"role": "assistant", "content": "b"},
                    {"role": "user", "content": "c"},
                ]
            },
            "too_many_messages",
        ),
        ({"max_prompt_chars": 10}, ask("sql", "x" * 11), "prompt_too_large"),
        # Caps count every byte that reaches the backend, not text parts only.
        ({"max_prompt_chars": 1000}, ask("sql", [HI, IMAGE]), "prompt_too_large"),
        (
            {"max_prompt_chars": 1000},
            ask("sql", [HI, {"type": "x", "t": "y" * 5000}]),
            "prompt_too_large",
        ),
        ({"max_prompt_chars": 1000}, ask("sql", messages=TOOL_TURNS), "prompt_too_large"),
        ({"max_prompt_chars": 1000}, ask("sql", tools=[BIG_TOOL]), "prompt_too_large"),
        ({"max_prompt_chars": 1000}, ask("sql", response_format=BIG_SCHEMA), "prompt_too_large"),
        ({"max_prompt_chars": 1000}, ask("sql", [{**HI, "pad": "y" * 5000}]), "prompt_too_large"),
        ({"max_prompt_chars": 1000}, ask("sql", stop=["z" * 1500]), "prompt_too_large"),
        # allow_tools: false holds on every tool-related field, not on ``tools`` alone.
        ({"allow_tools": False}, ask("sql", messages=TOOL_TURNS), "tools_not_allowed"),
        ({"allow_tools": False}, ask("sql", tool_choice="auto"), "tools_not_allowed"),
        ({"max_tokens": 50}, ask("sql", max_tokens=51), "max_tokens_cap"),
        ({"allow_logprobs": False}, ask("sql", logprobs=True), "logprobs_not_allowed"),
        (
            {"allow_response_format": False},
            ask("sql", response_format={"type": "text"}),
            "response_format_not_allowed",
        ),
    ],
)
def test_a_request_beyond_a_cap_is_refused_before_any_upstream_call(
    stack: Stack, loop: LoopThread, caps: dict[str, Any], body: dict[str, Any], reason: str
) -> None:
    stack.reset(loop, with_policy(stack.registry, "analytics", caps=caps))
    response = chat(stack, "analytics", body)
    assert response.status_code == 403
    error = response.json()["error"]
    assert (error["type"], error["code"], error["param"]) == (
        "permission_denied",
        "permission_denied",
        reason,
    )
    assert "analytics" not in error["message"] and SQL not in error["message"]
    assert stack.sim.seen == []
    metrics = httpx.get(f"{stack.admin_url}/metrics", timeout=10).text
    assert f'lgw_policy_denials_total{{reason="{reason}",team="analytics"}} 1.0' in metrics


def test_the_default_max_tokens_respects_the_team_cap(stack: Stack, loop: LoopThread) -> None:
    stack.reset(loop, with_policy(stack.registry, "analytics", caps={"max_tokens": 64}))
    assert chat(stack, "analytics", ask("sql")).status_code == 200
    assert stack.sim.seen[-1].body["max_tokens"] == 64


def test_shadow_mode_serves_and_counts_what_it_would_deny(stack: Stack, loop: LoopThread) -> None:
    stack.reset(
        loop, with_policy(stack.registry, "analytics", shadow=True, caps={"max_prompt_chars": 3})
    )
    assert chat(stack, "analytics", ask("sql", "longer than three")).status_code == 200
    metrics = httpx.get(f"{stack.admin_url}/metrics", timeout=10).text
    assert 'lgw_policy_would_deny_total{reason="prompt_too_large",team="analytics"} 1.0' in metrics
    assert "lgw_policy_denials_total{" not in metrics


CANARY = "canary-9c1e5b-prompt-text"


@pytest.fixture
def canary_stack(loop: LoopThread, redis_url: str) -> Iterator[tuple[Stack, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with running_stack(loop, telemetry=Telemetry(provider), redis_url=redis_url) as stack:
        stack.reset(loop, with_policy(stack.registry, "analytics", logging="none"))
        yield stack, exporter


def test_a_no_log_teams_prompt_reaches_no_sink_on_any_path(
    canary_stack: tuple[Stack, InMemorySpanExporter],
    caplog: pytest.LogCaptureFixture,
    redis_url: str,
) -> None:
    stack, exporter = canary_stack
    caplog.set_level(logging.DEBUG)
    bodies = [
        chat(stack, "analytics", ask("sql", CANARY)).text,  # success
        chat(stack, "analytics", ask("sql", f"{CANARY} sim-fault=error-before-content")).text,
        chat(
            stack, "analytics", ask("sql", f"{CANARY} sim-fault=error-mid-stream", stream=True)
        ).text,
        chat(stack, "analytics", ask("sql", CANARY, top_p=7)).text,  # validation error
        chat(stack, "analytics", ask("sql", CANARY, stop=["a", "b", "c", "d", "e"])).text,
    ]
    sock = open_raw_request(
        stack.url, stack.keys["analytics"], ask("sql", f"{CANARY} sim-fault=stall", stream=True)
    )
    assert stack.sim.wait_for(
        lambda seen: seen[-1].outcome == "open" and "stall" in json.dumps(seen[-1].body),
        PATIENCE,
    )
    sock.close()  # client disconnect
    assert stack.sim.wait_for(lambda seen: seen[-1].outcome == "disconnected", PATIENCE)
    eventually(  # its ending is recorded (counted, traced, logged) before the sinks are read
        lambda: 'code="client_disconnect"' in httpx.get(f"{stack.admin_url}/metrics").text,
        "the abandoned request's ending being recorded",
    )
    assert CANARY in json.dumps(stack.sim.seen[0].body)  # it was really sent upstream
    sinks = {
        "error bodies": "\n".join(bodies[1:]),
        "logs": "\n".join(r.getMessage() for r in caplog.records),
        "spans": "\n".join(
            str(s.attributes) + str(s.events) + s.name for s in exporter.get_finished_spans()
        ),
        "metrics": httpx.get(f"{stack.admin_url}/metrics", timeout=10).text,
        "redis": _redis_dump(redis_url),
    }
    assert not any(r.name == "gateway.requests" for r in caplog.records)  # no line at all
    for sink, text in sinks.items():
        assert CANARY not in text, f"the prompt leaked into {sink}"


def _redis_dump(url: str) -> str:
    client = redis.Redis.from_url(url, decode_responses=True)
    try:
        parts = []
        for key in client.scan_iter("*"):
            kind = str(client.type(key))
            value: Any = ""
            if kind == "hash":
                value = client.hgetall(key)
            elif kind == "zset":
                value = client.zrange(key, 0, -1)
            elif kind == "string":
                value = client.get(key)
            parts.append(f"{key} {value}")
        return "\n".join(parts)
    finally:
        client.close()


def test_a_redacted_teams_logs_mask_secrets_and_pii(
    stack: Stack, loop: LoopThread, caplog: pytest.LogCaptureFixture
) -> None:
    stack.reset(loop, with_policy(stack.registry, "analytics", logging="redacted"))
    caplog.set_level(logging.INFO, logger="gateway.requests")
    secret = "sk-abcdefghijklmnop1234567890"
    prompt = f"mail jane.doe@example.com the key {secret} about orders"
    assert chat(stack, "analytics", ask("sql", prompt)).status_code == 200
    chat(stack, "analytics", ask("sql", prompt, stream=True))
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "gateway.requests"]
    assert len(lines) == 2
    for line in lines:
        text = line["prompt"] + line["completion"]
        assert "jane.doe@example.com" not in text and secret not in text
        assert "[REDACTED:email]" in line["prompt"] and "[REDACTED:key]" in line["prompt"]
        assert "about orders" in line["completion"]  # the rest of the content stays
        assert line["team"] == "analytics" and line["adapter"] == SQL


def test_metadata_logs_have_no_content(stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="gateway.requests")
    chat(stack, "devtools", ask("code", CANARY))
    chat(stack, "devtools", ask("nope", CANARY))  # an error ending is logged too
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "gateway.requests"]
    assert [line["outcome"] for line in lines] == ["ok", "model_not_found"]
    assert all(CANARY not in json.dumps(line) for line in lines)
    assert lines[0]["output_tokens"] > 0 and lines[0]["duration_ms"] > 0


def test_a_teams_policy_is_editable_through_the_admin_api(stack: Stack) -> None:
    from tests.integration.harness import ADMIN_TOKEN

    response = httpx.patch(
        f"{stack.admin_url}/admin/v1/teams/analytics",
        timeout=10,
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        json={"policy": {"data_class": "restricted", "shadow": False}},
    )
    assert response.status_code == 422  # its mappings would no longer have a cleared pool
    assert "policy allows" in response.json()["error"]["message"]
    response = httpx.patch(
        f"{stack.admin_url}/admin/v1/teams/analytics",
        timeout=10,
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        json={"policy": {"caps": {"max_messages": 1}}},
    )
    assert response.status_code == 200
    assert response.json()["policy"]["caps"]["max_messages"] == 1
