"""The admission algorithm of ``limits.py`` in process memory: single-node mode, and
each replica's fallback when Redis is unavailable."""

from __future__ import annotations

import math
import time

from gateway.auth import Principal
from gateway.metrics import Metrics
from gateway.ratelimit.limits import (
    Bucket,
    Grant,
    Plan,
    Verdict,
    costs,
    new_lease,
    plan_for,
    rate_headers,
    refused,
)


class MemoryLimiter:
    """The admission algorithm in process memory: single-node mode, and the per-replica
    fallback when Redis is unavailable.

    Leases here need no expiry: they live and die with this process, and ``settle``
    releases them on every ending.
    """

    def __init__(self, metrics: Metrics | None = None) -> None:
        self._metrics = metrics
        self._buckets: dict[str, tuple[float, float, float]] = {}  # level, ts ms, used
        self._leases: dict[str, set[str]] = {}

    def decide(self, plan: Plan, tokens: int, lease: str) -> Verdict:
        """Check every limit, then debit all or none (the same steps as admit.lua)."""
        now = time.monotonic() * 1000
        amounts = costs(plan, tokens)
        levels = [self._level(b, now) for b in plan.buckets]
        refused_by, retry = -1, 0
        for i, (bucket, level, cost) in enumerate(zip(plan.buckets, levels, amounts, strict=True)):
            if refused_by < 0 and level < cost:
                refused_by, retry = i, math.ceil((cost - level) * 60000 / bucket.capacity)
        for j, (key, limit) in enumerate(plan.lease_sets):
            if refused_by < 0 and len(self._leases.get(key, ())) >= limit:
                refused_by, retry = len(plan.buckets) + j, 1000
        if refused_by < 0:
            for i, (bucket, cost) in enumerate(zip(plan.buckets, amounts, strict=True)):
                levels[i] -= cost
                self._buckets[bucket.key] = (levels[i], now, self.used(bucket.key) + cost)
            for key, _ in plan.lease_sets:
                self._leases.setdefault(key, set()).add(lease)
        remaining = tuple(
            (math.floor(level), math.ceil((b.capacity - level) * 60000 / b.capacity))
            for b, level in zip(plan.buckets, levels, strict=True)
        )
        return Verdict(refused_by < 0, refused_by, retry, remaining)

    def _level(self, bucket: Bucket, now: float) -> float:
        level, ts, _ = self._buckets.get(bucket.key, (bucket.capacity, now, 0.0))
        return min(bucket.capacity, level + max(0.0, now - ts) * bucket.capacity / 60000)

    def used(self, key: str) -> float:
        """Tokens debited from a bucket, net of settlements."""
        return self._buckets.get(key, (0.0, 0.0, 0.0))[2]

    def in_flight(self, key: str) -> int:
        """Leases held in a lease set."""
        return len(self._leases.get(key, ()))

    def refund(self, grant: Grant, used_tokens: int) -> None:
        """Settle a grant: the same steps as settle.lua."""
        now = time.monotonic() * 1000
        refund = grant.reserved_tokens - used_tokens
        for bucket in grant.plan.buckets:
            if bucket.kind == "tokens":
                level = min(bucket.capacity, self._level(bucket, now) + refund)
                self._buckets[bucket.key] = (level, now, self.used(bucket.key) - refund)
        for key, _ in grant.plan.lease_sets:
            self._leases.get(key, set()).discard(grant.lease)

    async def start(self) -> None:
        return None

    async def admit(self, principal: Principal, tokens: int) -> Grant:
        plan = plan_for(principal)
        lease = new_lease()
        verdict = self.decide(plan, tokens, lease)
        if not verdict.admitted:
            raise refused(plan, verdict, tokens, self._metrics)
        return Grant(plan, lease, tokens, rate_headers(plan, verdict))

    async def settle(self, grant: Grant, used_tokens: int) -> None:
        self.settle_soon(grant, used_tokens)  # in memory there is nothing to wait for

    def settle_soon(self, grant: Grant, used_tokens: int) -> None:
        if not grant.settled:
            grant.settled = True
            self.refund(grant, used_tokens)

    async def close(self) -> None:
        return None
