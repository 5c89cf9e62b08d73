"""Redis misbehaving under two replicas: killed, hung, restarted, scripts flushed, and a
replica killed while holding concurrency slots. Nothing hangs, nothing leaks, and every
limiter key still has a TTL afterwards."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import httpx
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from gateway.ratelimit.limits import limiter_key
from gateway.registry import Limits
from gateway.sim import SimConfig
from tests.integration.harness import LoopThread, Replica, eventually
from tests.integration.test_distributed import PEPPER, Fleet, chat, redis_ms, seeded
from tests.redis_servers import PATIENCE, Command, CommandLog, RedisProcess

# A Redis that is killed or restarted fails every call at once: no timeout is involved, so
# it is a generous one here (on a busy machine a call to a healthy Redis can take longer
# than the production 150 ms and would, correctly, fall back to the local limiter, which
# is not what these tests count). Only the hung Redis needs the short timeout.
PATIENT = {"redis_timeout": "10", "breaker_cooldown_seconds": "0.5"}
HASTY = {"redis_timeout": "0.15", "breaker_cooldown_seconds": "0.5"}
LEASE_SECONDS = 3  # renewed every second: a replica would have to stall 2 s to lose it
WRITES = ("HSET", "HINCRBYFLOAT", "ZADD")


def limiter_writes(commands: list[Command]) -> set[str]:
    """The limiter keys that the scripts wrote."""
    return {
        c.args[1]
        for c in commands
        if c.source == "lua" and c.args[0] in WRITES and c.args[1].startswith("lgw:{")
    }


def assert_no_limiter_key_lives_forever(url: str) -> None:
    """Every limiter key Redis holds has a TTL. (A key without one stays until deleted, so
    reading now misses none; a key that expired meanwhile had one.)"""
    client = redis.Redis.from_url(url)
    try:
        ttls = {key: client.pttl(key) for key in client.scan_iter("lgw:{*")}
    finally:
        client.close()
    assert all(ttl != -1 for ttl in ttls.values()), ttls


def lease_expiries(commands: list[Command], key: str) -> dict[str, float]:
    """Each lease of a lease set, and the expiry (Redis ms) last written for it."""
    expiries: dict[str, float] = {}
    for command in commands:
        if command.args[:2] != ("ZADD", key):
            continue
        rest = [a for a in command.args[2:] if a.upper() not in ("NX", "XX", "GT", "LT", "CH")]
        for score, member in zip(rest[::2], rest[1::2], strict=True):
            expiries[member] = float(score)
    return expiries


def limiter_counts(replica: Replica) -> dict[str, float]:
    """A replica's fail-open fallbacks and its limiter's Redis failures by reason."""
    counts: dict[str, float] = {}
    for family in text_string_to_metric_families(replica.metrics()):
        for sample in family.samples:
            if sample.name == "lgw_limiter_redis_errors_total":
                counts[sample.labels["reason"]] = sample.value
            elif sample.name == "lgw_limiter_fallback_total":
                counts[sample.labels["policy"]] = (
                    counts.get(sample.labels["policy"], 0) + sample.value
                )
    return counts


@pytest.fixture
def chaos_fleet(loop: LoopThread, redis_proc: RedisProcess) -> Iterator[Fleet]:
    yield from seeded(
        loop,
        redis_proc.url,
        SimConfig(),
        analytics=Limits(rpm=5),
        analytics_policy="fail_open",
        devtools=Limits(rpm=100),
        devtools_policy="fail_closed",
    )


@pytest.fixture
def replicas(chaos_fleet: Fleet) -> Iterator[list[Replica]]:
    fleet = [Replica(chaos_fleet.redis_url, PEPPER, **PATIENT) for _ in range(2)]
    yield fleet
    for replica in fleet:
        replica.stop()


@pytest.fixture
def hasty_replicas(chaos_fleet: Fleet) -> Iterator[list[Replica]]:
    fleet = [Replica(chaos_fleet.redis_url, PEPPER, **HASTY) for _ in range(2)]
    yield fleet
    for replica in fleet:
        replica.stop()


def _code(url: str, key: str, task: str = "sql") -> int:
    return chat(
        url, key, {"model": task, "messages": [{"role": "user", "content": "hi"}]}
    ).status_code


def test_redis_killed_fail_open_serves_with_a_local_cap_fail_closed_refuses(
    chaos_fleet: Fleet, replicas: list[Replica], redis_proc: RedisProcess
) -> None:
    analytics, devtools = chaos_fleet.keys["analytics"], chaos_fleet.keys["devtools"]
    with CommandLog(redis_proc.url) as log:
        assert _code(replicas[0].url, analytics) == 200
        assert limiter_writes(log.sync()), "the request should have left limiter keys"
    assert_no_limiter_key_lives_forever(redis_proc.url)
    redis_proc.kill()
    for replica in replicas:
        # fail_open: this replica's own limiter takes over with the team's limits
        codes = [_code(replica.url, analytics) for _ in range(8)]
        assert codes == [200] * 5 + [429] * 3
        # fail_closed: 503, and the key still authenticates (the registry is cached)
        refused = chat(
            replica.url,
            devtools,
            {"model": "code", "messages": [{"role": "user", "content": "hi"}]},
        )
        assert refused.status_code == 503
        assert refused.json()["error"]["code"] == "limiter_unavailable"
        metrics = replica.metrics()
        assert 'lgw_limiter_fallback_total{policy="fail_open",team="analytics"} 8.0' in metrics
        assert 'lgw_limiter_fallback_total{policy="fail_closed",team="devtools"} 1.0' in metrics
        assert 'lgw_ratelimit_rejections_total{limit="requests",team="analytics"} 3.0' in metrics


def test_a_hung_redis_costs_a_request_at_most_the_timeout(
    chaos_fleet: Fleet, hasty_replicas: list[Replica], redis_proc: RedisProcess
) -> None:
    """A Redis that hangs (connections open, nothing answers) never hangs a request: the
    call to it is given up after the timeout and the team's policy answers. What would
    hang instead is bounded by the client's own timeout, far beyond 150 ms; durations are
    not measured (a busy machine stretches them)."""
    replicas, analytics = hasty_replicas, chaos_fleet.keys["analytics"]
    with CommandLog(redis_proc.url) as log:  # first, Redis holds the team's bucket
        eventually(
            lambda: _code(replicas[0].url, analytics) == 200 and bool(limiter_writes(log.sync())),
            "an admission through Redis",
        )
    before = [limiter_counts(r) for r in replicas]
    redis_proc.pause()
    try:
        for replica in replicas * 2:
            assert _code(replica.url, analytics) == 200
    finally:
        redis_proc.resume()
    for replica, earlier in zip(replicas, before, strict=True):
        grew = {k: n - earlier.get(k, 0) for k, n in limiter_counts(replica).items()}
        assert grew["fail_open"] == 2  # both of its requests were answered by the policy
        # ... once the call to Redis timed out; no connection broke
        assert grew.get("timeout", 0) >= 1
        assert grew.get("connection", 0) == 0
    assert_no_limiter_key_lives_forever(redis_proc.url)


def test_enforcement_resumes_after_a_restart_or_a_script_flush(
    chaos_fleet: Fleet, replicas: list[Replica], redis_proc: RedisProcess
) -> None:
    analytics = chaos_fleet.keys["analytics"]
    assert _code(replicas[0].url, analytics) == 200
    redis_proc.kill()
    redis_proc.start()  # empty: no registry, no counters, no scripts
    with CommandLog(redis_proc.url) as log:
        codes = [_code(replicas[i % 2].url, analytics) for i in range(12)]
        assert 500 not in codes and 502 not in codes and 503 not in codes
        assert codes.count(200) <= 5 + 5  # at most one local window plus the fresh Redis one
        assert codes[-1] == 429
        client = redis.Redis.from_url(redis_proc.url)
        client.script_flush()
        client.close()
        codes = [_code(replicas[0].url, chaos_fleet.keys["devtools"], "code") for _ in range(3)]
        assert codes == [200, 200, 200]
        assert limiter_writes(log.sync()), "the requests should have left limiter keys"
    assert_no_limiter_key_lives_forever(redis_proc.url)


@pytest.fixture
def slot_fleet(loop: LoopThread, redis_proc: RedisProcess) -> Iterator[Fleet]:
    yield from seeded(loop, redis_proc.url, SimConfig(), analytics=Limits(concurrency=2))


# The first token, then silence until the client hangs up (or the idle timeout, 30 s).
HELD = {
    "model": "sql",
    "stream": True,
    "messages": [{"role": "user", "content": "sim-fault=stall then never finish"}],
}


def test_a_killed_replica_leaks_its_slots_only_until_the_lease_expires(
    slot_fleet: Fleet, redis_proc: RedisProcess
) -> None:
    """The slots a dead replica held come back when their leases expire: by Redis's clock,
    the leases it wrote end at most one lease after it died, and then another replica
    gets a slot. (Read from the commands Redis ran, not from a stopwatch.)"""
    settings = {**PATIENT, "limiter_lease_seconds": str(LEASE_SECONDS)}
    key, leases = slot_fleet.keys["analytics"], limiter_key("analytics", "team", "conc")
    with CommandLog(redis_proc.url) as log:
        doomed = Replica(slot_fleet.redis_url, PEPPER, **settings)
        survivor = Replica(slot_fleet.redis_url, PEPPER, **settings)
        held = contextlib.ExitStack()
        try:
            streams = [
                held.enter_context(
                    held.enter_context(httpx.Client(timeout=PATIENCE)).stream(
                        "POST",
                        f"{doomed.url}/v1/chat/completions",
                        json=HELD,
                        headers={"Authorization": f"Bearer {key}"},
                    )
                )
                for _ in range(2)
            ]
            assert [s.status_code for s in streams] == [200, 200]
            assert _code(survivor.url, key) == 429  # both slots are held on the other replica
            doomed.process.kill()
            doomed.process.wait(PATIENCE)
            before_death = lease_expiries(log.sync(), leases)
            died_at = log.synced_at * 1000  # Redis's clock, just after the kill
            eventually(lambda: _code(survivor.url, key) == 200, "a leaked slot coming back")
        finally:
            held.close()
            doomed.stop()
            survivor.stop()
    assert len(before_death) == 2  # the two streams' leases, never released
    assert max(before_death.values()) <= died_at + LEASE_SECONDS * 1000
    assert_no_limiter_key_lives_forever(redis_proc.url)


@pytest.fixture
def long_fleet(loop: LoopThread, redis_proc: RedisProcess) -> Iterator[Fleet]:
    yield from seeded(loop, redis_proc.url, SimConfig(), analytics=Limits(concurrency=1))


def test_a_stream_longer_than_the_lease_keeps_its_slot(long_fleet: Fleet) -> None:
    """Once Redis's clock is past the lease the stream was admitted with, the stream still
    holds its slot (it was renewed), and it gives the slot back when it ends."""
    settings = {**PATIENT, "limiter_lease_seconds": str(LEASE_SECONDS)}
    key, leases = long_fleet.keys["analytics"], limiter_key("analytics", "team", "conc")
    url = long_fleet.redis_url
    with CommandLog(url) as log:
        replica = Replica(url, PEPPER, **settings)
        try:
            with (
                httpx.Client(timeout=PATIENCE) as client,
                client.stream(
                    "POST",
                    f"{replica.url}/v1/chat/completions",
                    json=HELD,
                    headers={"Authorization": f"Bearer {key}"},
                ) as stream,
            ):
                lines = (line for line in stream.iter_lines() if line.startswith("data: "))
                next(lines)  # the first token: the stream is running
                ((lease, held_until),) = lease_expiries(log.sync(), leases).items()
                eventually(lambda: redis_ms(url) > held_until, "the lease it was given ending")
                assert _code(replica.url, key) == 429  # the slot was renewed, not lost
        finally:
            replica.stop()
        commands = log.sync()
    assert ("ZADD", leases, "XX") in {c.args[:3] for c in commands if lease in c.args}
    assert ("ZREM", leases, lease) in {c.args for c in commands}  # released at its end
    assert_no_limiter_key_lives_forever(url)
