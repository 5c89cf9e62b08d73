"""Session-wide fixtures: the Redis servers tests talk to over real connections."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from tests.redis_servers import RedisProcess, redis_cluster, shared_redis


@pytest.fixture(scope="session")
def redis_server_url() -> Iterator[str]:
    """A Redis for the whole session (REDIS_URL, testcontainers, or a redis-server)."""
    with shared_redis() as url:
        yield url


@pytest.fixture
def redis_url(redis_server_url: str) -> str:
    """The session's Redis, emptied for this test (REDIS_URL must be disposable)."""
    client = redis.Redis.from_url(redis_server_url)
    client.flushdb()
    client.close()
    return redis_server_url


@pytest.fixture
def redis_proc() -> Iterator[RedisProcess]:
    """A Redis of this test's own, to kill, pause and restart."""
    server = RedisProcess()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def cluster_urls() -> Iterator[list[str]]:
    """A three-node Redis Cluster on free ports, for the whole session."""
    with redis_cluster() as urls:
        yield urls
