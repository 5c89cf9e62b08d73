"""Two gateway replicas sharing one real Redis: limits hold across them exactly, and a
registry change reaches both."""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from gateway import keys
from gateway.ratelimit.limits import limiter_key
from gateway.redis_client import connect
from gateway.registry import ApiKey, Limits, Registry
from gateway.schemas import ChatRequest
from gateway.settings import Settings
from gateway.sim import SimConfig, Simulator
from gateway.store.files import load_policies
from gateway.store.redis_store import RedisStore
from tests.integration.harness import Demo, LoopThread, Replica, eventually
from tests.redis_servers import CommandLog

EXAMPLES = Path(__file__).resolve().parents[2] / "policies" / "examples"
PEPPER = "distributed-test-pepper"
# These tests are about limits holding exactly, not about a slow Redis: on a loaded 2-core
# CI machine an admission can exceed the production 150 ms timeout, which would (correctly)
# switch to the fail-open local limiter. A generous bound, reached only by a hang.
EXACT = {"redis_timeout": "10"}
HELLO = {"model": "sql", "messages": [{"role": "user", "content": "hello there"}]}


@dataclass
class Fleet:
    """A simulator, a Redis, the registry saved in it, and a key per team."""

    sim: Simulator
    redis_url: str
    keys: dict[str, str]
    loop: LoopThread

    def save(self, registry: Registry) -> Registry:
        async def save() -> Registry:
            store = RedisStore(connect(Settings(redis_url=self.redis_url), 5.0))
            try:
                return await store.save(registry)
            finally:
                await store.close()

        return self.loop.run(save())


def seeded(
    loop: LoopThread, redis_url: str, sim_config: SimConfig, **limits: Limits | str
) -> Iterator[Fleet]:
    """Save the example deployment (with ``limits`` per team) to Redis, pointing at a sim."""
    registry = load_policies(EXAMPLES)
    pool = registry.pools[0]
    sim_config.model_id, sim_config.lora_adapters = pool.base_model, ",".join(pool.adapters)
    sim = Simulator(sim_config)
    url = loop.run(sim.start())
    minted: dict[str, str] = {}
    teams = []
    for team in registry.teams:
        new = keys.mint(PEPPER.encode())
        minted[team.name] = new.plaintext
        update: dict[str, Any] = {"keys": (ApiKey(id=new.id, name="t", hash=new.hash),)}
        if isinstance(limits.get(team.name), Limits):
            update["limits"] = limits[team.name]
        if isinstance(limits.get(f"{team.name}_policy"), str):
            update["on_limiter_failure"] = limits[f"{team.name}_policy"]
        teams.append(team.model_copy(update=update))
    registry = registry.model_copy(
        update={"teams": tuple(teams), "pools": (pool.model_copy(update={"endpoints": (url,)}),)}
    )
    fleet = Fleet(sim, redis_url, minted, loop)
    fleet.save(registry)
    try:
        yield fleet
    finally:
        loop.run(sim.stop())


def redis_ms(url: str) -> int:
    """Redis's clock, in ms: the clock the limiter's scripts refill their buckets by."""
    client = redis.Redis.from_url(url)
    try:
        seconds, micros = client.time()
    finally:
        client.close()
    return int(seconds) * 1000 + int(micros) // 1000


def held_exactly(statuses: list[int], rpm: int, run_ms: int) -> bool:
    """Assert that a requests-per-minute bucket admitted exactly what it held: ``rpm`` at
    once, then only what it regained while the requests ran (one per 60/rpm s of Redis's
    clock). True when the run was shorter than that (the usual case), so that nothing was
    regained and the answers are exactly ``rpm`` admissions then refusals."""
    regained = run_ms * rpm // 60_000
    assert statuses[:rpm] == [200] * rpm
    assert set(statuses[rpm:]) <= {200, 429}
    assert statuses.count(200) <= rpm + regained
    return regained == 0


