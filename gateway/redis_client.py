"""Redis clients with the gateway's timeouts (redis-py's defaults would stall a request
for seconds: 5 s socket timeouts and retries)."""

from __future__ import annotations

from redis.asyncio import BlockingConnectionPool, Redis, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from gateway.settings import Settings


def connect(settings: Settings, timeout: float | None) -> Redis | RedisCluster:
    """A client for ``LGW_REDIS_URL``: no retries, ``timeout`` on every socket operation
    (``None``: block, for pub/sub), a bounded pool that waits at most ``timeout``."""
    assert settings.redis_url is not None
    connect_timeout = timeout or settings.redis_timeout * 10
    if settings.redis_cluster:
        return RedisCluster.from_url(
            settings.redis_url,
            decode_responses=True,
            socket_timeout=timeout,
            socket_connect_timeout=connect_timeout,
            retry=Retry(NoBackoff(), 0),
            max_connections=128,
        )
    pool = BlockingConnectionPool.from_url(
        settings.redis_url,
        decode_responses=True,
        socket_timeout=timeout,
        socket_connect_timeout=connect_timeout,
        max_connections=128,
        timeout=connect_timeout,
        retry=Retry(NoBackoff(), 0),
    )
    return Redis.from_pool(pool)  # the client owns (and closes) its pool
