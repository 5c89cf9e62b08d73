"""The simulator's bodies against TGI's own OpenAPI spec, where the spec is right.

Where the spec is wrong (docs/reference/tgi-protocol.md §10) the simulator follows the TGI
source instead, and the test says so: ``/v1/models`` is a list, streamed errors are
HTTP 200 events, ``details`` defaults to false.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from jsonschema import Draft202012Validator

from gateway.sim import Fault, SimConfig, Simulator
from tests.integration.harness import LoopThread

# TGI v3.3.6-dev0 docs/openapi.json, copied unchanged from shared/reference (Apache-2.0).
SPEC_PATH = Path(__file__).with_name("tgi-openapi.json")
ADAPTER = "google-cloud-partnership/gemma-2-2b-it-lora-sql"
CHAT = {"model": ADAPTER, "messages": [{"role": "user", "content": "select everything"}]}


def _openapi_to_jsonschema(node: Any) -> Any:
    """OpenAPI 3.0's ``nullable`` as JSON Schema's ``null`` alternative."""
    if isinstance(node, list):
        return [_openapi_to_jsonschema(item) for item in node]
    if not isinstance(node, dict):
        return node
    converted = {k: _openapi_to_jsonschema(v) for k, v in node.items() if k != "nullable"}
    if node.get("nullable"):
        return {"anyOf": [converted, {"type": "null"}]}
    return converted


@pytest.fixture(scope="module")
def components() -> dict[str, Any]:
    spec = json.loads(SPEC_PATH.read_text())
    return {"components": _openapi_to_jsonschema(spec["components"])}


def check(components: dict[str, Any], name: str, instance: Any) -> None:
    """Assert ``instance`` is a valid ``#/components/schemas/<name>``."""
    schema = {"$ref": f"#/components/schemas/{name}", **components}
    errors = list(Draft202012Validator(schema).iter_errors(instance))
    assert not errors, f"{name}: {[e.message for e in errors]}"


@pytest.fixture(scope="module")
def sim_url() -> Iterator[str]:
    loop = LoopThread()
    sim = Simulator(SimConfig(lora_adapters=f"{ADAPTER},other=/data/other@v2"))
    yield loop.run(sim.start())
    loop.run(sim.stop())
    loop.close()


def _events(text: str) -> list[str]:
    events = [e for e in text.split("\n\n") if e]
    assert all(e.startswith("data:") and not e.startswith("data: ") for e in events)
    return [e.removeprefix("data:") for e in events]


def test_chat_completion_matches_the_spec(sim_url: str, components: dict[str, Any]) -> None:
    response = httpx.post(sim_url + "/v1/chat/completions", json=CHAT)
    body = response.json()
    check(components, "ChatCompletion", body)
    assert body["id"] == ""
    assert body["model"] == ADAPTER
    assert response.headers["x-compute-type"] == "gpu+optimized"


def test_chat_stream_chunks_match_the_spec(sim_url: str, components: dict[str, Any]) -> None:
    response = httpx.post(
        sim_url + "/v1/chat/completions",
        json={**CHAT, "stream": True, "stream_options": {"include_usage": True}},
    )
    assert response.headers["content-type"].startswith("text/event-stream")
    events = _events(response.text)
    assert events[-1] == "[DONE]"
    payloads = [json.loads(e) for e in events[:-1]]
    for chunk in payloads:
        check(components, "ChatCompletionChunk", chunk)
        assert chunk["id"] == ""
    assert all(c["choices"][0]["delta"]["role"] == "assistant" for c in payloads[:-1])
    assert payloads[-1]["choices"] == [] and payloads[-1]["usage"]["total_tokens"] > 0


def test_completions_match_the_spec(sim_url: str, components: dict[str, Any]) -> None:
    body = httpx.post(sim_url + "/v1/completions", json={"prompt": "hello"}).json()
    check(components, "CompletionFinal", body)
    events = _events(
        httpx.post(sim_url + "/v1/completions", json={"prompt": "hello", "stream": True}).text
    )
    for event in events[:-1]:
        check(components, "Chunk", json.loads(event))
    assert json.loads(events[0])["choices"][0]["finish_reason"] == ""


def test_generate_matches_the_spec(sim_url: str, components: dict[str, Any]) -> None:
    plain = httpx.post(sim_url + "/generate", json={"inputs": "hi"}).json()
    assert set(plain) == {"generated_text"}  # details only when asked (the spec says default true)
    detailed = httpx.post(
        sim_url + "/generate",
        json={"inputs": "hi", "parameters": {"details": True, "adapter_id": ADAPTER}},
    ).json()
    check(components, "GenerateResponse", detailed)
    assert detailed["generated_text"].startswith(f"[{ADAPTER}]")


