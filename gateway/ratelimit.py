"""Stage 4, admit: requests/min, tokens/min and concurrency, per team and per key.

Algorithm (the same in Redis and in memory, so both pass the same tests):
- requests/min and tokens/min are token buckets holding one minute of quota, refilled
  continuously; a burst may use the whole minute at once, and over any 60 s window at
  most twice the limit passes (quota + one minute of refill);
- tokens/min reserves an estimate at admission (prompt estimate + the capped
  ``max_tokens``) and settles to the real usage when the request ends;
- concurrency is a set of leases that expire unless renewed, so a replica that dies
  holding slots leaks them only until the lease time.
A request is admitted by every limit that applies, or debited by none.
"""

from __future__ import annotations

import math
import secrets
import time
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Literal, Protocol

from gateway.auth import Principal
from gateway.errors import RateLimited
from gateway.metrics import Metrics

LIMITER_VERSION = 1
"""Version of the limiter's key layout and scripts; part of every key."""

Kind = Literal["requests", "tokens"]
KINDS: tuple[Kind, ...] = ("requests", "tokens")


@lru_cache(maxsize=16384)  # a few keys per team and key: computed once, not per request
def team_key(team: str, *parts: str) -> str:
    """``lgw:{<team>}:<parts>``: the hash tag keeps one team's keys in one cluster slot.

    Every part is escaped, so two different (team, parts) can never share a key.
    """
    escaped = ":".join(_escape(p) for p in parts)
    return f"lgw:{{{_escape(team)}}}:{escaped}"


def limiter_key(team: str, *parts: str) -> str:
    """A rate-limit key: ``lgw:{<team>}:rl1:<parts>`` (the version of the scripts)."""
    return team_key(team, f"rl{LIMITER_VERSION}", *parts)


def _escape(part: str) -> str:
    safe = "abcdefghijklmnopqrstuvwxyz0123456789._-"
    return "".join(c if c in safe else f"%{ord(c):x}." for c in part)


@dataclass(frozen=True, slots=True)
class Bucket:
    """One token bucket that a request must fit: its key, kind and per-minute capacity."""

    key: str
    kind: Kind
    capacity: int


@dataclass(frozen=True, slots=True)
class Plan:
    """Every limit that applies to one principal."""

    team: str
    buckets: tuple[Bucket, ...]
    lease_sets: tuple[tuple[str, int], ...]
    """(key, limit) per concurrency limit."""
    kinds: tuple[tuple[Kind, tuple[int, ...]], ...] = field(init=False)
    """The indexes in ``buckets`` of each kind present (for the headers)."""

    def __post_init__(self) -> None:
        kinds: list[tuple[Kind, tuple[int, ...]]] = []
        for kind in KINDS:
            indexes = tuple(i for i, b in enumerate(self.buckets) if b.kind == kind)
            if indexes:
                kinds.append((kind, indexes))
        object.__setattr__(self, "kinds", tuple(kinds))  # frozen: set once, here

    @property
    def empty(self) -> bool:
        """Nothing to enforce: admission costs no round trip."""
        return not self.buckets and not self.lease_sets


def plan_for(principal: Principal) -> Plan:
    """The limits of the principal's team and of its key."""
    team, key = principal.team.limits, principal.key_limits
    return _plan(
        principal.team.name,
        principal.key_id,
        (team.rpm, team.tpm, team.concurrency),
        (key.rpm, key.tpm, key.concurrency),
    )


Numbers = tuple[int | None, int | None, int | None]
"""requests/min, tokens/min, concurrency."""


@lru_cache(maxsize=16384)  # a plan depends on these values only: built once, not per request
def _plan(team: str, key_id: str, team_limits: Numbers, key_limits: Numbers) -> Plan:
    buckets: list[Bucket] = []
    lease_sets: list[tuple[str, int]] = []
    for scope, (rpm, tpm, concurrency) in (
        (("team",), team_limits),
        (("key", key_id), key_limits),
    ):
        if rpm is not None:
            buckets.append(Bucket(limiter_key(team, *scope, "rpm"), "requests", rpm))
        if tpm is not None:
            buckets.append(Bucket(limiter_key(team, *scope, "tpm"), "tokens", tpm))
        if concurrency is not None:
            lease_sets.append((limiter_key(team, *scope, "conc"), concurrency))
    return Plan(team, tuple(buckets), tuple(lease_sets))


@dataclass(frozen=True, slots=True)
class Decision:
    """What the limiter said: admitted or not, and what the headers should tell."""

    admitted: bool
    refused_by: int
    """Index of the refusing limit (buckets first, then lease sets); -1 when admitted."""
    retry_after_ms: int
    remaining: tuple[tuple[int, int], ...]
    """(remaining, ms until full) per bucket."""


