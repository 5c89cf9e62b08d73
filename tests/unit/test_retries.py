"""Trying a request on a pool's replicas: which failures move on to another replica, how
many replicas are tried, the retry budget, the deadline, and the in-flight counts left
behind. A real Balancer and RetryBudget; the tries themselves are scripted."""

from __future__ import annotations

import asyncio
import random

import pytest

from gateway.errors import (
    AuthenticationFailed,
    GatewayError,
    InvalidRequest,
    UpstreamError,
    UpstreamOverloaded,
    UpstreamRefused,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from gateway.registry import Pool
from gateway.routing import Route
from gateway.upstream.attempt import Outbound
from gateway.upstream.balancer import Balancer, RetryBudget
from gateway.upstream.retries import (
    MAX_ATTEMPTS,
    Slot,
    costs_budget,
    health_of,
    retryable,
    with_retries,
)

POOL = Pool(
    name="p",
    base_model="m/base",
    adapters=("org/x",),
    endpoints=("http://a:1", "http://b:1", "http://c:1", "http://d:1", "http://e:1"),
)
PAIR = Pool(name="pair", base_model="m/base", endpoints=("http://a:1", "http://b:1"))
DEADLINE = 30.0
"""Long enough never to end a scripted try (those never wait)."""

STREAMS = [pytest.param(False, id="plain"), pytest.param(True, id="stream")]

Outcome = type[GatewayError] | str
"""What one scripted try does: raise that error, or answer with that text."""


NOW = 100.0
"""The balancer's clock stands still: an ejection never runs out during a test."""


def _balancer(seed: int = 7) -> Balancer:
    return Balancer(rng=random.Random(seed), clock=lambda: NOW)


def _outbound(pool: Pool = POOL) -> Outbound:
    return Outbound(Route("chat", "org/x", pool), "/v1/chat/completions", b'{"x":1}')


def _inflight(balancer: Balancer, pool: Pool = POOL) -> dict[str, int]:
    return {r.url: r.inflight for r in balancer.replicas(pool)}


class Script:
    """The tries' outcomes, in order (the last one repeats), and what each try saw."""

    def __init__(self, balancer: Balancer, budget: RetryBudget, *outcomes: Outcome) -> None:
        self.balancer, self.budget, self.outcomes = balancer, budget, outcomes
        self.calls: list[Outbound] = []
        self.seen_inflight: list[dict[str, int]] = []
        self.seen_budget: list[tuple[int, int]] = []

    @property
    def urls(self) -> list[str]:
        return [out.route.endpoint for out in self.calls]

    async def __call__(self, out: Outbound) -> str:
        self.calls.append(out)
        self.seen_inflight.append(_inflight(self.balancer, out.route.pool))
        self.seen_budget.append((self.budget.active, self.budget.retrying))
        outcome = self.outcomes[min(len(self.calls), len(self.outcomes)) - 1]
        if isinstance(outcome, str):
            return outcome
        raise outcome()


def _run(
    script: Script, stream: bool, pool: Pool = POOL, deadline: float = DEADLINE
) -> tuple[str, Slot]:
    return asyncio.run(
        with_retries(script.balancer, script.budget, _outbound(pool), stream, deadline, script)
    )


# -- how each error is classified --------------------------------------------------------

CLASSIFICATION = [
    # error, retried in a stream, retried when not streamed, costs budget, replica health
    pytest.param(UpstreamRefused, True, True, False, False, id="refused"),
    pytest.param(UpstreamUnavailable, True, True, False, False, id="unavailable"),
    pytest.param(UpstreamOverloaded, True, True, True, None, id="overloaded"),
    pytest.param(UpstreamError, True, True, True, False, id="upstream-error"),
    pytest.param(UpstreamTimeout, True, False, True, False, id="timeout"),
    pytest.param(InvalidRequest, False, False, True, True, id="invalid-request"),
    pytest.param(AuthenticationFailed, False, False, True, False, id="other-gateway-error"),
]


@pytest.mark.parametrize(("error", "in_stream", "plain", "costs", "health"), CLASSIFICATION)
def test_each_error_is_classified_for_retry_budget_and_health(
    error: type[GatewayError], in_stream: bool, plain: bool, costs: bool, health: bool | None
) -> None:
    assert retryable(error(), stream=True) is in_stream
    assert retryable(error(), stream=False) is plain
    assert costs_budget(error()) is costs
    assert health_of(error()) is health


# -- which failures move on to another replica -------------------------------------------

TRIES = [
    # error every try raises, stream, replicas tried
    pytest.param(UpstreamRefused, False, MAX_ATTEMPTS, id="refused-plain"),
    pytest.param(UpstreamRefused, True, MAX_ATTEMPTS, id="refused-stream"),
    pytest.param(UpstreamUnavailable, False, MAX_ATTEMPTS, id="reset-plain"),
    pytest.param(UpstreamOverloaded, False, MAX_ATTEMPTS, id="overloaded-plain"),
    pytest.param(UpstreamOverloaded, True, MAX_ATTEMPTS, id="overloaded-stream"),
    pytest.param(UpstreamError, False, MAX_ATTEMPTS, id="upstream-error-plain"),
    pytest.param(UpstreamError, True, MAX_ATTEMPTS, id="in-stream-error"),
    pytest.param(UpstreamTimeout, True, MAX_ATTEMPTS, id="late-first-event-stream"),
    pytest.param(UpstreamTimeout, False, 1, id="read-timeout-plain-not-retried"),
    pytest.param(InvalidRequest, False, 1, id="4xx-plain-not-retried"),
    pytest.param(InvalidRequest, True, 1, id="4xx-stream-not-retried"),
]


@pytest.mark.parametrize(("error", "stream", "tries"), TRIES)
def test_a_failure_is_retried_on_other_replicas_only_when_retryable(
    error: type[GatewayError], stream: bool, tries: int
) -> None:
    balancer, budget = _balancer(), RetryBudget()
    script = Script(balancer, budget, error)
    with pytest.raises(error):
        _run(script, stream)
    assert len(script.urls) == tries
    assert len(set(script.urls)) == tries  # never the same replica twice
    assert set(script.urls) <= set(POOL.endpoints)
    assert set(_inflight(balancer).values()) == {0}
    assert (budget.active, budget.retrying) == (0, 0)


@pytest.mark.parametrize(
    "error",
    [
        pytest.param(UpstreamRefused, id="refused"),
        pytest.param(UpstreamOverloaded, id="overloaded"),
        pytest.param(UpstreamError, id="upstream-error"),
    ],
)
@pytest.mark.parametrize("stream", STREAMS)
def test_after_a_retryable_failure_another_replica_answers_and_holds_the_slot(
    error: type[GatewayError], stream: bool
) -> None:
    balancer, budget = _balancer(), RetryBudget()
    script = Script(balancer, budget, error, "answer")
    result, slot = _run(script, stream)
    failed, answered = script.urls
    assert result == "answer"
    assert answered != failed
    assert (slot.pool, slot.replica.url) == (POOL, answered)
    assert _inflight(balancer) == {url: int(url == answered) for url in POOL.endpoints}
    slot.release(True)
    assert set(_inflight(balancer).values()) == {0}


def test_with_fewer_replicas_than_attempts_each_is_tried_once_and_the_last_error_stands() -> None:
    balancer, budget = _balancer(), RetryBudget()
    script = Script(balancer, budget, UpstreamError, UpstreamOverloaded)
    with pytest.raises(UpstreamOverloaded):
        _run(script, stream=False, pool=PAIR)
    assert sorted(script.urls) == sorted(PAIR.endpoints)
    assert set(_inflight(balancer, PAIR).values()) == {0}


def test_each_try_goes_to_its_replica_with_the_request_unchanged() -> None:
    balancer, budget = _balancer(), RetryBudget()
    script = Script(balancer, budget, UpstreamRefused, UpstreamRefused, "answer")
    _run(script, stream=False)
    sent = _outbound()
    for out, url in zip(script.calls, script.urls, strict=True):
        assert out.route == Route("chat", "org/x", POOL, endpoint=url)
        assert (out.path, out.body, out.trace_headers) == (sent.path, sent.body, None)


def test_a_try_is_in_flight_on_its_replica_only_while_it_runs() -> None:
    balancer, budget = _balancer(), RetryBudget()
    script = Script(balancer, budget, UpstreamError, UpstreamError, "answer")
    _result, slot = _run(script, stream=False)
    for url, seen in zip(script.urls, script.seen_inflight, strict=True):
        assert seen == {u: int(u == url) for u in POOL.endpoints}
    # the first try is not a retry; the others are, and all count as one active request
    assert script.seen_budget == [(1, 0), (1, 1), (1, 1)]
    slot.release(None)
    assert set(_inflight(balancer).values()) == {0}


# -- the retry budget ---------------------------------------------------------------------

BUDGET = [
    # error every try raises, stream, replicas tried while other requests use up the budget
    pytest.param(UpstreamOverloaded, False, 1, id="overloaded-costs-budget"),
    pytest.param(UpstreamError, True, 1, id="in-stream-error-costs-budget"),
    pytest.param(UpstreamTimeout, True, 1, id="late-first-event-costs-budget"),
    pytest.param(UpstreamRefused, False, MAX_ATTEMPTS, id="refused-is-free"),
    pytest.param(UpstreamUnavailable, True, MAX_ATTEMPTS, id="reset-is-free"),
]


@pytest.mark.parametrize(("error", "stream", "tries"), BUDGET)
def test_an_exhausted_budget_stops_only_retries_that_cost_it(
    error: type[GatewayError], stream: bool, tries: int
) -> None:
    balancer, budget = _balancer(), RetryBudget(ratio=0.2, minimum=3)
    budget.active, budget.retrying = 10, 3  # other requests already retry up to the floor
    script = Script(balancer, budget, error)
    with pytest.raises(error):
        _run(script, stream)
    assert len(set(script.urls)) == len(script.urls) == tries
    assert (budget.active, budget.retrying) == (10, 3)  # this request's share given back
    assert set(_inflight(balancer).values()) == {0}


def test_a_budget_with_room_allows_the_retries() -> None:
    balancer, budget = _balancer(), RetryBudget(ratio=0.2, minimum=3)
    budget.active, budget.retrying = 10, 2
    script = Script(balancer, budget, UpstreamOverloaded, "answer")
    result, slot = _run(script, stream=False)
    assert (result, len(script.urls)) == ("answer", 2)
    slot.release(True)
    assert (budget.active, budget.retrying) == (10, 2)


# -- what the tries say about the replicas ------------------------------------------------


@pytest.mark.parametrize(
    ("error", "failures", "ejected"),
    [
        pytest.param(UpstreamRefused, 0, True, id="refused-ejects-at-once"),
        pytest.param(UpstreamError, 1, False, id="error-counts-a-failure"),
        pytest.param(UpstreamOverloaded, 0, False, id="overload-is-not-a-failure"),
    ],
)
def test_a_failed_try_tells_the_balancer_about_its_replica(
    error: type[GatewayError], failures: int, ejected: bool
) -> None:
    balancer, budget = _balancer(), RetryBudget()
    script = Script(balancer, budget, error, "answer")
    _result, slot = _run(script, stream=False)
    failed = next(r for r in balancer.replicas(POOL) if r.url == script.urls[0])
    assert (failed.failures, failed.ejected_until > NOW) == (failures, ejected)
    slot.release(True)


def test_a_client_error_clears_the_replicas_failure_record() -> None:
    balancer, budget = _balancer(), RetryBudget()
    for replica in balancer.replicas(POOL):
        replica.failures = 2
    script = Script(balancer, budget, InvalidRequest)
    with pytest.raises(InvalidRequest):
        _run(script, stream=False)
    answered = next(r for r in balancer.replicas(POOL) if r.url == script.urls[0])
    assert answered.failures == 0  # it answered: the replica is fine, the request was not


@pytest.mark.parametrize(
    ("healthy", "failures"),
    [
        pytest.param(True, 0, id="success-clears"),
        pytest.param(False, 3, id="failure-counts"),
        pytest.param(None, 2, id="nothing-said"),
    ],
)
def test_releasing_the_slot_ends_the_request_on_its_replica(
    healthy: bool | None, failures: int
) -> None:
    balancer, budget = _balancer(), RetryBudget()
    for replica in balancer.replicas(POOL):
        replica.failures = 2
    _result, slot = _run(Script(balancer, budget, "answer"), stream=True)
    assert slot.replica.inflight == 1
    slot.release(healthy)
    assert (slot.replica.inflight, slot.replica.failures) == (0, failures)


# -- no replica, the deadline, and a client that leaves -----------------------------------


def test_an_adapter_its_replicas_do_not_list_fails_fast_without_a_try() -> None:
    balancer, budget = _balancer(), RetryBudget()
    balancer.missing[POOL.name] = frozenset({"org/x"})
    script = Script(balancer, budget, "answer")
    with pytest.raises(UpstreamUnavailable):
        _run(script, stream=False)
    assert script.calls == []
    assert budget.active == 0


def test_no_available_replica_is_overloaded_without_a_try() -> None:
    balancer, budget = _balancer(), RetryBudget()
    for replica in balancer.replicas(POOL):
        replica.capacity = 0  # every replica is at its concurrency limit
    script = Script(balancer, budget, "answer")
    with pytest.raises(UpstreamOverloaded):
        _run(script, stream=False)
    assert script.calls == []


class Hang:
    """A try that never answers: it waits for an event nobody sets."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.calls = 0

    async def __call__(self, out: Outbound) -> str:
        self.calls += 1
        self.started.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


@pytest.mark.parametrize("stream", STREAMS)
def test_the_overall_deadline_ends_the_tries_with_a_timeout(stream: bool) -> None:
    balancer, budget = _balancer(), RetryBudget()
    hang = Hang()
    with pytest.raises(UpstreamTimeout, match="did not answer in time"):
        asyncio.run(with_retries(balancer, budget, _outbound(), stream, 0.01, hang))
    assert hang.calls == 1  # the deadline is for all tries: no retry after it
    assert set(_inflight(balancer).values()) == {0}
    assert all(r.failures == 0 for r in balancer.replicas(POOL))  # not the replica's fault
    assert (budget.active, budget.retrying) == (0, 0)


def test_a_client_that_leaves_mid_try_leaves_nothing_in_flight() -> None:
    balancer, budget = _balancer(), RetryBudget()
    hang = Hang()

    async def leave() -> None:
        task = asyncio.create_task(
            with_retries(balancer, budget, _outbound(), False, DEADLINE, hang)
        )
        await hang.started.wait()
        assert sum(_inflight(balancer).values()) == 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(leave())
    assert set(_inflight(balancer).values()) == {0}
    assert (budget.active, budget.retrying) == (0, 0)
