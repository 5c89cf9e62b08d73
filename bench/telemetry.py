"""What the account stage costs per request: metrics alone, and metrics with tracing.

    python bench/telemetry.py [--requests 20000]

Times the work one request adds in-process (no network): creating its record, the
stage spans, and recording it at the end, with tracing off (the default) and on (spans
exported to a no-op exporter through a batch processor, as in production).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from gateway.accounting import Accounting, Telemetry, UsageTally
from gateway.auth import Principal
from gateway.backends import Usage
from gateway.metrics import Metrics
from gateway.ratelimit import MemoryLimiter
from gateway.registry import Pool, Price, Team
from gateway.routing import Route
from gateway.upstream import Ending

POOL = Pool(name="p", base_model="m/b", endpoints=("http://h:1",))
ROUTE = Route(
    "sql", "org/sql", POOL, "http://h:1", Price(input_per_million=1, output_per_million=2)
)
CALLER = Principal(Team(name="analytics"), "aaaaaaaaaaaa")
HEADERS = {"authorization": "Bearer x", "content-type": "application/json"}


class Discard(SpanExporter):
    """Accepts spans and drops them."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def one_request(accounting: Accounting) -> None:
    record = accounting.open("chat", HEADERS, "request-id")
    with record.stage("authenticate"):
        record.authenticated(CALLER)
    with record.stage("resolve"):
        pass
    record.routed(ROUTE)
    with record.stage("admit"):
        pass
    record.upstream_started("/v1/chat/completions")
    record.ended(Ending("ok", Usage(120, 20), 20, time.perf_counter()))


def measure(label: str, telemetry: Telemetry, requests: int) -> float:
    metrics = Metrics()
    accounting = Accounting(metrics, UsageTally(), telemetry, MemoryLimiter(metrics))
    for _ in range(1000):  # warm up
        one_request(accounting)
    started = time.perf_counter()
    for _ in range(requests):
        one_request(accounting)
    micros = (time.perf_counter() - started) / requests * 1e6
    print(f"{label}: {micros:.1f} us per request")
    return micros


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=20000)
    args = parser.parse_args()
    off = measure("metrics, tracing off", Telemetry(), args.requests)
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(Discard()))
    on = measure("metrics, tracing on ", Telemetry(provider), args.requests)
    print(f"tracing adds {on - off:.1f} us per request")
    provider.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
