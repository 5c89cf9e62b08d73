"""Trying a request on a pool's replicas: retry only while nothing reached the client.

Retried, on another replica: connection failures (refused, reset, the replica died),
TGI's overload (429, or an overload event before any content), a stream's in-stream
error before any content, and a stream whose first event did not come within the
per-try timeout (closing that connection makes TGI drop the request). Never retried:
what the client asked wrong (4xx), and a non-streamed read timeout (the request may
have run; running it twice would cost the GPU twice). Every try counts against one
deadline, and retries of requests that may have reached a GPU (overload, timeouts,
generation errors) against a budget shared by the whole process.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import TypeVar

from gateway.errors import (
    GatewayError,
    InvalidRequest,
    UpstreamError,
    UpstreamOverloaded,
    UpstreamRefused,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from gateway.registry import Pool
from gateway.upstream.attempt import Outbound
from gateway.upstream.balancer import Balancer, Replica, RetryBudget

T = TypeVar("T")
MAX_ATTEMPTS = 3


@dataclass(frozen=True, slots=True)
class Slot:
    """The request's place on the replica that answered, held until the answer is over."""

    balancer: Balancer
    pool: Pool
    replica: Replica

    def release(self, healthy: bool | None) -> None:
        """The request is over: what it says about the replica (``None``: nothing)."""
        self.balancer.finished(self.pool, self.replica, healthy)


def retryable(error: GatewayError, stream: bool) -> bool:
    """Whether another replica may still be tried after ``error`` (nothing was sent)."""
    if isinstance(error, UpstreamTimeout):
        return stream  # a stream's first event is late; a plain answer may have run
    return isinstance(error, UpstreamError | UpstreamUnavailable | UpstreamOverloaded)


def costs_budget(error: GatewayError) -> bool:
    """Whether retrying after ``error`` draws on the retry budget. A retry after the
    connection itself failed (refused, or reset before any answer) does not: the request
    never reached a GPU, so it adds no load to a sick pool."""
    return isinstance(error, UpstreamOverloaded) or not isinstance(error, UpstreamUnavailable)


def health_of(error: GatewayError) -> bool | None:
    """What ``error`` says about the replica: failing (False), fine (True), or nothing."""
    if isinstance(error, UpstreamRefused):
        return False  # (the balancer ejects a refusing replica at once)
    if isinstance(error, UpstreamOverloaded):
        return None  # busy is not sick
    return isinstance(error, InvalidRequest)  # it answered: the request was wrong


async def with_retries(
    balancer: Balancer,
    budget: RetryBudget,
    out: Outbound,
    stream: bool,
    deadline: float,
    attempt: Callable[[Outbound], Awaitable[T]],
) -> tuple[T, Slot]:
    """``attempt`` on up to ``MAX_ATTEMPTS`` replicas of the route's pool within
    ``deadline`` seconds; returns the result and the slot on the replica that gave it
    (still in flight there until the caller releases it)."""
    pool, tried = out.route.pool, set[str]()
    budget.active += 1
    try:
        async with asyncio.timeout(deadline):
            last_error: GatewayError | None = None
            number = 0
            while True:
                number += 1
                replica = _next(balancer, pool, out.route.adapter, tried, last_error)
                tried.add(replica.url)
                try:
                    result = await _one(balancer, budget, out, replica, attempt, number)
                    return result, Slot(balancer, pool, replica)
                except GatewayError as error:
                    final = number == MAX_ATTEMPTS or (costs_budget(error) and not budget.allows())
                    if final or not retryable(error, stream):
                        raise
                    last_error = error
    except TimeoutError:
        raise UpstreamTimeout("The model did not answer in time.") from None
    finally:
        budget.active -= 1


def _next(
    balancer: Balancer, pool: Pool, adapter: str, tried: set[str], last_error: GatewayError | None
) -> Replica:
    """The next replica to try; on a retry with none left, the last try's error stands."""
    try:
        return balancer.pick(pool, frozenset(tried), adapter)
    except UpstreamOverloaded:
        if last_error is not None:
            raise last_error from None
        raise


async def _one(
    balancer: Balancer,
    budget: RetryBudget,
    out: Outbound,
    replica: Replica,
    attempt: Callable[[Outbound], Awaitable[T]],
    number: int,
) -> T:
    pool = out.route.pool
    balancer.started(replica)
    if number > 1:
        budget.retrying += 1
    try:
        return await attempt(replace(out, route=replace(out.route, endpoint=replica.url)))
    except GatewayError as error:
        balancer.finished(pool, replica, health_of(error), down=isinstance(error, UpstreamRefused))
        raise
    except BaseException:
        balancer.finished(pool, replica, None)  # cancelled: the client left
        raise
    finally:
        if number > 1:
            budget.retrying -= 1
