"""Redis misbehaving under two replicas: killed, hung, restarted, scripts flushed, and a
replica killed while holding concurrency slots. Nothing hangs, nothing leaks, and every
limiter key still has a TTL afterwards."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

import httpx
import pytest
import redis

from gateway.registry import Limits
from gateway.sim import SimConfig
from tests.integration.harness import LoopThread, Replica
from tests.integration.test_distributed import PEPPER, Fleet, chat, seeded
from tests.redis_servers import RedisProcess

FAST_FAILURE = {
    "redis_timeout": "0.15",
    "breaker_cooldown_seconds": "0.5",
    "limiter_lease_seconds": "2",
}


def assert_every_limiter_key_has_a_ttl(url: str, written: bool = True) -> None:
    client = redis.Redis.from_url(url)
    try:
        ttls = {key: client.pttl(key) for key in client.scan_iter("lgw:{*")}
    finally:
        client.close()
    assert ttls or not written, "the test should have left limiter keys"
    assert all(ttl > 0 for ttl in ttls.values()), ttls


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
    fleet = [Replica(chaos_fleet.redis_url, PEPPER, **FAST_FAILURE) for _ in range(2)]
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
    assert _code(replicas[0].url, analytics) == 200
    assert_every_limiter_key_has_a_ttl(redis_proc.url)
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
    chaos_fleet: Fleet, replicas: list[Replica], redis_proc: RedisProcess
) -> None:
    analytics = chaos_fleet.keys["analytics"]
    assert _code(replicas[0].url, analytics) == 200
    redis_proc.pause()
    try:
        durations = []
        for replica in replicas * 2:
            started = time.monotonic()
            assert _code(replica.url, analytics) == 200
            durations.append(time.monotonic() - started)
    finally:
        redis_proc.resume()
    # 150 ms timeout, then the breaker answers at once; a generous margin for CI, far
    # below redis-py's defaults (5 s timeouts, retries).
    assert max(durations) < 2.0, durations
    assert_every_limiter_key_has_a_ttl(redis_proc.url)


def test_enforcement_resumes_after_a_restart_or_a_script_flush(
    chaos_fleet: Fleet, replicas: list[Replica], redis_proc: RedisProcess
) -> None:
    analytics = chaos_fleet.keys["analytics"]
    assert _code(replicas[0].url, analytics) == 200
    redis_proc.kill()
    redis_proc.start()  # empty: no registry, no counters, no scripts
    codes = [_code(replicas[i % 2].url, analytics) for i in range(12)]
    assert 500 not in codes and 502 not in codes and 503 not in codes
    assert codes.count(200) <= 5 + 5  # at most one local window plus the fresh Redis one
    assert codes[-1] == 429
    client = redis.Redis.from_url(redis_proc.url)
    client.script_flush()
    client.close()
    codes = [_code(replicas[0].url, chaos_fleet.keys["devtools"], "code") for _ in range(3)]
    assert codes == [200, 200, 200]
    assert_every_limiter_key_has_a_ttl(redis_proc.url)


@pytest.fixture
def slot_fleet(loop: LoopThread, redis_proc: RedisProcess) -> Iterator[Fleet]:
    yield from seeded(loop, redis_proc.url, SimConfig(itl=1.0), analytics=Limits(concurrency=2))


def test_a_killed_replica_leaks_its_slots_only_until_the_lease_expires(
    slot_fleet: Fleet, redis_proc: RedisProcess
) -> None:
    doomed = Replica(slot_fleet.redis_url, PEPPER, **FAST_FAILURE)
    survivor = Replica(slot_fleet.redis_url, PEPPER, **FAST_FAILURE)
    key = slot_fleet.keys["analytics"]
    long_stream = {
        "model": "sql",
        "stream": True,
        "messages": [
            {"role": "user", "content": "a long answer with very many words to stream slowly"}
        ],
    }
    held = contextlib.ExitStack()
    try:
        streams = [
            held.enter_context(
                held.enter_context(httpx.Client(timeout=30)).stream(
                    "POST",
                    f"{doomed.url}/v1/chat/completions",
                    json=long_stream,
                    headers={"Authorization": f"Bearer {key}"},
                )
            )
            for _ in range(2)
        ]
        assert [s.status_code for s in streams] == [200, 200]
        assert _code(survivor.url, key) == 429  # both slots are held on the other replica
        doomed.process.kill()
        killed_at = time.monotonic()
        while True:
            attempt_at = time.monotonic()
            if _code(survivor.url, key) == 200:
                break
            assert attempt_at - killed_at < 10, "the slots never came back"
        assert attempt_at - killed_at < 2 + 1.5  # the 2 s lease, plus a margin
    finally:
        held.close()
        doomed.stop()
        survivor.stop()
    assert_every_limiter_key_has_a_ttl(redis_proc.url)


@pytest.fixture
def long_fleet(loop: LoopThread, redis_proc: RedisProcess) -> Iterator[Fleet]:
    yield from seeded(loop, redis_proc.url, SimConfig(itl=0.5), analytics=Limits(concurrency=1))


def test_a_stream_longer_than_the_lease_keeps_its_slot(long_fleet: Fleet) -> None:
    replica = Replica(long_fleet.redis_url, PEPPER, limiter_lease_seconds="1")
    key = long_fleet.keys["analytics"]
    body = {
        "model": "sql",
        "stream": True,
        "messages": [{"role": "user", "content": "one two three four five six seven eight"}],
    }
    try:
        with (
            httpx.Client(timeout=30) as client,
            client.stream(
                "POST",
                f"{replica.url}/v1/chat/completions",
                json=body,
                headers={"Authorization": f"Bearer {key}"},
            ) as stream,
        ):
            lines = (line for line in stream.iter_lines() if line.startswith("data: "))
            for _ in range(4):  # four tokens at 0.5 s: well past the 1 s lease
                next(lines)
            assert _code(replica.url, key) == 429  # the slot was renewed, not lost
    finally:
        replica.stop()
    assert_every_limiter_key_has_a_ttl(long_fleet.redis_url, written=False)  # all released
