"""Tracing with OpenTelemetry: one server span per request, a child span per stage, GenAI
semantic-convention attributes, and ``traceparent`` sent to TGI so it continues the trace.

Off unless an OTLP endpoint is configured (``OTEL_EXPORTER_OTLP_ENDPOINT`` or
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``; the exporter reads the other standard ``OTEL_*``
variables itself). Off means no span objects at all: every hook is a ``None`` check.
No span per streamed chunk, and never prompt or completion content.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from gateway import __version__

_PROPAGATOR = TraceContextTextMapPropagator()


def otlp_provider(service_name: str = "lora-gateway") -> TracerProvider:
    """A provider exporting over OTLP/HTTP, configured by the standard variables."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    provider = TracerProvider(
        resource=Resource.create({"service.name": service_name, "service.version": __version__})
    )
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    return provider


class Telemetry:
    """The tracer, or nothing when tracing is off."""

    def __init__(self, provider: TracerProvider | None = None) -> None:
        self.provider = provider
        self.tracer = provider.get_tracer("lora-gateway", __version__) if provider else None

    def start(self, operation: str, headers: Mapping[str, str]) -> RequestTrace | None:
        """A request's trace, continuing the caller's ``traceparent`` if it sent one."""
        if self.tracer is None:
            return None
        parent = _PROPAGATOR.extract(carrier=dict(headers))
        span = self.tracer.start_span(
            operation,
            context=parent,
            kind=SpanKind.SERVER,
            attributes={"gen_ai.operation.name": operation},
        )
        return RequestTrace(self.tracer, span, operation)

    def shutdown(self) -> None:
        """Flush and stop the exporter."""
        if self.provider is not None:
            self.provider.shutdown()


class RequestTrace:
    """The spans of one request."""

    def __init__(self, tracer: trace.Tracer, root: Span, operation: str) -> None:
        self._tracer = tracer
        self.root = root
        self.operation = operation
        self._context: Context = trace.set_span_in_context(root)
        self.upstream: Span | None = None

    @contextmanager
    def stage(self, name: str) -> Iterator[Span]:
        """A child span around one stage of the request path."""
        with self._tracer.start_as_current_span(name, context=self._context) as span:
            yield span

    def start_upstream(self, task: str, pool: str, endpoint_path: str) -> dict[str, str]:
        """Open the span of the call to the backend; returns the headers that carry it.
        The request span is named ``{operation} {task}`` from here on (GenAI convention)."""
        self.root.update_name(f"{self.operation} {task}")
        self.upstream = self._tracer.start_span(
            f"POST {endpoint_path}",
            context=self._context,
            kind=SpanKind.CLIENT,
            attributes={"lgw.pool": pool, "http.request.method": "POST"},
        )
        headers: dict[str, str] = {}
        _PROPAGATOR.inject(headers, context=trace.set_span_in_context(self.upstream))
        return headers

    def end(self, outcome: str, attributes: Mapping[str, str | int | float]) -> None:
        """Close every span with the request's outcome."""
        for span in (self.upstream, self.root):
            if span is None:
                continue
            span.set_attributes(dict(attributes))
            span.set_attribute("lgw.outcome", outcome)
            if outcome not in ("ok", "client_disconnect"):
                span.set_status(Status(StatusCode.ERROR, outcome))
            span.end()
