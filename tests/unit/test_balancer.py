"""Replica picking and outlier ejection, with a fake clock."""

from __future__ import annotations

import random

import pytest

from gateway.errors import UpstreamOverloaded
from gateway.registry import Pool
from gateway.upstream.balancer import Balancer, RetryBudget

POOL = Pool(
    name="p", base_model="m/b", endpoints=("http://a:1", "http://b:1", "http://c:1", "http://d:1")
)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _balancer(clock: Clock) -> Balancer:
    return Balancer(
        eject_after=3, base_ejection=10.0, max_ejected_share=0.5, rng=random.Random(1), clock=clock
    )


def test_power_of_two_choices_prefers_the_less_loaded() -> None:
    balancer = _balancer(Clock())
    busy = balancer.replicas(POOL)[0]
    busy.inflight = 50
    picks = [balancer.pick(POOL).url for _ in range(300)]
    assert picks.count(busy.url) == 0  # it only wins against an equally busy one
    assert len(set(picks)) == 3


def test_consecutive_failures_eject_for_a_growing_time_then_probation() -> None:
    clock = Clock()
    balancer = _balancer(clock)
    replica = balancer.replicas(POOL)[0]
    for _ in range(3):
        balancer.failed(POOL, replica)
    assert replica.ejected_until == 10.0
    assert all(balancer.pick(POOL).url != replica.url for _ in range(50))
    clock.now = 10.0  # back, on probation: one failure ejects again, for longer
    balancer.failed(POOL, replica)
    assert replica.ejected_until == 10.0 + 20.0
    clock.now = 30.0
    balancer.started(replica)
    balancer.finished(POOL, replica, True)  # a success clears its record
    assert (replica.failures, replica.ejections, replica.probation) == (0, 0, False)


def test_a_success_resets_the_failure_count() -> None:
    balancer = _balancer(Clock())
    replica = balancer.replicas(POOL)[0]
    balancer.failed(POOL, replica)
    balancer.failed(POOL, replica)
    balancer.started(replica)
    balancer.finished(POOL, replica, True)
    balancer.failed(POOL, replica)
    assert replica.ejected_until == 0.0


def test_never_more_than_half_the_pool_is_ejected() -> None:
    balancer = _balancer(Clock())
    for replica in balancer.replicas(POOL):
        balancer.failed(POOL, replica, down=True)
    ejected = [r for r in balancer.replicas(POOL) if r.ejected_until > 0]
    assert len(ejected) == 2


def test_overload_answers_do_not_eject() -> None:
    balancer = _balancer(Clock())
    replica = balancer.replicas(POOL)[0]
    for _ in range(10):
        balancer.started(replica)
        balancer.finished(POOL, replica, None)
    assert replica.ejected_until == 0.0 and replica.inflight == 0


def test_no_available_replica_is_a_fast_503() -> None:
    single = Pool(name="s", base_model="m/b", endpoints=("http://a:1",))
    balancer = _balancer(Clock())
    with pytest.raises(UpstreamOverloaded):
        balancer.pick(single, frozenset({"http://a:1"}))


def test_endpoint_changes_keep_the_state_of_replicas_that_stay() -> None:
    balancer = _balancer(Clock())
    kept = balancer.replicas(POOL)[1]
    kept.inflight = 7
    smaller = POOL.model_copy(update={"endpoints": ("http://b:1", "http://e:1")})
    assert {r.url: r.inflight for r in balancer.replicas(smaller)} == {
        "http://b:1": 7,
        "http://e:1": 0,
    }


def test_the_retry_budget_is_a_share_of_active_requests_with_a_floor() -> None:
    budget = RetryBudget(ratio=0.2, minimum=3)
    budget.active, budget.retrying = 5, 2
    assert budget.allows()
    budget.retrying = 3
    assert not budget.allows()
    budget.active = 50
    assert budget.allows()  # 20% of 50 = 10


def test_only_retries_that_may_have_reached_a_gpu_draw_on_the_budget() -> None:
    from gateway.errors import UpstreamError, UpstreamRefused, UpstreamTimeout, UpstreamUnavailable
    from gateway.upstream.retries import costs_budget

    assert not costs_budget(UpstreamRefused())
    assert not costs_budget(UpstreamUnavailable())  # reset before any answer
    assert costs_budget(UpstreamOverloaded())
    assert costs_budget(UpstreamTimeout())
    assert costs_budget(UpstreamError())
