"""Stage 6, account: one record per request, finished once, on every ending.

A request is counted when it ends however it ends (answered, refused, failed upstream,
cut mid-stream, abandoned by its client), with the labels it had earned by then: the
team after authentication, task, adapter and pool after routing (``other``/``none``
before). Tokens come from the backend's usage when it reported one; otherwise from the
prompt estimate plus one token per chunk relayed (TGI streams one token per chunk), or
nothing at all when the backend generated nothing. The same numbers settle the rate
limits, price the request and fill the usage tally; the same ending closes the trace
and writes the request log line the team's logging policy allows.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from contextlib import AbstractContextManager, nullcontext

from gateway.accounting import requestlog
from gateway.accounting.tracing import RequestTrace, Telemetry
from gateway.accounting.usage import UsageTally
from gateway.auth import Principal
from gateway.errors import (
    ClientDisconnected,
    GatewayError,
    InvalidRequest,
    UpstreamOverloaded,
    UpstreamUnavailable,
)
from gateway.metrics import NONE, OTHER, Metrics
from gateway.policy import Decision
from gateway.ratelimit import Grant, Limiter
from gateway.registry import Price
from gateway.routing import Route
from gateway.schemas import OpenAIRequest
from gateway.upstream import Ending

_NO_PRICE = Price()  # frozen: one for every record, not a model built per request
# Failures that happen before the backend generated anything: nothing to pay for.
_NOTHING_GENERATED = (InvalidRequest, UpstreamUnavailable, UpstreamOverloaded)


def outcome_of(exc: BaseException) -> str:
    """The ``code`` label of a request that ended with ``exc``."""
    if isinstance(exc, ClientDisconnected | asyncio.CancelledError):
        return "client_disconnect"
    if isinstance(exc, GatewayError):
        return exc.code
    return "internal_error"


class Accounting:
    """Where records go: the metrics, the usage tally, tracing and the limiter to settle."""

    def __init__(
        self, metrics: Metrics, usage: UsageTally, telemetry: Telemetry, limiter: Limiter
    ) -> None:
        self.metrics, self.usage, self.telemetry, self.limiter = metrics, usage, telemetry, limiter

    def open(self, operation: str, headers: Mapping[str, str], request_id: str) -> Record:
        """The record of a new request (its trace continues the caller's, if any)."""
        trace = self.telemetry.start(operation, headers)
        return Record(self.metrics, self.usage, self.limiter, trace, request_id)

    async def start(self) -> None:
        """Begin flushing the usage tally."""
        self.usage.start()

    async def close(self) -> None:
        """Flush the usage tally and the traces."""
        await self.usage.close()
        self.telemetry.shutdown()


def tokens_used(ending: Ending, prompt_estimate: int) -> tuple[int, int]:
    """(input, output) tokens of an ending: the backend's count, else the prompt
    estimate and one token per chunk relayed."""
    if ending.usage is not None:
        return ending.usage.prompt_tokens, ending.usage.completion_tokens
    return prompt_estimate, ending.relayed


class Record:
    """What one request did, written to metrics, trace, log, usage and limits at its end."""

    __slots__ = (
        "_done",
        "_estimate",
        "_first_token",
        "_grant",
        "_limiter",
        "_metrics",
        "_price",
        "_started",
        "_trace",
        "_usage",
        "adapter",
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
        usage: UsageTally,
        limiter: Limiter | None = None,
        trace: RequestTrace | None = None,
        request_id: str = "",
    ) -> None:
        self._metrics, self._usage, self._limiter, self._trace = metrics, usage, limiter, trace
        self._started = time.perf_counter()
        self._first_token: float | None = None
        self._done = False
        self._price = _NO_PRICE  # until routed
        self._grant: Grant | None = None
        self._estimate = 0
        self.team, self.task, self.adapter, self.pool = OTHER, OTHER, NONE, NONE
        self.request_id, self.key_id, self.stream = request_id, "", False
        self.log_policy = "metadata"
        self.prompt: str | None = None
        """Set only when the logging policy keeps content."""

    # -- what the request earned, stage by stage ------------------------------------------
    def stage(self, name: str) -> AbstractContextManager[object]:
        """A child span around one stage (nothing when tracing is off)."""
        return self._trace.stage(name) if self._trace is not None else nullcontext()

    def authenticated(self, principal: Principal) -> Principal:
        """The caller is known: its team's labels and logging policy apply from now on."""
        self.team, self.key_id = principal.team.name, principal.key_id
        self.log_policy = principal.team.policy.logging
        return principal

    def parsed(self, request: OpenAIRequest) -> OpenAIRequest:
        """The request is read: whether it streams, its prompt estimate, and its prompt
        if the team's logs keep content."""
        self.stream, self._estimate = request.stream, request.prompt_tokens_estimate
        if self.keeps_content:
            self.prompt = request.prompt_text
        return request

    @property
    def keeps_content(self) -> bool:
        """Whether the team's logging policy keeps prompts and completions."""
        return requestlog.wants_content(self.log_policy)

    def decided(self, decision: Decision) -> Decision:
        """Count a refusal, or what shadow mode would have refused."""
        if decision.reason != "ok":
            m = self._metrics
            counter = m.policy_would_deny if decision.shadowed else m.policy_denials
            counter.labels(self.team, decision.reason).inc()
        return decision

    def routed(self, route: Route) -> Route:
        """The request has a task, an adapter and a pool: it is now in flight there."""
        self.task, self.adapter, self.pool = route.task, route.adapter, route.pool.name
        self._price = route.price
        self._metrics.inflight.labels(self.pool).inc()
        return route

    def admitted(self, grant: Grant) -> Grant:
        """The limits hold ``grant`` until this record settles it."""
        self._grant = grant
        return grant

    def upstream_started(self, path: str) -> dict[str, str] | None:
        """Start the backend call's span; the headers that carry its context upstream."""
        if self._trace is None:
            return None
        return self._trace.start_upstream(self.task, self.pool, path)

    # -- endings ----------------------------------------------------------------------
    def ended(self, ending: Ending) -> None:
        """The backend's part is over (answered, or a stream ended or was cut)."""
        self._first_token = ending.first_token_at
        self._finish(ending.outcome, *tokens_used(ending, self._estimate), ending.text)

    def failed(self, exc: BaseException) -> None:
        """The request ended with ``exc``: the prompt is paid for only when the request
        was admitted and the backend may have generated."""
        generated = self._grant is not None and not isinstance(exc, _NOTHING_GENERATED)
        self._finish(outcome_of(exc), self._estimate if generated else 0, 0, None)

    def _finish(self, code: str, input_tokens: int, output_tokens: int, text: str | None) -> None:
        """The one place a request ends: settle, count, trace, log (later calls do nothing)."""
        if self._done:
            return
        self._done = True
        if self._grant is not None and self._limiter is not None:
            self._limiter.settle_soon(self._grant, input_tokens + output_tokens)
        now = time.perf_counter()
        self._metrics.requests.labels(self.team, self.task, self.adapter, self.pool, code).inc()
        if self._trace is not None:
            self._trace.end(code, self._attributes(input_tokens, output_tokens))
        if self.pool != NONE:
            self._observe(now, code, input_tokens, output_tokens)
        self._log(now, code, input_tokens, output_tokens, text)

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

    def _log(
        self, now: float, code: str, input_tokens: int, output_tokens: int, text: str | None
    ) -> None:
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
        requestlog.emit(self.log_policy, record, self.prompt, text)
