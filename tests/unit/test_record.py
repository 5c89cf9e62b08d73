"""Stage 6, account: a request's record, finished exactly once on every ending, settles
the limits, counts the metrics, fills the usage tally and writes the request log line
with the tokens it earned: the backend's usage, else the prompt estimate plus one token
per chunk relayed, else nothing when the backend generated nothing."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

import pytest

from gateway.accounting import requestlog
from gateway.accounting.record import Record, outcome_of, tokens_used
from gateway.accounting.usage import UsageRow, UsageTally
from gateway.auth import Principal
from gateway.backends import Usage
from gateway.errors import (
    AuthenticationFailed,
    ClientDisconnected,
    GatewayError,
    InvalidRequest,
    ModelNotFound,
    PermissionDenied,
    RateLimited,
    RequestTooLarge,
    UpstreamError,
    UpstreamOverloaded,
    UpstreamRefused,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from gateway.metrics import Metrics
from gateway.policy import Decision
from gateway.ratelimit import Grant, MemoryLimiter, limiter_key
from gateway.registry import Limits, Pool, Price, Team
from gateway.registry.models import Policy
from gateway.routing import Route
from gateway.schemas import CompletionRequest
from gateway.upstream import Ending

TEAM = "a"
POOL = Pool(name="p", base_model="m/base", adapters=("org/x",), endpoints=("http://p:1",))
PRICE = Price(input_per_million=0.5, output_per_million=1.5)
ROUTE = Route("chat", "org/x", POOL, price=PRICE)
REQUEST = CompletionRequest(model="chat", prompt="x" * 36)
ESTIMATE = REQUEST.prompt_tokens_estimate
RESERVED = 100
"""Tokens admission reserves (prompt estimate + max_tokens, in the real path)."""
TPM = limiter_key(TEAM, "team", "tpm")
CONCURRENCY = limiter_key(TEAM, "team", "conc")

Stage = Literal["start", "authenticated", "routed", "admitted"]
"""How far the request got before it ended."""
STAGES: tuple[Stage, ...] = ("start", "authenticated", "routed", "admitted")
LABELS: dict[Stage, tuple[str, str, str, str]] = {
    "start": ("other", "other", "none", "none"),
    "authenticated": (TEAM, "other", "none", "none"),
    "routed": (TEAM, "chat", "org/x", "p"),
    "admitted": (TEAM, "chat", "org/x", "p"),
}


def _principal(logging_policy: str = "metadata") -> Principal:
    policy = Policy.model_validate({"logging": logging_policy})
    team = Team(name=TEAM, limits=Limits(tpm=1000, concurrency=2), policy=policy)
    return Principal(team=team, key_id="aaaaaaaaaaaa")


@dataclass
class Request:
    """One request's record and everything it writes to."""

    metrics: Metrics
    usage: UsageTally
    limiter: MemoryLimiter
    record: Record
    grant: Grant | None = None

    def sample(self, name: str, **labels: str) -> float:
        return self.metrics.registry.get_sample_value(name, labels) or 0.0

    def total(self, name: str) -> float:
        """A sample summed over every label set."""
        return sum(
            s.value for m in self.metrics.registry.collect() for s in m.samples if s.name == name
        )

    async def usage_rows(self) -> list[UsageRow]:
        await self.usage.flush()
        return await self.usage.totals([TEAM], None, datetime.now(UTC) - timedelta(hours=1))


async def _reach(stage: Stage, logging_policy: str = "metadata") -> Request:
    metrics = Metrics()
    limiter = MemoryLimiter(metrics)
    usage = UsageTally()
    request = Request(metrics, usage, limiter, Record(metrics, usage, limiter, None, "r"))
    record = request.record
    if STAGES.index(stage) >= STAGES.index("authenticated"):
        record.authenticated(_principal(logging_policy))
        record.parsed(REQUEST)
    if STAGES.index(stage) >= STAGES.index("routed"):
        record.routed(ROUTE)
    if stage == "admitted":
        request.grant = record.admitted(await limiter.admit(_principal(), RESERVED))
    return request