def test_generate_stream_matches_the_spec(sim_url: str, components: dict[str, Any]) -> None:
    events = _events(
        httpx.post(
            sim_url + "/generate_stream", json={"inputs": "hi", "parameters": {"details": True}}
        ).text
    )
    assert "[DONE]" not in events  # /generate_stream has no terminator
    for event in events:
        check(components, "StreamResponse", json.loads(event))
    last = json.loads(events[-1])
    assert last["token"]["special"] is True and last["details"]["finish_reason"] == "eos_token"


def test_info_and_models_match_the_spec(sim_url: str, components: dict[str, Any]) -> None:
    info = httpx.get(sim_url + "/info").json()
    check(components, "Info", info)
    assert "adapters" not in json.dumps(info)  # TGI does not list loaded adapters
    models = httpx.get(sim_url + "/v1/models").json()
    assert models["object"] == "list"  # the spec says ModelInfo; TGI returns a list of them
    for model in models["data"]:
        check(components, "ModelInfo", model)


def test_errors_match_the_spec(sim_url: str, components: dict[str, Any]) -> None:
    response = httpx.post(
        sim_url + "/v1/chat/completions",
        json={**CHAT, "messages": [{"role": "system", "content": "x"}]},
    )
    assert response.status_code == 422
    check(components, "ErrorResponse", response.json())
    assert response.json()["error_type"] == "template_error"
    overloaded = httpx.post(
        sim_url + "/v1/chat/completions", json=CHAT, headers={"x-sim-fault": "overload"}
    )
    assert overloaded.status_code == 429
    assert overloaded.json() == {"error": "Model is overloaded", "error_type": "overloaded"}


def test_stream_errors_are_http_200_events(sim_url: str) -> None:
    response = httpx.post(
        sim_url + "/v1/chat/completions", json={**CHAT, "stream": True, "top_p": 1.0}
    )
    assert response.status_code == 200
    assert _events(response.text) == [
        '{"error":{"message":"Input validation error: `top_p` must be > 0.0 and < 1.0",'
        '"http_status_code":422}}',
        "[DONE]",
    ]


def test_unknown_adapter_is_silently_answered_by_the_base_model(sim_url: str) -> None:
    response = httpx.post(sim_url + "/v1/chat/completions", json={**CHAT, "model": "typo/sql"})
    assert response.status_code == 200
    body = response.json()
    assert body["choices"][0]["message"]["content"].startswith("[google/gemma-2-2b-it]")
    assert body["model"] == "typo/sql"  # TGI >= 3.0 echoes what was asked


def test_local_adapter_entries_are_served_by_name(sim_url: str) -> None:
    body = httpx.post(sim_url + "/v1/chat/completions", json={**CHAT, "model": "other"}).json()
    assert body["choices"][0]["message"]["content"].startswith("[other]")


def test_axum_rejections_are_plain_text(sim_url: str) -> None:
    response = httpx.post(
        sim_url + "/v1/chat/completions",
        json={**CHAT, "response_format": {"type": "json_schema", "json_schema": {"schema": {}}}},
    )
    assert response.status_code == 422
    assert response.headers["content-type"].startswith("text/plain")
    bad_json = httpx.post(
        sim_url + "/v1/chat/completions", content=b"{", headers={"content-type": "application/json"}
    )
    assert bad_json.status_code == 400


def test_past_max_concurrent_requests_is_429(components: dict[str, Any]) -> None:
    loop = LoopThread()
    sim = Simulator(SimConfig(max_concurrent_requests=1, ttft=30))
    url = loop.run(sim.start())
    try:
        with (
            httpx.Client(timeout=10) as held,
            held.stream("POST", url + "/v1/chat/completions", json={**CHAT, "stream": True}),
        ):
            assert sim.wait_for(lambda seen: len(seen) == 1)
            response = httpx.post(url + "/v1/chat/completions", json=CHAT)
            assert response.status_code == 429
            check(components, "ErrorResponse", response.json())
    finally:
        loop.run(sim.stop())
        loop.close()


def test_a_fault_can_be_set_per_adapter_and_metrics_count_it() -> None:
    loop = LoopThread()
    sim = Simulator(SimConfig(lora_adapters=ADAPTER, faults={ADAPTER: Fault.OVERLOAD}))
    url = loop.run(sim.start())
    try:
        assert httpx.post(url + "/v1/chat/completions", json=CHAT).status_code == 429
        base = httpx.post(url + "/v1/chat/completions", json={**CHAT, "model": "tgi"})
        assert base.status_code == 200
        health = httpx.get(url + "/health")
        assert (health.status_code, health.content) == (200, b"")
        metrics = httpx.get(url + "/metrics").text
        assert "tgi_queue_size 0" in metrics
        assert 'tgi_request_failure{err="overloaded"} 1' in metrics
        assert "tgi_request_success 1" in metrics
    finally:
        loop.run(sim.stop())
        loop.close()
