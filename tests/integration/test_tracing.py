"""Tracing: one request, one span tree, and TGI receives the trace context."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from gateway.accounting.tracing import Telemetry
from tests.integration.harness import LoopThread, Stack, running_stack

SQL = "google-cloud-partnership/gemma-2-2b-it-lora-sql"
PROMPT = "a unique prompt 7f3a9 that must never reach a span"


@pytest.fixture
def traced(loop: LoopThread) -> Iterator[tuple[Stack, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with running_stack(loop, telemetry=Telemetry(provider)) as stack:
        yield stack, exporter


def _chat(stack: Stack, stream: bool, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.post(
        f"{stack.url}/v1/chat/completions",
        timeout=10,
        json={"model": "sql", "stream": stream, "messages": [{"role": "user", "content": PROMPT}]},
        headers={"Authorization": f"Bearer {stack.keys['analytics']}", **(headers or {})},
    )


def _by_name(spans: tuple[ReadableSpan, ...]) -> dict[str, ReadableSpan]:
    return {span.name: span for span in spans}


@pytest.mark.parametrize("stream", [False, True])
def test_one_request_one_span_tree_and_tgi_continues_it(
    traced: tuple[Stack, InMemorySpanExporter], stream: bool
) -> None:
    stack, exporter = traced
    caller_trace = "0af7651916cd43dd8448eb211c80319c"
    response = _chat(stack, stream, {"traceparent": f"00-{caller_trace}-b7ad6b7169203331-01"})
    assert response.status_code == 200
    spans = _by_name(exporter.get_finished_spans())
    assert set(spans) == {
        "chat sql",
        "authenticate",
        "resolve",
        "authorize",
        "admit",
        "POST /v1/chat/completions",
    }
    root = spans["chat sql"]
    assert root.context is not None and root.parent is not None
    assert format(root.context.trace_id, "032x") == caller_trace  # the caller's trace goes on
    for name in ("authenticate", "resolve", "authorize", "admit", "POST /v1/chat/completions"):
        parent = spans[name].parent
        assert parent is not None
        assert parent.span_id == root.context.span_id
    attributes = dict(root.attributes or {})
    assert attributes["gen_ai.operation.name"] == "chat"
    assert attributes["gen_ai.request.model"] == "sql"
    assert attributes["gen_ai.response.model"] == SQL
    assert attributes["lgw.pool"] == "gemma-2-2b-it"
    assert int(str(attributes["gen_ai.usage.output_tokens"])) > 0
    assert attributes["lgw.outcome"] == "ok"
    upstream = spans["POST /v1/chat/completions"]
    assert upstream.context is not None
    sent = stack.sim.seen[-1].headers["traceparent"]
    assert sent == f"00-{caller_trace}-{format(upstream.context.span_id, '016x')}-01"
    for span in spans.values():
        assert PROMPT not in str(span.attributes) and PROMPT not in str(span.events)


def test_a_failed_stream_marks_its_spans_as_errors(
    traced: tuple[Stack, InMemorySpanExporter],
) -> None:
    stack, exporter = traced
    broken = httpx.post(
        f"{stack.url}/v1/chat/completions",
        timeout=10,
        json={
            "model": "sql",
            "stream": True,
            "messages": [{"role": "user", "content": "sim-fault=error-mid-stream"}],
        },
        headers={"Authorization": f"Bearer {stack.keys['analytics']}"},
    )
    assert '"upstream_error"' in broken.text
    root = _by_name(exporter.get_finished_spans())["chat sql"]
    assert root.status.status_code.name == "ERROR"
    assert dict(root.attributes or {})["lgw.outcome"] == "upstream_error"


def test_tracing_is_off_by_default(stack: Stack) -> None:
    assert _chat(stack, False).status_code == 200
    assert "traceparent" not in stack.sim.seen[-1].headers