@pytest.fixture
def request_lines() -> Iterator[list[str]]:
    """The request log lines written during the test."""
    lines: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    handler, level = Keep(), requestlog.log.level
    requestlog.log.addHandler(handler)
    requestlog.log.setLevel(logging.INFO)
    yield lines
    requestlog.log.removeHandler(handler)
    requestlog.log.setLevel(level)


# -- pure parts ---------------------------------------------------------------------------

OUTCOMES = [
    pytest.param(ClientDisconnected(), "client_disconnect", id="client-disconnected"),
    pytest.param(asyncio.CancelledError(), "client_disconnect", id="cancelled"),
    pytest.param(UpstreamTimeout(), "upstream_timeout", id="gateway-error-code"),
    pytest.param(UpstreamRefused(), "upstream_unavailable", id="refused-is-unavailable"),
    pytest.param(RateLimited(), "rate_limit_exceeded", id="rate-limited"),
    pytest.param(GatewayError(), "internal_error", id="base-gateway-error"),
    pytest.param(RuntimeError("boom"), "internal_error", id="a-bug"),
    pytest.param(KeyboardInterrupt(), "internal_error", id="not-an-exception"),
]


@pytest.mark.parametrize(("exc", "code"), OUTCOMES)
def test_the_outcome_label_of_an_exception(exc: BaseException, code: str) -> None:
    assert outcome_of(exc) == code


TOKENS = [
    pytest.param(Ending("ok", Usage(7, 5), relayed=9), (7, 5), id="usage-wins-over-chunks"),
    pytest.param(Ending("ok", Usage(0, 0), relayed=2), (0, 0), id="usage-of-zero-is-kept"),
    pytest.param(Ending("client_disconnect", None, relayed=3), (ESTIMATE, 3), id="no-usage"),
    pytest.param(Ending("upstream_error"), (ESTIMATE, 0), id="nothing-relayed"),
]


@pytest.mark.parametrize(("ending", "used"), TOKENS)
def test_tokens_used_are_the_backends_else_estimate_and_chunks(
    ending: Ending, used: tuple[int, int]
) -> None:
    assert tokens_used(ending, ESTIMATE) == used


# -- every ending, and what it leaves behind ----------------------------------------------

ENDINGS = [
    # stage reached, how it ended, outcome code, (input, output) tokens paid
    pytest.param("admitted", Ending("ok", Usage(7, 5), relayed=9), "ok", (7, 5), id="usage"),
    pytest.param(
        "admitted",
        Ending("client_disconnect", relayed=3),
        "client_disconnect",
        (ESTIMATE, 3),
        id="cut-stream-without-usage",
    ),
    pytest.param(
        "admitted",
        Ending("upstream_error", relayed=0),
        "upstream_error",
        (ESTIMATE, 0),
        id="failed-stream-without-chunks",
    ),
    pytest.param(
        "start", AuthenticationFailed(), "invalid_api_key", (0, 0), id="refused-unauthenticated"
    ),
    pytest.param("authenticated", ModelNotFound(), "model_not_found", (0, 0), id="unknown-task"),
    pytest.param(
        "authenticated", PermissionDenied(), "permission_denied", (0, 0), id="policy-refusal"
    ),
    pytest.param("routed", RateLimited(), "rate_limit_exceeded", (0, 0), id="rate-limited"),
    pytest.param(
        "routed", UpstreamError(), "upstream_error", (0, 0), id="upstream-error-before-admission"
    ),
    pytest.param(
        "routed", asyncio.CancelledError(), "client_disconnect", (0, 0), id="left-before-admission"
    ),
    pytest.param("admitted", InvalidRequest(), "invalid_request", (0, 0), id="backend-400"),
    pytest.param("admitted", RequestTooLarge(), "request_too_large", (0, 0), id="backend-413"),
    pytest.param(
        "admitted", UpstreamUnavailable(), "upstream_unavailable", (0, 0), id="unreachable"
    ),
    pytest.param("admitted", UpstreamRefused(), "upstream_unavailable", (0, 0), id="refused"),
    pytest.param("admitted", UpstreamOverloaded(), "upstream_overloaded", (0, 0), id="overloaded"),
    pytest.param(
        "admitted", UpstreamError(), "upstream_error", (ESTIMATE, 0), id="generation-error"
    ),
    pytest.param(
        "admitted", UpstreamTimeout(), "upstream_timeout", (ESTIMATE, 0), id="upstream-timeout"
    ),
    pytest.param(
        "admitted",
        ClientDisconnected(),
        "client_disconnect",
        (ESTIMATE, 0),
        id="client-left-while-generating",
    ),
    pytest.param(
        "admitted",
        asyncio.CancelledError(),
        "client_disconnect",
        (ESTIMATE, 0),
        id="cancelled-while-generating",
    ),
    pytest.param(
        "admitted", RuntimeError("boom"), "internal_error", (ESTIMATE, 0), id="gateway-bug"
    ),
]


