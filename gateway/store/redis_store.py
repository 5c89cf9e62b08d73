"""The registry in Redis: one versioned document, changed atomically, announced on pub/sub.

Layout (docs/design.md, Redis keys): ``lgw:registry`` is a hash ``{version, doc}``; a save
bumps the version and publishes it on ``lgw:registry:changed`` in the same script, so a
replica that sees the message and loads will see that version or a later one. One key
means one Redis Cluster slot, and the document is small (it is read whole anyway).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from redis.asyncio import Redis, RedisCluster

from gateway.registry.models import Registry
from gateway.store.base import VersionConflict

REGISTRY_KEY = "lgw:registry"
CHANNEL = "lgw:registry:changed"

_SAVE = """
local current = tonumber(redis.call('HGET', KEYS[1], 'version') or '0')
if ARGV[2] ~= '' and tonumber(ARGV[2]) ~= current then
  return -1 - current
end
local version = current + 1
redis.call('HSET', KEYS[1], 'version', version, 'doc', ARGV[1])
redis.call('PUBLISH', ARGV[3], version)
return version
"""


class RedisStore:
    """``RegistryStore`` over Redis (or Redis Cluster)."""

    def __init__(self, redis: Redis | RedisCluster) -> None:
        self._redis = redis
        self._save = redis.register_script(_SAVE)

    async def load(self) -> Registry:
        version, doc = await self._redis.hmget(REGISTRY_KEY, ["version", "doc"])
        if doc is None or version is None:
            return Registry()
        return Registry.model_validate_json(doc).model_copy(update={"version": int(version)})

    async def version(self) -> int:
        version = await self._redis.hget(REGISTRY_KEY, "version")
        return int(version or 0)

    async def save(self, registry: Registry, expected_version: int | None = None) -> Registry:
        """Store ``registry`` as the next version; with ``expected_version``, only if the
        stored one is still that (``VersionConflict`` otherwise)."""
        doc = registry.model_dump_json(exclude={"version"})
        expected = "" if expected_version is None else str(expected_version)
        version = int(await self._save(keys=[REGISTRY_KEY], args=[doc, expected, CHANNEL]))
        if version < 0:
            raise VersionConflict(-1 - version)
        return registry.model_copy(update={"version": version})

    @property
    def redis(self) -> Redis | RedisCluster:
        """The client (shared with the audit log)."""
        return self._redis

    async def close(self) -> None:
        """Close the client and its connections."""
        await self._redis.aclose()

    async def changes(self) -> AsyncIterator[int]:
        """Versions announced by saves, as they happen; first, once subscribed, the current
        version (so whatever changed before the subscription is not missed)."""
        pubsub = self._redis.pubsub()
        await pubsub.subscribe(CHANNEL)
        try:
            yield await self.version()
            async for message in pubsub.listen():
                if message.get("type") == "message":
                    yield int(message["data"])
        finally:
            await pubsub.aclose()  # type: ignore[no-untyped-call]