def chat(url: str, key: str, body: dict[str, Any] | None = None) -> httpx.Response:
    return httpx.post(
        f"{url}/v1/chat/completions",
        json=body or HELLO,
        timeout=20,
        headers={"Authorization": f"Bearer {key}"},
    )


@pytest.fixture
def rpm_fleet(loop: LoopThread, redis_url: str) -> Iterator[Fleet]:
    yield from seeded(loop, redis_url, SimConfig(), analytics=Limits(rpm=10))


def test_requests_per_minute_hold_exactly_across_two_replicas(rpm_fleet: Fleet) -> None:
    replicas = [
        Replica(rpm_fleet.redis_url, PEPPER, **EXACT),
        Replica(rpm_fleet.redis_url, PEPPER, **EXACT),
    ]
    try:
        key = rpm_fleet.keys["analytics"]
        started = redis_ms(rpm_fleet.redis_url)
        answers = [chat(replicas[i % 2].url, key) for i in range(30)]
        run_ms = redis_ms(rpm_fleet.redis_url) - started
    finally:
        for replica in replicas:
            replica.stop()
    statuses = [a.status_code for a in answers]
    exact = held_exactly(statuses, 10, run_ms)
    refused = answers[statuses.index(429)]
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"
    assert 1 <= int(refused.headers["retry-after"]) <= 6
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"
    assert answers[0].headers["x-ratelimit-limit-requests"] == "10"
    if exact:  # nothing was regained during the run: the answers are exactly these
        assert statuses == [200] * 10 + [429] * 20
        assert [a.headers["x-ratelimit-remaining-requests"] for a in answers[:10]] == [
            str(n) for n in range(9, -1, -1)
        ]


@pytest.fixture
def concurrency_fleet(loop: LoopThread, redis_url: str) -> Iterator[Fleet]:
    yield from seeded(loop, redis_url, SimConfig(ttft=0.3), analytics=Limits(concurrency=5))


def test_concurrency_never_exceeds_the_limit_across_replicas(concurrency_fleet: Fleet) -> None:
    replicas = [
        Replica(concurrency_fleet.redis_url, PEPPER, **EXACT),
        Replica(concurrency_fleet.redis_url, PEPPER, **EXACT),
    ]
    key = concurrency_fleet.keys["analytics"]

    async def burst() -> list[int]:
        limits = httpx.Limits(max_connections=200)
        async with httpx.AsyncClient(timeout=30, limits=limits) as client:
            answers = await asyncio.gather(
                *(
                    client.post(
                        f"{replicas[i % 2].url}/v1/chat/completions",
                        json=HELLO,
                        headers={"Authorization": f"Bearer {key}"},
                    )
                    for i in range(200)
                )
            )
        return [a.status_code for a in answers]

    try:
        statuses = asyncio.run(burst())
    finally:
        for replica in replicas:
            replica.stop()
    assert concurrency_fleet.sim.peak_inflight <= 5
    assert set(statuses) == {200, 429}
    assert statuses.count(200) >= 5


@pytest.fixture
def tpm_fleet(loop: LoopThread, redis_url: str) -> Iterator[Fleet]:
    yield from seeded(loop, redis_url, SimConfig(), analytics=Limits(tpm=1_000_000))