@pytest.mark.parametrize(("stage", "end", "code", "paid"), ENDINGS)
def test_every_ending_is_counted_once_with_the_tokens_it_earned(
    stage: Stage, end: Ending | BaseException, code: str, paid: tuple[int, int]
) -> None:
    async def scenario() -> tuple[Request, list[UsageRow]]:
        request = await _reach(stage)
        if isinstance(end, Ending):
            request.record.ended(end)
        else:
            request.record.failed(end)
        return request, await request.usage_rows()

    request, rows = asyncio.run(scenario())
    (team, task, adapter, pool), (tokens_in, tokens_out) = LABELS[stage], paid
    labels = {"team": team, "task": task, "adapter": adapter, "pool": pool, "code": code}
    assert request.sample("lgw_requests_total", **labels) == 1
    assert request.total("lgw_requests_total") == 1
    assert request.sample("lgw_tokens_total", team=team, adapter=adapter, direction="input") == (
        tokens_in
    )
    assert request.sample("lgw_tokens_total", team=team, adapter=adapter, direction="output") == (
        tokens_out
    )
    cost = PRICE.cost(tokens_in, tokens_out)
    assert request.sample("lgw_cost_total", team=team, adapter=adapter) == pytest.approx(cost)
    assert request.total("lgw_pool_tokens_total") == tokens_in + tokens_out
    expected_rows = [UsageRow(team, adapter, tokens_in, tokens_out, round(cost, 9))]
    assert rows == (expected_rows if tokens_in + tokens_out else [])
    # the limits settle to what was paid; nothing stays in flight anywhere
    assert request.limiter.used(TPM) == (tokens_in + tokens_out if request.grant else 0)
    assert request.limiter.in_flight(CONCURRENCY) == 0
    assert request.total("lgw_inflight_requests") == 0
    upstream_errors = int(pool != "none" and code.startswith("upstream_"))
    assert request.total("lgw_upstream_errors_total") == upstream_errors


def test_an_admitted_request_holds_its_reservation_until_it_ends() -> None:
    async def scenario() -> tuple[float, int, float, float, int]:
        request = await _reach("admitted")
        held = request.limiter.used(TPM), request.limiter.in_flight(CONCURRENCY)
        inflight = request.sample("lgw_inflight_requests", pool="p")
        request.record.ended(Ending("ok", Usage(20, 30)))
        return *held, inflight, request.limiter.used(TPM), request.limiter.in_flight(CONCURRENCY)

    assert asyncio.run(scenario()) == (RESERVED, 1, 1, 50, 0)


# -- exactly once -------------------------------------------------------------------------

SUCCESS = Ending("ok", Usage(7, 5))
ONCE = [
    # first ending, a later one that must change nothing, (code, tokens) of the first
    pytest.param(SUCCESS, UpstreamError(), ("ok", 12), id="ended-then-failed"),
    pytest.param(SUCCESS, Ending("ok", Usage(70, 50)), ("ok", 12), id="ended-twice"),
    pytest.param(UpstreamOverloaded(), SUCCESS, ("upstream_overloaded", 0), id="failed-then-ended"),
    pytest.param(
        UpstreamTimeout(),
        asyncio.CancelledError(),
        ("upstream_timeout", ESTIMATE),
        id="failed-then-cancelled",
    ),
]


