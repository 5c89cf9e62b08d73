"""The registry store contract, for the in-memory store, Redis and Redis Cluster; and the
cache that keeps every replica's snapshot current."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from gateway.redis_client import connect
from gateway.registry import Registry
from gateway.settings import Settings
from gateway.store.base import InMemoryStore, RegistryStore, VersionConflict
from gateway.store.cache import RegistryCache
from gateway.store.files import load_policies
from gateway.store.redis_store import RedisStore
from tests.integration.harness import LoopThread

EXAMPLES = Path(__file__).resolve().parents[2] / "policies" / "examples"


@pytest.fixture(params=["memory", "redis", "cluster"])
def store(request: pytest.FixtureRequest, loop: LoopThread) -> Iterator[RegistryStore]:
    if request.param == "memory":
        yield InMemoryStore()
        return
    yield from _redis_store(request, loop, cluster=request.param == "cluster")


@pytest.fixture(params=["redis", "cluster"])
def shared_store(request: pytest.FixtureRequest, loop: LoopThread) -> Iterator[RedisStore]:
    yield from _redis_store(request, loop, cluster=request.param == "cluster")


def _redis_store(
    request: pytest.FixtureRequest, loop: LoopThread, cluster: bool
) -> Iterator[RedisStore]:
    url = (
        request.getfixturevalue("cluster_urls")[0]
        if cluster
        else request.getfixturevalue("redis_url")
    )
    settings = Settings(redis_url=url, redis_cluster=cluster, key_pepper=SecretStr("x"))

    async def build() -> RedisStore:
        client = connect(settings, 5.0)
        await client.delete("lgw:registry")
        return RedisStore(client)

    built = loop.run(build())
    yield built
    loop.run(built.close())


def test_an_empty_store_holds_version_zero(store: RegistryStore, loop: LoopThread) -> None:
    assert loop.run(store.version()) == 0
    assert loop.run(store.load()) == Registry()


def test_saves_are_versioned_and_round_trip(store: RegistryStore, loop: LoopThread) -> None:
    registry = load_policies(EXAMPLES)
    first = loop.run(store.save(registry))
    second = loop.run(store.save(registry))
    assert (first.version, second.version) == (1, 2)
    assert loop.run(store.version()) == 2
    assert loop.run(store.load()) == second
    assert second.model_copy(update={"version": 0}) == registry


def test_a_stale_save_is_refused(store: RegistryStore, loop: LoopThread) -> None:
    registry = load_policies(EXAMPLES)
    loop.run(store.save(registry, expected_version=0))
    with pytest.raises(VersionConflict) as caught:
        loop.run(store.save(registry, expected_version=0))
    assert caught.value.current == 1


def test_a_cache_sees_a_change_announced_by_another_replica(
    shared_store: RedisStore, loop: LoopThread
) -> None:
    cache = RegistryCache(shared_store)

    async def scenario() -> int:
        await cache.refresh()
        cache.watch(poll_seconds=60)  # a long poll: only the announcement explains a reload
        await asyncio.wait_for(cache.listening.wait(), 10)
        saved = await shared_store.save(load_policies(EXAMPLES))
        return await _reloaded(cache, saved.version)

    try:
        assert loop.run(asyncio.wait_for(scenario(), 10)) == 1
    finally:
        loop.run(cache.stop())


def test_a_cache_catches_up_by_polling_without_announcements(loop: LoopThread) -> None:
    store = InMemoryStore()
    cache = RegistryCache(store)

    async def scenario() -> int:
        await cache.refresh()
        cache.watch(poll_seconds=0.05)
        saved = await store.save(load_policies(EXAMPLES))
        return await _reloaded(cache, saved.version)

    try:
        assert loop.run(asyncio.wait_for(scenario(), 10)) == 1
    finally:
        loop.run(cache.stop())


async def _reloaded(cache: RegistryCache, version: int) -> int:
    """Wait (the caller bounds it) until the cache holds ``version``; returns it."""
    while cache.current().version != version:
        await asyncio.sleep(0.01)  # polling local state
    return cache.current().version
