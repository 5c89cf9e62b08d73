"""Per-adapter cost and latency metrics: exact counts after a scripted mix of requests,
and no client input ever becomes a label value."""

from __future__ import annotations

import json
import random
import string
from collections.abc import Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.registry import Price
from gateway.schemas import ChatRequest
from tests.integration.harness import ADMIN_TOKEN, LoopThread, Stack, eventually, running_stack
from tests.integration.sse import open_raw_request
from tests.redis_servers import PATIENCE

SQL = "google-cloud-partnership/gemma-2-2b-it-lora-sql"
CODE = "google-cloud-partnership/gemma-2-2b-it-lora-magicoder"
BASE = "google/gemma-2-2b-it"
PRICES = {
    SQL: Price(input_per_million=1.0, output_per_million=2.0),
    CODE: Price(input_per_million=3.0, output_per_million=5.0),
}


def samples(stack: Stack) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the gateway's /metrics, by name and sorted labels."""
    text = httpx.get(f"{stack.admin_url}/metrics", timeout=10).text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(
    found: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture
def priced(loop: LoopThread) -> Iterator[Stack]:
    with running_stack(loop) as stack:
        adapters = tuple(
            a.model_copy(update={"price": PRICES.get(a.id)}) for a in stack.registry.adapters
        )
        stack.reset(loop, stack.registry.model_copy(update={"adapters": adapters}))
        yield stack


def _chat(stack: Stack, team: str, body: dict[str, object]) -> httpx.Response:
    return httpx.post(
        f"{stack.url}/v1/chat/completions",
        json=body,
        timeout=20,
        headers={"Authorization": f"Bearer {stack.keys[team]}"},
    )


def _usage(response: httpx.Response) -> tuple[int, int]:
    if response.headers["content-type"].startswith("text/event-stream"):
        events = [e.removeprefix("data: ") for e in response.text.split("\n\n") if e]
        usage = json.loads(events[-2])["usage"]
    else:
        usage = response.json()["usage"]
    return usage["prompt_tokens"], usage["completion_tokens"]


def test_a_scripted_mix_is_counted_exactly(priced: Stack) -> None:
    stack = priced
    hello = [{"role": "user", "content": "hello there"}]
    expected: dict[tuple[str, str], list[int]] = {}  # (team, adapter) -> [in, out]

    def add(team: str, adapter: str, tokens: tuple[int, int]) -> None:
        totals = expected.setdefault((team, adapter), [0, 0])
        totals[0] += tokens[0]
        totals[1] += tokens[1]

    plan = [
        ("analytics", "sql", SQL, False),
        ("analytics", "sql", SQL, True),
        ("devtools", "code", CODE, False),
        ("devtools", "code", CODE, True),
        ("analytics", "chat", BASE, True),
        ("devtools", "chat", BASE, False),
    ]
    for team, task, adapter, stream in plan:
        body: dict[str, object] = {"model": task, "messages": hello}
        if stream:
            body |= {"stream": True, "stream_options": {"include_usage": True}}
        add(team, adapter, _usage(_chat(stack, team, body)))
    broken = {
        "model": "sql",
        "stream": True,
        "messages": [{"role": "user", "content": "sim-fault=error-mid-stream go"}],
    }
    assert '"upstream_error"' in _chat(stack, "analytics", broken).text
    add("analytics", SQL, (ChatRequest.model_validate(broken).prompt_tokens_estimate, 2))
    stalled = {"model": "code", "messages": [{"role": "user", "content": "sim-fault=stall"}]}
    sock = open_raw_request(stack.url, stack.keys["devtools"], stalled)
    assert stack.sim.wait_for(
        lambda seen: (
            seen[-1].path == "/v1/chat/completions"
            and seen[-1].outcome == "open"
            and "stall" in str(seen[-1].body)
        ),
        PATIENCE,
    )
    sock.close()
    assert stack.sim.wait_for(lambda seen: seen[-1].outcome == "disconnected", PATIENCE)
    add("devtools", CODE, (ChatRequest.model_validate(stalled).prompt_tokens_estimate, 0))
    abandoned = {"team": "devtools", "task": "code", "adapter": CODE, "pool": "gemma-2-2b-it"}
    eventually(  # the gateway's side of the hang-up is recorded, then everything is read
        lambda: (
            value(samples(stack), "lgw_requests_total", **abandoned, code="client_disconnect") == 1
        ),
        "the abandoned request being counted",
    )

    found = samples(stack)
    for (team, adapter), (tokens_in, tokens_out) in expected.items():
        assert (
            value(found, "lgw_tokens_total", team=team, adapter=adapter, direction="input")
            == tokens_in
        )
        assert (
            value(found, "lgw_tokens_total", team=team, adapter=adapter, direction="output")
            == tokens_out
        )
        price = PRICES.get(adapter, Price())
        assert value(found, "lgw_cost_total", team=team, adapter=adapter) == pytest.approx(
            price.cost(tokens_in, tokens_out)
        )
    requests = {
        labels: v for (name, labels), v in found.items() if name == "lgw_requests_total" and v
    }
    assert requests == {
        (
            ("adapter", SQL),
            ("code", "ok"),
            ("pool", "gemma-2-2b-it"),
            ("task", "sql"),
            ("team", "analytics"),
        ): 2.0,
        (
            ("adapter", SQL),
            ("code", "upstream_error"),
            ("pool", "gemma-2-2b-it"),
            ("task", "sql"),
            ("team", "analytics"),
        ): 1.0,
        (
            ("adapter", CODE),
            ("code", "ok"),
            ("pool", "gemma-2-2b-it"),
            ("task", "code"),
            ("team", "devtools"),
        ): 2.0,
        (
            ("adapter", CODE),
            ("code", "client_disconnect"),
            ("pool", "gemma-2-2b-it"),
            ("task", "code"),
            ("team", "devtools"),
        ): 1.0,
        (
            ("adapter", BASE),
            ("code", "ok"),
            ("pool", "gemma-2-2b-it"),
            ("task", "chat"),
            ("team", "analytics"),
        ): 1.0,
        (
            ("adapter", BASE),
            ("code", "ok"),
            ("pool", "gemma-2-2b-it"),
            ("task", "chat"),
            ("team", "devtools"),
        ): 1.0,
    }
    # every streamed request that produced a token observed a time to first token
    ttft = {
        adapter: value(found, "lgw_time_to_first_token_seconds_count", adapter=adapter)
        for adapter in (SQL, CODE, BASE)
    }
    assert ttft == {SQL: 2.0, CODE: 1.0, BASE: 1.0}
    assert value(found, "lgw_inflight_requests", pool="gemma-2-2b-it") == 0
    usage = httpx.get(
        f"{stack.admin_url}/admin/v1/usage", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
    ).json()
    assert {
        (row["team"], row["adapter"]): [row["input_tokens"], row["output_tokens"]] for row in usage
    } == expected
    for row in usage:
        price = PRICES.get(row["adapter"], Price())
        assert row["cost"] == pytest.approx(price.cost(row["input_tokens"], row["output_tokens"]))
    assert (
        value(found, "lgw_upstream_errors_total", pool="gemma-2-2b-it", reason="upstream_error")
        == 1
    )


def test_client_input_never_becomes_a_label(priced: Stack) -> None:
    stack = priced
    _chat(stack, "analytics", {"model": "sql", "messages": [{"role": "user", "content": "x"}]})
    before = len(samples(stack))
    rng = random.Random(7)
    with httpx.Client(timeout=10) as client:
        for i in range(5000):
            junk = "".join(rng.choices(string.ascii_letters + "{}\\'", k=12))
            if i % 2:
                client.post(f"{stack.url}/v1/{junk}", json={})
            else:
                client.post(
                    f"{stack.url}/v1/chat/completions",
                    json={"model": junk, "messages": [{"role": "user", "content": "x"}]},
                    headers={"Authorization": f"Bearer {stack.keys['analytics']}"},
                )
    after = samples(stack)
    assert len(after) - before <= 5
    assert not any(v in str(labels) for (_, labels) in after for v in ("{", "\\"))
    assert (
        value(
            after,
            "lgw_requests_total",
            team="analytics",
            task="other",
            adapter="none",
            pool="none",
            code="model_not_found",
        )
        == 2500
    )


def _strict_media_type(value: str) -> tuple[str, dict[str, str]]:
    """A Content-Type read as strictly as Prometheus 3 does (Go's mime.ParseMediaType):
    one type, then ``name=value`` parameters, none of them twice."""
    kind, *parts = (part.strip() for part in value.split(";"))
    params: dict[str, str] = {}
    for part in parts:
        name, equals, raw = part.partition("=")
        assert equals and name and raw, f"malformed parameter {part!r} in {value!r}"
        assert name.lower() not in params, f"duplicate parameter {name!r} in {value!r}"
        params[name.lower()] = raw.strip('"')
    return kind, params


def test_the_scrape_content_type_has_each_parameter_once(priced: Stack) -> None:
    response = httpx.get(f"{priced.admin_url}/metrics", timeout=10)
    [header] = response.headers.get_list("content-type")
    assert _strict_media_type(header) == ("text/plain", {"version": "1.0.0", "charset": "utf-8"})


def test_a_body_too_large_is_counted_as_request_too_large(loop: LoopThread) -> None:
    with running_stack(loop, max_body_bytes=2000) as stack:
        big: dict[str, object] = {
            "model": "sql",
            "messages": [{"role": "user", "content": "x" * 5000}],
        }
        assert _chat(stack, "analytics", big).status_code == 413
        found = samples(stack)
    refused = {"team": "analytics", "task": "other", "adapter": "none", "pool": "none"}
    assert value(found, "lgw_requests_total", **refused, code="request_too_large") == 1
    assert value(found, "lgw_requests_total", **refused, code="internal_error") == 0
