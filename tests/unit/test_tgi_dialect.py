"""The TGI dialect as a table: OpenAI request -> TGI body; TGI output -> clean OpenAI."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from gateway.backends import TGIDialect
from gateway.backends.tgi import model_name
from gateway.errors import (
    GatewayError,
    InvalidRequest,
    RequestTooLarge,
    UpstreamError,
    UpstreamOverloaded,
    UpstreamUnavailable,
)
from gateway.registry import Mapping, Pool, Registry, Snapshot, Team
from gateway.routing import Route, pick_target
from gateway.schemas import ChatRequest

DIALECT = TGIDialect()
POOL = Pool(
    name="p",
    base_model="m/base",
    adapters=("m/sql", "local=/data/x@v1"),
    endpoints=("http://h:1",),
    system_role="fold",
)
ROUTE = Route(task="sql", adapter="m/sql", pool=POOL, endpoint="http://h:1")


def _body(**fields: Any) -> dict[str, Any]:
    request = ChatRequest.model_validate(
        {"model": "sql", "messages": [{"role": "user", "content": "hi"}], **fields}
    )
    path, body = DIALECT.translate(request, ROUTE, 64)
    assert path == "/v1/chat/completions"
    return json.loads(body)  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({}, {"max_tokens": 64, "stream": False, "model": "m/sql"}),
        ({"stream": True}, {"stream": True, "stream_options": {"include_usage": True}}),
        ({"top_p": 1.0}, {}),
        ({"top_p": 0.5}, {"top_p": 0.5}),
        ({"top_p": 0.0}, {"temperature": 0.0}),
        ({"presence_penalty": 1.0}, {}),
        ({"stop": "x"}, {"stop": ["x"]}),
        ({"seed": 3, "frequency_penalty": 0.5}, {"seed": 3, "frequency_penalty": 0.5}),
        ({"user": "u-1", "n": 1}, {}),
    ],
)
def test_request_translation(fields: dict[str, Any], expected: dict[str, Any]) -> None:
    body = _body(**fields)
    assert {k: body[k] for k in expected} == expected
    assert "presence_penalty" not in body and "user" not in body and "n" not in body
    if "top_p" not in expected:
        assert "top_p" not in body


def test_the_base_model_is_asked_as_tgi() -> None:
    route = Route(task="chat", adapter="m/base", pool=POOL, endpoint="http://h:1")
    assert model_name(route) == "tgi"
    assert model_name(ROUTE) == "m/sql"


def test_system_folding_keeps_content_parts() -> None:
    body = _body(
        messages=[
            {"role": "system", "content": "rules"},
            {"role": "user", "content": [{"type": "text", "text": "q"}]},
        ]
    )
    assert body["messages"] == [
        {
            "role": "user",
            "content": [{"type": "text", "text": "rules\n\n"}, {"type": "text", "text": "q"}],
        }
    ]


def test_tool_call_response_is_cleaned() -> None:
    raw = json.dumps(
        {
            "object": "chat.completion",
            "id": "",
            "created": 1,
            "model": "m/sql",
            "system_fingerprint": "x",
            "choices": [
                {
                    "index": 0,
                    "logprobs": None,
                    "finish_reason": "stop",
                    "message": {
                        "role": "assistant",
                        "tool_calls": [
                            {
                                "id": "0",
                                "type": "function",
                                "function": {"description": None, "name": "f", "arguments": "{}"},
                            }
                        ],
                    },
                }
            ],
            "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3},
        }
    )
    body, usage = DIALECT.response(raw.encode(), "chatcmpl-1", "sql", None)
    choice = json.loads(body)["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    assert "description" not in choice["message"]["tool_calls"][0]["function"]
    assert usage is not None and usage.completion_tokens == 2


def test_chunk_rewriting_touches_only_id_and_model() -> None:
    rewriter = DIALECT.rewriter("chatcmpl-1", "sql", wants_usage=False, stop=None)
    chunk = (
        b'{"object":"chat.completion.chunk","id":"","created":1,"model":"m/sql",'
        b'"choices":[{"index":0,"delta":{"role":"assistant","content":"\\"id\\":\\"\\""},'
        b'"logprobs":null,"finish_reason":null}],"usage":null}'
    )
    out = rewriter.rewrite(chunk)
    assert out == chunk.replace(b'"id":""', b'"id":"chatcmpl-1"', 1).replace(
        b'"model":"m/sql"', b'"model":"sql"'
    )
    assert json.loads(out or b"")["choices"][0]["delta"]["content"] == '"id":""'


def test_the_usage_chunk_is_read_but_dropped_unless_asked() -> None:
    rewriter = DIALECT.rewriter("c", "sql", wants_usage=False, stop=None)
    usage_chunk = (
        b'{"object":"chat.completion.chunk","id":"","created":1,"model":"m/sql",'
        b'"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":4,'
        b'"total_tokens":7}}'
    )
    assert rewriter.rewrite(usage_chunk) is None
    assert rewriter.usage is not None and rewriter.usage.completion_tokens == 4


def test_v2_style_usage_on_the_final_content_chunk_is_removed_unless_asked() -> None:
    rewriter = DIALECT.rewriter("c", "sql", wants_usage=False, stop=None)
    final = (
        b'{"object":"chat.completion.chunk","id":"","created":1,"model":"m/base",'
        b'"choices":[{"index":0,"delta":{"role":"assistant","content":""},'
        b'"finish_reason":"stop_sequence"}],"usage":{"prompt_tokens":1,'
        b'"completion_tokens":1,"total_tokens":2}}'
    )
    out = json.loads(rewriter.rewrite(final) or b"")
    assert "usage" not in out and out["choices"][0]["finish_reason"] == "stop"
    assert out["model"] == "sql"


@pytest.mark.parametrize(
    ("status", "body", "error"),
    [
        (422, b'{"error":"Input validation error: bad","error_type":"validation"}', InvalidRequest),
        (422, b"Failed to deserialize the JSON body", InvalidRequest),
        (413, b"", RequestTooLarge),
        (429, b'{"error":"Model is overloaded","error_type":"overloaded"}', UpstreamOverloaded),
        (
            424,
            b'{"error":"Request failed during generation: x","error_type":"generation"}',
            UpstreamError,
        ),
        (500, b"<html>oops</html>", UpstreamError),
        (503, b"", UpstreamUnavailable),
        (401, b"", UpstreamError),
    ],
)
def test_http_error_mapping(status: int, body: bytes, error: type[GatewayError]) -> None:
    mapped = DIALECT.http_error(status, body)
    assert type(mapped) is error
    assert "<html>" not in mapped.message


@pytest.mark.parametrize(
    ("payload", "error"),
    [
        (b'{"error":{"message":"Model is overloaded","http_status_code":422}}', UpstreamOverloaded),
        (
            b'{"error":{"message":"Input validation error: x","http_status_code":422}}',
            InvalidRequest,
        ),
        (
            b'{"error":"Request failed during generation: x","error_type":"generation"}',
            UpstreamError,
        ),
        (b'{"error":', UpstreamError),
    ],
)
def test_stream_error_events_are_classified(payload: bytes, error: type[GatewayError]) -> None:
    assert type(DIALECT.event_error(payload)) is error


def test_weighted_targets_follow_their_weights() -> None:
    mapping = Mapping.model_validate(
        {"task": "t", "targets": [{"adapter": "a/x", "weight": 9}, {"adapter": "a/y", "weight": 1}]}
    )
    rng = random.Random(7)
    picks = [pick_target(mapping.choices, rng).adapter for _ in range(10_000)]
    assert abs(picks.count("a/x") / 10_000 - 0.9) < 0.01


def test_a_team_mapping_overrides_the_org_default() -> None:
    registry = Registry(
        teams=(Team(name="t"),),
        pools=(POOL,),
        mappings=(
            Mapping(task="chat", adapter="m/base"),
            Mapping(team="t", task="chat", adapter="m/sql"),
        ),
    )
    snapshot = Snapshot(registry)
    own, default = snapshot.mapping("t", "chat"), snapshot.mapping("u", "chat")
    assert own is not None and own.adapter == "m/sql"
    assert default is not None and default.adapter == "m/base"


def test_non_compact_upstream_json_is_rewritten_and_its_end_detected() -> None:
    """A proxy or another engine may put spaces around ':'; TGI does not."""
    rewriter = DIALECT.rewriter("chatcmpl-1", "sql", False, ["END"], False)
    chunk = rewriter.rewrite(
        b'{"id": "", "model": "m/sql", "choices": [{"index": 0, '
        b'"delta": {"content": "hi"}, "finish_reason": null}]}'
    )
    assert chunk is not None
    assert json.loads(chunk)["id"] == "chatcmpl-1" and json.loads(chunk)["model"] == "sql"
    final = rewriter.rewrite(
        b'{"id": "", "model": "m/sql", "choices": [{"index": 0, "delta": {"content": "END"}, '
        b'"finish_reason": "stop_sequence"}], "usage": {"prompt_tokens": 3, '
        b'"completion_tokens": 2, "total_tokens": 5}}'
    )
    assert final is not None
    choice = json.loads(final)["choices"][0]
    assert (choice["finish_reason"], choice["delta"]["content"]) == ("stop", "")
    assert "usage" not in json.loads(final)  # not asked for: dropped, yet counted
    assert rewriter.usage is not None and rewriter.usage.completion_tokens == 2