@pytest.mark.parametrize(("first", "later", "counted"), ONCE)
def test_a_request_is_finished_exactly_once(
    first: Ending | BaseException, later: Ending | BaseException, counted: tuple[str, int]
) -> None:
    def finish(record: Record, end: Ending | BaseException) -> None:
        if isinstance(end, Ending):
            record.ended(end)
        else:
            record.failed(end)

    async def scenario() -> tuple[Request, list[UsageRow]]:
        request = await _reach("admitted")
        finish(request.record, first)
        finish(request.record, later)
        return request, await request.usage_rows()

    request, rows = asyncio.run(scenario())
    code, tokens = counted
    labels = {"team": TEAM, "task": "chat", "adapter": "org/x", "pool": "p", "code": code}
    assert request.sample("lgw_requests_total", **labels) == 1
    assert request.total("lgw_requests_total") == 1
    assert request.total("lgw_tokens_total") == tokens
    assert sum(r.input_tokens + r.output_tokens for r in rows) == tokens
    assert request.limiter.used(TPM) == tokens
    assert request.total("lgw_inflight_requests") == 0
    assert request.total("lgw_request_duration_seconds_count") == 1


# -- policy decisions ----------------------------------------------------------------------

DECISIONS = [
    # decision, denials counted, would-deny counted
    pytest.param(Decision(True, "ok", (POOL,)), 0, 0, id="allowed"),
    pytest.param(Decision(False, "adapter_not_granted", ()), 1, 0, id="denied"),
    pytest.param(Decision(True, "max_tokens_cap", (POOL,), shadowed=True), 0, 1, id="shadowed"),
]


@pytest.mark.parametrize(("decision", "denied", "would_deny"), DECISIONS)
def test_decided_counts_denials_apart_from_shadow_would_deny(
    decision: Decision, denied: int, would_deny: int
) -> None:
    request = asyncio.run(_reach("authenticated"))
    assert request.record.decided(decision) is decision
    reason = {"team": TEAM, "reason": decision.reason}
    assert request.sample("lgw_policy_denials_total", **reason) == denied
    assert request.sample("lgw_policy_would_deny_total", **reason) == would_deny
    assert request.total("lgw_policy_denials_total") == denied
    assert request.total("lgw_policy_would_deny_total") == would_deny


# -- content and the request log -----------------------------------------------------------

LOGGING = [
    # the team's logging policy, keeps content, a request log line is written
    pytest.param("none", False, False, id="none"),
    pytest.param("metadata", False, True, id="metadata"),
    pytest.param("redacted", True, True, id="redacted"),
    pytest.param("full", True, True, id="full"),
]


@pytest.mark.parametrize(("policy", "keeps", "logged"), LOGGING)
def test_content_is_kept_and_logged_only_as_the_teams_policy_allows(
    policy: str, keeps: bool, logged: bool, request_lines: list[str]
) -> None:
    request = asyncio.run(_reach("routed", logging_policy=policy))
    record = request.record
    assert record.keeps_content is keeps
    assert record.prompt == (REQUEST.prompt_text if keeps else None)
    record.ended(Ending("ok", Usage(3, 2), text="the answer"))
    assert len(request_lines) == int(logged)
    if logged:
        line = json.loads(request_lines[0])
        assert (line["request_id"], line["team"], line["outcome"]) == ("r", TEAM, "ok")
        assert (line["input_tokens"], line["output_tokens"]) == (3, 2)
        assert ("prompt" in line, "completion" in line) == (keeps, keeps)
        if keeps:
            assert (line["prompt"], line["completion"]) == (REQUEST.prompt_text, "the answer")


def test_before_authentication_content_is_not_kept() -> None:
    request = asyncio.run(_reach("start"))
    assert request.record.keeps_content is False
    request.record.parsed(REQUEST)
    assert request.record.prompt is None
