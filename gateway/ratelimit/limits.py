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
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Literal, Protocol

from gateway.auth import Principal
from gateway.errors import RateLimited
from gateway.metrics import Metrics
from gateway.redis_client import team_key

LIMITER_VERSION = 1
"""Version of the limiter's key layout and scripts; part of every key."""

Kind = Literal["requests", "tokens"]
KINDS: tuple[Kind, ...] = ("requests", "tokens")


def limiter_key(team: str, *parts: str) -> str:
    """A rate-limit key: ``lgw:{<team>}:rl1:<parts>`` (the version of the scripts)."""
    return team_key(team, f"rl{LIMITER_VERSION}", *parts)


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
class Verdict:
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

    async def start(self) -> None:
        """Connect and start background work (in the running event loop)."""
        ...

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


def refused(plan: Plan, verdict: Verdict, tokens: int, metrics: Metrics | None) -> RateLimited:
    """The 429 for a refusal, with ``Retry-After`` and the ``x-ratelimit-*`` headers."""
    index = verdict.refused_by
    what, limit = "concurrent requests", "concurrency"
    never = False
    if index < len(plan.buckets):
        bucket = plan.buckets[index]
        what, limit = f"{bucket.kind} per minute", bucket.kind
        never = bucket.kind == "tokens" and tokens > bucket.capacity
    if metrics is not None:
        metrics.rejected(plan.team, limit)
    headers = rate_headers(plan, verdict)
    if never:  # waiting cannot help: the request alone exceeds the whole minute's quota
        headers["x-should-retry"] = "false"
        return RateLimited(
            f"This request needs about {tokens} tokens, more than the {what} "
            "limit allows; lower max_tokens or shorten the prompt.",
            headers=headers,
        )
    seconds = max(1, math.ceil(verdict.retry_after_ms / 1000))
    headers |= {"Retry-After": str(seconds), "retry-after-ms": str(verdict.retry_after_ms)}
    return RateLimited(f"Rate limit reached for {what}. Retry after {seconds}s.", headers=headers)


def rate_headers(plan: Plan, verdict: Verdict) -> dict[str, str]:
    """OpenAI's ``x-ratelimit-*`` headers: per kind, the tightest of team and key."""
    headers: dict[str, str] = {}
    remaining = verdict.remaining
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
