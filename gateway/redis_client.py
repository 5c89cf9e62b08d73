"""Redis clients with the gateway's timeouts (redis-py's defaults would stall a request
for seconds: 5 s socket timeouts and retries), and the layout of the gateway's keys."""

from __future__ import annotations

from functools import lru_cache

from redis.asyncio import BlockingConnectionPool, Redis, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from gateway.errors import StartRefused
from gateway.settings import Settings


def connect(settings: Settings, timeout: float | None) -> Redis | RedisCluster:
    """A client for ``LGW_REDIS_URL``: no retries, ``timeout`` on every socket operation
    (``None``: block, for pub/sub), a bounded pool that waits at most ``timeout``."""
    assert settings.redis_url is not None
    if not settings.redis_url.startswith(("redis://", "rediss://", "unix://")):
        raise StartRefused(  # the URL itself is not echoed: it may carry a password
            "LGW_REDIS_URL is not a Redis URL (redis://, rediss:// or unix://)"
        )
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


@lru_cache(maxsize=16384)  # a few keys per team and key: computed once, not per request
def team_key(team: str, *parts: str) -> str:
    """``lgw:{<team>}:<parts>``: the hash tag keeps one team's keys in one cluster slot.

    Every part is escaped, so two different (team, parts) can never share a key.
    """
    escaped = ":".join(_escape(p) for p in parts)
    return f"lgw:{{{_escape(team)}}}:{escaped}"


def _escape(part: str) -> str:
    safe = "abcdefghijklmnopqrstuvwxyz0123456789._-"
    return "".join(c if c in safe else f"%{ord(c):x}." for c in part)
