"""The admission control of ``limits.py`` in Redis, shared by every replica.

One script call per request (``lua/admit.lua``), one after it (``lua/settle.lua``), and
one renewal per lease period for whatever is still running; the calls of concurrent
requests share batches (``batch.py``). Redis failures never hang a
request: short timeouts, no retry storm, a circuit breaker, then the team's policy:
``fail_open`` admits through this replica's in-memory limiter, ``fail_closed`` answers 503.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from importlib.resources import files
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeout

from gateway.auth import Principal
from gateway.errors import LimiterUnavailable
from gateway.metrics import Metrics
from gateway.ratelimit.batch import RedisClient, Script, ScriptCalls
from gateway.ratelimit.limits import (
    Grant,
    Plan,
    Verdict,
    costs,
    new_lease,
    plan_for,
    rate_headers,
    refused,
)
from gateway.ratelimit.memory import MemoryLimiter

log = logging.getLogger("gateway.ratelimit")
FAILURES = (RedisError, OSError, asyncio.TimeoutError)


def _script(name: str) -> str:
    return files("gateway.ratelimit.lua").joinpath(name).read_text()


def _reason(exc: BaseException) -> str:
    """A fixed vocabulary for the failure metric."""
    # redis-py's own TimeoutError and ConnectionError are not the built-in ones.
    if isinstance(exc, asyncio.TimeoutError | TimeoutError | RedisTimeout):
        return "timeout"
    if isinstance(exc, ConnectionError | OSError | RedisConnectionError):
        return "connection"
    return "error"


class Breaker:
    """Opens after ``threshold`` consecutive failures; after ``cooldown`` lets one call try."""

    def __init__(
        self, threshold: int, cooldown: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.threshold, self.cooldown, self._clock = threshold, cooldown, clock
        self.failures = 0
        self.opened_at: float | None = None

    @property
    def state(self) -> str:
        """``closed`` (calls go through), ``open`` (they do not) or ``half-open``."""
        if self.opened_at is None:
            return "closed"
        return "half-open" if self._clock() - self.opened_at >= self.cooldown else "open"

    def allows(self) -> bool:
        """Whether a call may go to Redis now (one probe at a time when half-open)."""
        if self.state == "half-open":
            self.opened_at = self._clock()  # the next probe waits another cooldown
            return True
        return self.state == "closed"

    def succeeded(self) -> None:
        """A call worked: close."""
        self.failures, self.opened_at = 0, None

    def failed(self) -> None:
        """A call failed: count it, open at the threshold."""
        self.failures += 1
        if self.failures >= self.threshold:
            self.opened_at = self._clock()


class RedisLimiter:
    """``Limiter`` over Redis (or Redis Cluster), with a per-replica fallback."""

    def __init__(
        self,
        redis: RedisClient,
        *,
        lease_seconds: float,
        breaker: Breaker,
        metrics: Metrics | None = None,
    ) -> None:
        self._redis = redis
        self._calls = ScriptCalls(redis)
        self._admit = self._calls.register(_script("admit.lua"))
        self._settle = self._calls.register(_script("settle.lua"))
        self._renew = self._calls.register(_script("renew.lua"))
        self._lease_ms = int(lease_seconds * 1000)
        self.breaker = breaker
        self.metrics = metrics or Metrics()
        self.metrics.limiter_breaker_open.set_function(lambda: float(breaker.state == "open"))
        self.local = MemoryLimiter(self.metrics)
        self._active: set[Grant] = set()
        self._lease_seconds = lease_seconds
        self._keeper: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Open a connection and load the scripts before the first request needs them;
        start renewing the leases of running requests."""
        for script in (self._admit, self._settle, self._renew):
            await self._calls.load(script)
        self._keeper = asyncio.get_running_loop().create_task(self._keep_leases())

    async def admit(self, principal: Principal, tokens: int) -> Grant:
        plan = plan_for(principal)
        if plan.empty:
            return Grant(plan, "", tokens, {})
        lease = new_lease()
        started = time.perf_counter()
        reply = await self._guarded(self._admit, *self._admission(plan, tokens, lease))
        if reply is None:
            return self._fallback(principal, plan, tokens, lease)
        self.metrics.admission.observe(time.perf_counter() - started)
        pairs = tuple((int(reply[i]), int(reply[i + 1])) for i in range(3, len(reply), 2))
        verdict = Verdict(bool(reply[0]), int(reply[1]) - 1, int(reply[2]), pairs)
        if not verdict.admitted:
            raise refused(plan, verdict, tokens, self.metrics)
        grant = Grant(plan, lease, tokens, rate_headers(plan, verdict))
        if plan.lease_sets:
            self._active.add(grant)
        return grant

    def _admission(self, plan: Plan, tokens: int, lease: str) -> tuple[list[str], list[Any]]:
        """admit.lua's keys and arguments."""
        keys = [b.key for b in plan.buckets] + [key for key, _ in plan.lease_sets]
        args: list[Any] = [len(plan.buckets), len(plan.lease_sets), lease, self._lease_ms]
        for bucket, cost in zip(plan.buckets, costs(plan, tokens), strict=True):
            args += [bucket.capacity, cost]
        args += [limit for _, limit in plan.lease_sets]
        return keys, args

    def _fallback(self, principal: Principal, plan: Plan, tokens: int, lease: str) -> Grant:
        policy = principal.team.on_limiter_failure
        self.metrics.limiter_fallbacks.labels(plan.team, policy).inc()
        if policy == "fail_closed":
            raise LimiterUnavailable(
                "Rate limiting is unavailable; retry shortly.", headers={"Retry-After": "1"}
            )
        verdict = self.local.decide(plan, tokens, lease)
        if not verdict.admitted:
            raise refused(plan, verdict, tokens, self.metrics)
        grant = Grant(plan, lease, tokens, rate_headers(plan, verdict), local=True)
        if plan.lease_sets:
            self._active.add(grant)
        return grant

    async def settle(self, grant: Grant, used_tokens: int) -> None:
        settlement = self._settlement(grant, used_tokens)
        if settlement is not None:
            await self._guarded(self._settle, *settlement)

    def settle_soon(self, grant: Grant, used_tokens: int) -> None:
        """Settle in the background: runs even when the request's task is cancelled."""
        settlement = self._settlement(grant, used_tokens)
        if settlement is not None and self._allowed():
            reply = self._calls.call(self._settle, *settlement)
            reply.add_done_callback(self._observe)

    def _settlement(self, grant: Grant, used_tokens: int) -> tuple[list[str], list[Any]] | None:
        """Mark ``grant`` settled; settle.lua's keys and arguments if Redis holds it."""
        if grant.settled or grant.plan.empty:
            return None
        grant.settled = True
        self._active.discard(grant)
        if grant.local:
            self.local.refund(grant, used_tokens)
            return None
        token_buckets = [b for b in grant.plan.buckets if b.kind == "tokens"]
        keys = [b.key for b in token_buckets] + [key for key, _ in grant.plan.lease_sets]
        args: list[Any] = [len(token_buckets), len(grant.plan.lease_sets), grant.lease]
        for bucket in token_buckets:
            args += [bucket.capacity, grant.reserved_tokens - used_tokens]
        return keys, args

    async def _guarded(self, script: Script, keys: list[str], args: list[Any]) -> Any:
        """The script's reply, or ``None`` when Redis failed or the breaker is open."""
        if not self._allowed():
            return None
        try:
            reply = await self._calls.call(script, keys, args)
        except FAILURES as exc:
            self._failed(exc)
            return None
        self.breaker.succeeded()
        return reply

    def _allowed(self) -> bool:
        if self.breaker.allows():
            return True
        self.metrics.limiter_errors.labels("breaker_open").inc()
        return False

    def _observe(self, reply: asyncio.Future[Any]) -> None:
        """The breaker's view of a call nobody waits for."""
        if reply.cancelled():
            return
        exc = reply.exception()
        if exc is None:
            self.breaker.succeeded()
        elif isinstance(exc, FAILURES):
            self._failed(exc)

    def _failed(self, exc: BaseException) -> None:
        self.breaker.failed()
        self.metrics.limiter_errors.labels(_reason(exc)).inc()
        log.warning("redis limiter call failed: %s", type(exc).__name__)

    async def _keep_leases(self) -> None:
        """Renew the leases of running requests a few times per lease period (the
        renewals of one round leave as one batch)."""
        while True:
            await asyncio.sleep(self._lease_seconds / 3)
            running = [g for g in self._active if not g.local]
            await asyncio.gather(*(self._guarded(self._renew, *self._renewal(g)) for g in running))

    def _renewal(self, grant: Grant) -> tuple[list[str], list[Any]]:
        keys = [key for key, _ in grant.plan.lease_sets]
        return keys, [grant.lease, self._lease_ms]

    async def close(self) -> None:
        if self._keeper is not None:
            self._keeper.cancel()
        try:
            async with asyncio.timeout(5):
                await self._calls.drain()
        except TimeoutError:
            log.warning("redis limiter: settlements still pending at shutdown")
        await self._calls.close()
        await self._redis.aclose()
