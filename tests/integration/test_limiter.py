"""The admission contract, run against the in-memory limiter, a real Redis and a real
three-node Redis Cluster: the same tests, the same semantics."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
import redis
from pydantic import SecretStr
from redis.asyncio import Redis, RedisCluster

from gateway.auth import Principal
from gateway.errors import RateLimited
from gateway.ratelimit import Grant, Limiter, MemoryLimiter, limiter_key
from gateway.ratelimit.redis_limiter import Breaker, RedisLimiter
from gateway.redis_client import connect
from gateway.registry import Limits, Team
from gateway.settings import Settings
from tests.integration.harness import LoopThread
from tests.redis_servers import CommandLog


class Harness:
    """A limiter under test, driven synchronously from the test; with Redis, a log of the
    commands its servers ran (opened before the limiter's first call)."""

    def __init__(
        self,
        loop: LoopThread,
        limiter: Limiter,
        url: str | None,
        cluster: bool,
        log: CommandLog | None = None,
    ) -> None:
        self.loop, self.limiter, self.url, self.cluster = loop, limiter, url, cluster
        self.log = log

    def admit(self, principal: Principal, tokens: int = 10) -> Grant:
        return self.loop.run(self.limiter.admit(principal, tokens))

    def settle(self, grant: Grant, used: int) -> None:
        self.loop.run(self.limiter.settle(grant, used))

    def used(self, key: str) -> float:
        """Tokens debited from a bucket, net of settlements: in Redis, the sum of every
        debit the scripts made (a bucket expires soon after it would be full again, so
        the bucket itself may be gone by now)."""
        if isinstance(self.limiter, MemoryLimiter):
            return self.limiter.used(key)
        assert self.log is not None
        debits = (c.args[3] for c in self.log.sync() if c.args[:3] == ("HINCRBYFLOAT", key, "u"))
        return float(sum(Decimal(d) for d in debits))

    def written(self) -> set[str]:
        """The limiter keys the scripts wrote."""
        assert self.log is not None
        return {
            c.args[1]
            for c in self.log.sync()
            if c.source == "lua" and c.args[0] in ("HSET", "HINCRBYFLOAT", "ZADD")
        }

    def ttls(self) -> dict[str, int]:
        """TTL of every limiter key Redis holds now (ms; -2 if it expired meanwhile)."""
        assert self.url is not None
        client: Any = (
            redis.RedisCluster.from_url(self.url)
            if self.cluster
            else redis.Redis.from_url(self.url)
        )
        try:
            return {k.decode(): client.pttl(k) for k in client.scan_iter("lgw:{*")}
        finally:
            client.close()


@pytest.fixture(params=["memory", "redis", "cluster"])
def limiter(request: pytest.FixtureRequest, loop: LoopThread) -> Iterator[Harness]:
    if request.param == "memory":
        yield Harness(loop, MemoryLimiter(), None, cluster=False)
        return
    yield from _redis_harness(request, loop, cluster=request.param == "cluster")


@pytest.fixture(params=["redis", "cluster"])
def shared_limiter(request: pytest.FixtureRequest, loop: LoopThread) -> Iterator[Harness]:
    yield from _redis_harness(request, loop, cluster=request.param == "cluster")


def _redis_harness(
    request: pytest.FixtureRequest, loop: LoopThread, cluster: bool
) -> Iterator[Harness]:
    urls = (
        request.getfixturevalue("cluster_urls")
        if cluster
        else [request.getfixturevalue("redis_url")]
    )
    url = urls[0]
    settings = Settings(
        redis_url=url, redis_cluster=cluster, redis_timeout=10.0, key_pepper=SecretStr("x")
    )

    async def build() -> RedisLimiter:
        client: Redis | RedisCluster = connect(settings, settings.redis_timeout)
        if cluster:
            await client.flushall()
        limiter = RedisLimiter(client, lease_seconds=30, breaker=Breaker(3, 1.0))
        await limiter.start()
        return limiter

    with CommandLog(*urls) as log:
        built = loop.run(build())
        yield Harness(loop, built, url, cluster, log)
        loop.run(built.close())


def principal(
    team: str = "analytics",
    key: str = "aaaaaaaaaaaa",
    *,
    team_limits: Limits,
    key_limits: Limits | None = None,
) -> Principal:
    return Principal(
        team=Team(name=team, limits=team_limits), key_id=key, key_limits=key_limits or Limits()
    )


def test_requests_per_minute_admit_exactly_the_limit(limiter: Harness) -> None:
    caller = principal(team_limits=Limits(rpm=10))
    outcomes: list[str | RateLimited] = []
    for _ in range(30):
        try:
            grant = limiter.admit(caller)
            outcomes.append(grant.headers["x-ratelimit-remaining-requests"])
        except RateLimited as exc:
            outcomes.append(exc)
    admitted = [o for o in outcomes if isinstance(o, str)]
    assert admitted == [str(n) for n in range(9, -1, -1)]
    refusal = outcomes[10]
    assert isinstance(refusal, RateLimited)
    assert refusal.status == 429
    assert 1 <= int(refusal.headers["Retry-After"]) <= 6  # one request refills in 6 s
    assert refusal.headers["x-ratelimit-limit-requests"] == "10"
    assert refusal.headers["x-ratelimit-remaining-requests"] == "0"


def test_tokens_are_reserved_then_settled_to_real_usage(limiter: Harness) -> None:
    caller = principal(team_limits=Limits(tpm=100_000))
    reserved_then_used = [(500, 120), (500, 499), (300, 0), (200, 260)]
    for reserved, used in reserved_then_used:
        limiter.settle(limiter.admit(caller, reserved), used)
    key = limiter_key("analytics", "team", "tpm")
    assert limiter.used(key) == pytest.approx(sum(u for _, u in reserved_then_used))


def test_a_request_larger_than_the_whole_budget_says_not_to_retry(limiter: Harness) -> None:
    with pytest.raises(RateLimited) as caught:
        limiter.admit(principal(team_limits=Limits(tpm=1000)), 5000)
    assert caught.value.headers["x-should-retry"] == "false"
    assert "Retry-After" not in caught.value.headers


def test_concurrency_is_a_set_of_leases(limiter: Harness) -> None:
    caller = principal(team_limits=Limits(concurrency=5))
    grants = [limiter.admit(caller) for _ in range(5)]
    with pytest.raises(RateLimited, match="concurrent"):
        limiter.admit(caller)
    limiter.settle(grants[0], 10)
    limiter.settle(grants[0], 10)  # settling twice releases once
    grants.append(limiter.admit(caller))
    with pytest.raises(RateLimited):
        limiter.admit(caller)


def test_all_or_nothing_across_team_and_key(limiter: Harness) -> None:
    tight_key = principal(key="bbbbbbbbbbbb", team_limits=Limits(rpm=5), key_limits=Limits(rpm=2))
    other_key = principal(key="cccccccccccc", team_limits=Limits(rpm=5))
    limiter.admit(tight_key)
    limiter.admit(tight_key)
    for _ in range(3):  # refused by the key's limit: the team's bucket is not debited
        with pytest.raises(RateLimited):
            limiter.admit(tight_key)
    remaining = [
        limiter.admit(other_key).headers["x-ratelimit-remaining-requests"] for _ in range(3)
    ]
    assert remaining == ["2", "1", "0"]


def test_teams_do_not_share_limits(limiter: Harness) -> None:
    limits = Limits(rpm=1)
    limiter.admit(principal("analytics", team_limits=limits))
    limiter.admit(principal("devtools", team_limits=limits))
    with pytest.raises(RateLimited):
        limiter.admit(principal("analytics", team_limits=limits))


def test_no_limits_means_no_round_trip_and_no_headers(limiter: Harness) -> None:
    grant = limiter.admit(principal(team_limits=Limits()))
    assert grant.headers == {}


def test_every_limiter_key_has_a_ttl(shared_limiter: Harness) -> None:
    limiter = shared_limiter
    caller = principal(
        team_limits=Limits(rpm=3, tpm=1000, concurrency=2), key_limits=Limits(rpm=3, concurrency=1)
    )
    limiter.settle(limiter.admit(caller, 100), 50)
    limiter.admit(caller, 100)
    for _ in range(3):
        with pytest.raises(RateLimited):
            limiter.admit(caller, 100)
    assert len(limiter.written()) == 5  # team rpm, tpm, concurrency; key rpm, concurrency
    ttls = limiter.ttls()  # a key without a TTL stays: reading now misses none
    assert all(ttl != -1 for ttl in ttls.values()), ttls


def _admit_together(limiter: Harness, callers: list[Principal]) -> list[Grant | RateLimited]:
    """Every caller's admission started in the same event-loop turn."""

    async def together() -> list[Grant | RateLimited]:
        replies = await asyncio.gather(
            *(limiter.limiter.admit(caller, 10) for caller in callers), return_exceptions=True
        )
        for reply in replies:
            if not isinstance(reply, Grant | RateLimited):
                raise reply
        return list(replies)  # type: ignore[arg-type]

    return limiter.loop.run(together())


def test_admissions_made_together_each_get_their_own_answer(limiter: Harness) -> None:
    teams = ["analytics", "devtools", "support"]  # three slots in a cluster
    callers = [principal(t, team_limits=Limits(concurrency=4)) for t in teams for _ in range(10)]
    outcomes = _admit_together(limiter, callers)
    for index, team in enumerate(teams):
        mine = outcomes[index * 10 : index * 10 + 10]
        assert sum(isinstance(o, Grant) for o in mine) == 4, team
        assert all(isinstance(o, RateLimited) for o in mine[4:]), team
    grants = [o for o in outcomes if isinstance(o, Grant)]

    async def settle_together() -> None:
        await asyncio.gather(*(limiter.limiter.settle(grant, 5) for grant in grants))

    limiter.loop.run(settle_together())
    again = _admit_together(limiter, callers[::10])  # the settlements freed the slots
    assert all(isinstance(o, Grant) for o in again)


def test_admissions_made_together_share_a_connection(shared_limiter: Harness) -> None:
    callers = [principal(team_limits=Limits(rpm=1000)) for _ in range(50)]
    client = _sync_client(shared_limiter)
    try:
        before = _connections_received(client)
        outcomes = _admit_together(shared_limiter, callers)
        opened = _connections_received(client) - before
    finally:
        client.close()
    assert all(isinstance(o, Grant) for o in outcomes)
    assert opened <= (3 if shared_limiter.cluster else 1)  # one pipeline per node at most


def test_a_script_lost_under_a_batch_is_loaded_again(shared_limiter: Harness) -> None:
    callers = [principal(team_limits=Limits(rpm=1000)) for _ in range(20)]
    _admit_together(shared_limiter, callers)  # loads the scripts
    client = _sync_client(shared_limiter)
    try:
        client.script_flush()
    finally:
        client.close()
    outcomes = _admit_together(shared_limiter, callers)
    assert all(isinstance(o, Grant) for o in outcomes)
    key = limiter_key("analytics", "team", "rpm")
    assert shared_limiter.used(key) == 40  # every admission debited once: none lost or doubled
    assert limiter_errors(shared_limiter) == 0


def _sync_client(limiter: Harness) -> Any:
    assert limiter.url is not None
    if limiter.cluster:
        return redis.RedisCluster.from_url(limiter.url)
    return redis.Redis.from_url(limiter.url)


def _connections_received(client: Any) -> int:
    if isinstance(client, redis.RedisCluster):  # one dict per node
        stats = client.info("stats", target_nodes=redis.RedisCluster.PRIMARIES)
        return sum(int(node["total_connections_received"]) for node in stats.values())
    return int(client.info("stats")["total_connections_received"])


def limiter_errors(limiter: Harness) -> float:
    assert isinstance(limiter.limiter, RedisLimiter)
    registry = limiter.limiter.metrics.registry
    return sum(
        sample.value
        for metric in registry.collect()
        if metric.name == "lgw_limiter_errors"
        for sample in metric.samples
        if sample.name.endswith("_total")
    )