def test_token_debits_equal_real_usage_partial_streams_included(tpm_fleet: Fleet) -> None:
    """Every debit and refund of the team's tokens-per-minute bucket, summed, is the real
    usage. Read from the commands the scripts ran (MONITOR), not from the bucket: a bucket
    expires about a second after it would be full again, which with this limit is at once."""
    bucket = limiter_key("analytics", "team", "tpm")
    with CommandLog(tpm_fleet.redis_url) as log:  # open before any request: sees every debit
        replicas = [
            Replica(tpm_fleet.redis_url, PEPPER, **EXACT),
            Replica(tpm_fleet.redis_url, PEPPER, **EXACT),
        ]
        key = tpm_fleet.keys["analytics"]
        expected = 0
        try:
            for i, replica in enumerate(replicas * 2):
                answer = chat(replica.url, key, {**HELLO, "max_tokens": 3 + i}).json()
                expected += answer["usage"]["total_tokens"]
                streamed = chat(
                    replica.url,
                    key,
                    {**HELLO, "stream": True, "stream_options": {"include_usage": True}},
                )
                usage = json.loads(streamed.text.split("data: ")[-2])["usage"]
                expected += usage["total_tokens"]
            cut = {
                "model": "sql",
                "stream": True,
                "messages": [{"role": "user", "content": "sim-fault=error-mid-stream now"}],
            }
            for replica in replicas:  # the backend fails after two tokens: no usage reported
                assert '"upstream_error"' in chat(replica.url, key, cut).text
                expected += ChatRequest.model_validate(cut).prompt_tokens_estimate + 2
        finally:
            for replica in replicas:
                replica.stop()  # settlement finishes before a replica exits
        commands = log.sync()  # everything Redis ran before the replicas were gone
    debits = [Decimal(c.args[3]) for c in commands if c.args[:3] == ("HINCRBYFLOAT", bucket, "u")]
    assert len(debits) == 2 * 10  # an admission and a settlement for each of 10 requests
    assert sum(debits) == expected


@pytest.fixture
def plain_fleet(loop: LoopThread, redis_url: str) -> Iterator[Fleet]:
    yield from seeded(loop, redis_url, SimConfig())


def test_a_revoked_key_is_refused_by_every_replica(plain_fleet: Fleet) -> None:
    replicas = [Replica(plain_fleet.redis_url, PEPPER), Replica(plain_fleet.redis_url, PEPPER)]
    key = plain_fleet.keys["analytics"]
    try:
        assert [chat(r.url, key).status_code for r in replicas] == [200, 200]
        registry = plain_fleet.loop.run(_load(plain_fleet.redis_url))
        teams = tuple(
            t.model_copy(update={"keys": ()}) if t.name == "analytics" else t
            for t in registry.teams
        )
        plain_fleet.save(registry.model_copy(update={"teams": teams}))
        for replica in replicas:
            eventually(partial(_refuses, replica.url, key), "the revocation reaching a replica")
    finally:
        for replica in replicas:
            replica.stop()


def _refuses(url: str, key: str) -> bool:
    return chat(url, key).status_code == 401


async def _load(url: str) -> Registry:
    store = RedisStore(connect(Settings(redis_url=url), 5.0))
    try:
        return await store.load()
    finally:
        await store.close()


def test_the_demo_seeds_redis_and_a_serve_replica_joins_with_shared_limits(
    redis_url: str, tmp_path: Path
) -> None:
    policies = tmp_path / "policies.yaml"
    example = (EXAMPLES / "deployment.yaml").read_text()
    policies.write_text(
        example.replace(  # analytics: 10 requests per minute
            "  - name: analytics\n    limits: {rpm: 600,",
            "  - name: analytics\n    limits: {rpm: 10,",
        )
    )
    env = {"LGW_REDIS_URL": redis_url, "LGW_KEY_PEPPER": PEPPER, "LGW_REDIS_TIMEOUT": "10"}
    demo = Demo(tmp_path / "keys.json", policies, **env)
    replica = None
    try:
        replica = Replica(redis_url, PEPPER, **EXACT)
        key = demo.keys["analytics"]
        started = redis_ms(redis_url)
        answers = [chat((demo.url, replica.url)[i % 2], key) for i in range(30)]
        run_ms = redis_ms(redis_url) - started
        assert (
            answers[0]
            .json()["choices"][0]["message"]["content"]
            .startswith("[google-cloud-partnership/gemma-2-2b-it-lora-sql]")
        )
        if held_exactly([a.status_code for a in answers], 10, run_ms):
            assert [a.status_code for a in answers] == [200] * 10 + [429] * 20
            assert 1 <= int(answers[10].headers["retry-after"]) <= 6
    finally:
        if replica is not None:
            replica.stop()
        demo.process.send_signal(signal.SIGTERM)
        demo.process.communicate(timeout=30)