@dataclass(eq=False)
class Grant:
    """An admitted request's hold on its limits, released by ``settle``."""

    plan: Plan
    lease: str
    reserved_tokens: int
    headers: dict[str, str]
    local: bool = False
    """Admitted by this replica's fallback limiter (Redis was unavailable)."""
    settled: bool = field(default=False)


class Limiter(Protocol):
    """Admission control; the Redis and in-memory limiters behave the same."""

    async def admit(self, principal: Principal, tokens: int) -> Grant:
        """Reserve one request and ``tokens`` tokens, or raise ``RateLimited``."""
        ...

    async def settle(self, grant: Grant, used_tokens: int) -> None:
        """Refund what was reserved but not used and release the concurrency slots."""
        ...

    def settle_soon(self, grant: Grant, used_tokens: int) -> None:
        """``settle`` without waiting; it completes even if the caller is cancelled."""
        ...

    async def close(self) -> None:
        """Stop background work."""
        ...


def costs(plan: Plan, tokens: int) -> list[int]:
    """What one request costs in each of the plan's buckets."""
    return [1 if b.kind == "requests" else tokens for b in plan.buckets]


def new_lease() -> str:
    """A lease id, unique across replicas."""
    return secrets.token_hex(8)


def refused(plan: Plan, decision: Decision, tokens: int, metrics: Metrics | None) -> RateLimited:
    """The 429 for a refusal, with ``Retry-After`` and the ``x-ratelimit-*`` headers."""
    index = decision.refused_by
    what, limit = "concurrent requests", "concurrency"
    never = False
    if index < len(plan.buckets):
        bucket = plan.buckets[index]
        what, limit = f"{bucket.kind} per minute", bucket.kind
        never = bucket.kind == "tokens" and tokens > bucket.capacity
    if metrics is not None:
        metrics.rejected(plan.team, limit)
    headers = rate_headers(plan, decision)
    if never:  # waiting cannot help: the request alone exceeds the whole minute's quota
        headers["x-should-retry"] = "false"
        return RateLimited(
            f"This request needs about {tokens} tokens, more than the {what} "
            "limit allows; lower max_tokens or shorten the prompt.",
            headers=headers,
        )
    seconds = max(1, math.ceil(decision.retry_after_ms / 1000))
    headers |= {"Retry-After": str(seconds), "retry-after-ms": str(decision.retry_after_ms)}
    return RateLimited(f"Rate limit reached for {what}. Retry after {seconds}s.", headers=headers)


def rate_headers(plan: Plan, decision: Decision) -> dict[str, str]:
    """OpenAI's ``x-ratelimit-*`` headers: per kind, the tightest of team and key."""
    headers: dict[str, str] = {}
    remaining = decision.remaining
    for kind, indexes in plan.kinds:
        tightest = indexes[0]
        for index in indexes[1:]:
            if remaining[index][0] < remaining[tightest][0]:
                tightest = index
        left, reset = remaining[tightest]
        headers[f"x-ratelimit-limit-{kind}"] = str(plan.buckets[tightest].capacity)
        headers[f"x-ratelimit-remaining-{kind}"] = str(max(0, left))
        headers[f"x-ratelimit-reset-{kind}"] = duration(reset)
    return headers


def duration(ms: int) -> str:
    """OpenAI's reset format: ``120ms``, ``6s``, ``1m30s``."""
    if ms < 1000:
        return f"{max(0, ms)}ms"
    seconds = math.ceil(ms / 1000)
    return f"{seconds // 60}m{seconds % 60}s" if seconds >= 60 else f"{seconds}s"


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

    def decide(self, plan: Plan, tokens: int, lease: str) -> Decision:
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
        return Decision(refused_by < 0, refused_by, retry, remaining)

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

    async def admit(self, principal: Principal, tokens: int) -> Grant:
        plan = plan_for(principal)
        lease = new_lease()
        decision = self.decide(plan, tokens, lease)
        if not decision.admitted:
            raise refused(plan, decision, tokens, self._metrics)
        return Grant(plan, lease, tokens, rate_headers(plan, decision))

    async def settle(self, grant: Grant, used_tokens: int) -> None:
        self.settle_soon(grant, used_tokens)  # in memory there is nothing to wait for

    def settle_soon(self, grant: Grant, used_tokens: int) -> None:
        if not grant.settled:
            grant.settled = True
            self.refund(grant, used_tokens)

    async def close(self) -> None:
        return None
