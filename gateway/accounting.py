"""Stage 6, account: one record per request, on every ending, exactly once.

A request is counted when it ends however it ends (answered, refused, failed upstream,
cut mid-stream, abandoned by its client), with the labels it had earned by then: the
team after authentication, task, adapter and pool after routing (``other``/``none``
before). Tokens and cost come from the backend's usage when it reported one, else
from the same estimate that settles the rate limits. The same ending closes the trace
and writes the request log line the team's logging policy allows.
"""

from __future__ import annotations

import asyncio
import time
from contextlib import AbstractContextManager, nullcontext

from gateway import requestlog
from gateway.errors import ClientDisconnected, GatewayError
from gateway.metrics import NONE, OTHER, Metrics
from gateway.registry import Price
from gateway.routing import Route
from gateway.telemetry import RequestTrace
from gateway.usage import Usage


def outcome_of(exc: BaseException) -> str:
    """The ``code`` label of a request that ended with ``exc``."""
    if isinstance(exc, ClientDisconnected | asyncio.CancelledError):
        return "client_disconnect"
    if isinstance(exc, GatewayError):
        return exc.code
    return "internal_error"


class Accounting:
    """What one request did, recorded into metrics, trace and log when it ends."""

    __slots__ = (
        "_done",
        "_first_token",
        "_metrics",
        "_price",
        "_started",
        "_trace",
        "_usage",
        "adapter",
        "completion",
        "key_id",
        "log_policy",
        "pool",
        "prompt",
        "request_id",
        "stream",
        "task",
        "team",
    )

    def __init__(
        self,
        metrics: Metrics,
        usage: Usage,
        trace: RequestTrace | None = None,
        request_id: str = "",
    ) -> None:
        self._metrics, self._usage, self._trace = metrics, usage, trace
        self._started = time.perf_counter()
        self._first_token: float | None = None
        self._done = False
        self._price = Price()
        self.team, self.task, self.adapter, self.pool = OTHER, OTHER, NONE, NONE
        self.request_id, self.key_id, self.stream = request_id, "", False
        self.log_policy = "metadata"
        self.prompt: str | None = None
        """Set only when the logging policy keeps content."""
        self.completion: list[str] | None = None
        """Collected only when the logging policy keeps content."""

    def authenticated(self, team: str, key_id: str, log_policy: str) -> None:
        """The caller is known: its team's labels and logging policy apply from now on."""
        self.team, self.key_id, self.log_policy = team, key_id, log_policy
        if requestlog.wants_content(log_policy):
            self.completion = []

    def routed(self, route: Route, price: Price) -> None:
        """The request has a task, an adapter and a pool: it is now in flight there."""
        self.task, self.adapter, self.pool, self._price = (
            route.task,
            route.adapter,
            route.pool.name,
            price,
        )
        self._metrics.inflight.labels(self.pool).inc()

    def stage(self, name: str) -> AbstractContextManager[object]:
        """A child span around one stage (nothing when tracing is off)."""
        return self._trace.stage(name) if self._trace is not None else nullcontext()

    def upstream_headers(self, path: str) -> dict[str, str] | None:
        """Start the backend call's span; the headers that carry its context upstream."""
        if self._trace is None:
            return None
        return self._trace.start_upstream(self.task, self.pool, path)

    def first_token(self) -> None:
        """The first streamed token reaches the client now."""
        if self._first_token is None:
            self._first_token = time.perf_counter()

    def finish(self, code: str, input_tokens: int = 0, output_tokens: int = 0) -> None:
        """Record the request (later calls do nothing)."""
        if self._done:
            return
        self._done = True
        now = time.perf_counter()
        self._metrics.requests.labels(self.team, self.task, self.adapter, self.pool, code).inc()
        if self._trace is not None:
            self._trace.end(code, self._attributes(input_tokens, output_tokens))
        if self.pool != NONE:
            self._observe(now, code, input_tokens, output_tokens)
        self._log(now, code, input_tokens, output_tokens)

    def _attributes(self, input_tokens: int, output_tokens: int) -> dict[str, str | int]:
        return {
            "gen_ai.request.model": self.task,
            "gen_ai.response.model": self.adapter,
            "gen_ai.usage.input_tokens": input_tokens,
            "gen_ai.usage.output_tokens": output_tokens,
            "lgw.team": self.team,
            "lgw.adapter": self.adapter,
            "lgw.pool": self.pool,
        }

    def _observe(self, now: float, code: str, input_tokens: int, output_tokens: int) -> None:
        m = self._metrics
        m.inflight.labels(self.pool).dec()
        m.duration.labels(self.adapter).observe(now - self._started)
        if code.startswith("upstream_"):
            m.upstream_errors.labels(self.pool, code).inc()
        self._tokens(input_tokens, output_tokens)
        if self._first_token is not None:
            m.ttft.labels(self.adapter).observe(self._first_token - self._started)
            if output_tokens > 1:
                m.tpot.labels(self.adapter).observe((now - self._first_token) / (output_tokens - 1))

    def _tokens(self, input_tokens: int, output_tokens: int) -> None:
        m = self._metrics
        if input_tokens:
            m.tokens.labels(self.team, self.adapter, "input").inc(input_tokens)
        if output_tokens:
            m.tokens.labels(self.team, self.adapter, "output").inc(output_tokens)
        if input_tokens or output_tokens:
            cost = self._price.cost(input_tokens, output_tokens)
            m.pool_tokens.labels(self.pool).inc(input_tokens + output_tokens)
            m.cost.labels(self.team, self.adapter).inc(cost)
            self._usage.add(self.team, self.adapter, input_tokens, output_tokens, cost)

    def _log(self, now: float, code: str, input_tokens: int, output_tokens: int) -> None:
        record = {
            "request_id": self.request_id,
            "team": self.team,
            "key_id": self.key_id,
            "task": self.task,
            "adapter": self.adapter,
            "pool": self.pool,
            "outcome": code,
            "stream": self.stream,
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
            "duration_ms": round((now - self._started) * 1000, 2),
        }
        if self._first_token is not None:
            record["ttft_ms"] = round((self._first_token - self._started) * 1000, 2)
        completion = "".join(self.completion) if self.completion is not None else None
        requestlog.emit(self.log_policy, record, self.prompt, completion)
