"""Everything the two planes share, built once from the settings, fixed once built.

The one place that decides between Redis and memory, from ``LGW_REDIS_URL`` alone: with
it the limiter, the usage tally, the audit log (``redis``) and, unless a store is given
(tests and the demo bring their own), the registry live in Redis, shared by every
replica, and the registry is watched for changes; without it, everything lives in this
process.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass, field

from redis.asyncio import Redis, RedisCluster

from gateway import keys
from gateway.accounting import Accounting, Telemetry, UsageTally
from gateway.accounting.tracing import otlp_provider
from gateway.errors import StartRefused
from gateway.metrics import Metrics
from gateway.ratelimit import Limiter, MemoryLimiter
from gateway.ratelimit.redis_limiter import Breaker, RedisLimiter
from gateway.redis_client import connect
from gateway.registry import Snapshot
from gateway.settings import Settings
from gateway.store.base import InMemoryStore, RegistryStore
from gateway.store.cache import RegistryCache
from gateway.store.redis_store import RedisStore
from gateway.upstream import Upstream

log = logging.getLogger("gateway")


@dataclass(frozen=True, slots=True)
class Services:
    """Settings, the registry cache, the limiter, the upstream, the accounting."""

    settings: Settings
    registry: RegistryCache
    limiter: Limiter
    upstream: Upstream
    accounting: Accounting
    metrics: Metrics
    rng: random.Random
    redis: Redis | RedisCluster | None
    """The shared Redis (``LGW_REDIS_URL``), or ``None``: everything is in this process."""
    pepper: bytes = field(repr=False)
    """The key-hash pepper (empty when no key exists, so nothing can match)."""
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    """Set once the registry is loaded and the upstream pool is open."""

    async def preflight(self) -> None:
        """Load the registry and refuse to go on (``StartRefused``) when the keys it holds
        could never match: no pepper, or another pepper than the one that hashed them."""
        registry = (await self.registry.refresh()).registry
        if registry.has_keys and not self.pepper:
            raise StartRefused(
                "the registry holds API keys: set LGW_KEY_PEPPER to the secret they were "
                "hashed with"
            )
        stored = registry.pepper_fingerprint
        if registry.has_keys and stored is None:
            log.warning(
                "the registry's keys record no pepper_fingerprint: a wrong LGW_KEY_PEPPER "
                "would refuse every key unnoticed (add the line `lora-gateway keys new` "
                "prints to the policy files)"
            )
        if registry.has_keys and stored is not None and stored != keys.fingerprint(self.pepper):
            raise StartRefused(
                "LGW_KEY_PEPPER is not the pepper the stored API keys were hashed with "
                f"(fingerprint {keys.fingerprint(self.pepper)}, the keys' {stored}): every "
                "key would be refused; start with the deployment's pepper"
            )

    async def start(self) -> None:
        """Load the registry, open the upstream pool, start the limiter and the tally."""
        if self.registry.snapshot is None:  # (the CLI runs the preflight before serving)
            await self.preflight()
        await self.upstream.start()
        await self.accounting.start()
        await self.limiter.start()
        if self.redis is not None:
            self.registry.watch(self.settings.registry_poll_seconds)
        self.ready.set()

    async def stop(self) -> None:
        """Stop background work and close connections."""
        self.ready.clear()
        await self.accounting.close()  # before the shared client closes: it flushes there
        await self.registry.stop()
        await self.limiter.close()
        await self.upstream.close()
        if self.redis is not None and not isinstance(self.registry.store, RedisStore):
            await self.redis.aclose()  # (a Redis store closes its client with the registry)


def build_services(
    settings: Settings, store: RegistryStore | None = None, telemetry: Telemetry | None = None
) -> Services:
    """The services for ``settings``: Redis-backed when ``LGW_REDIS_URL`` is set."""
    redis = connect(settings, None) if settings.redis_url else None
    if store is None:
        store = RedisStore(redis) if redis is not None else InMemoryStore()
    metrics, rng = Metrics(), random.Random()  # noqa: S311 - load spreading, not secrets
    registry = _exported(RegistryCache(store), metrics)
    limiter = _limiter(settings, metrics, shared=redis is not None)
    usage = UsageTally(redis)
    if telemetry is None:
        telemetry = Telemetry(otlp_provider()) if settings.otlp_endpoint else Telemetry()
    secret = settings.key_pepper
    return Services(
        settings=settings,
        registry=registry,
        limiter=limiter,
        upstream=Upstream(settings, registry, rng, metrics),
        accounting=Accounting(metrics, usage, telemetry, limiter),
        metrics=metrics,
        rng=rng,
        redis=redis,
        pepper=secret.get_secret_value().encode() if secret else b"",
    )


def _limiter(settings: Settings, metrics: Metrics, shared: bool) -> Limiter:
    """The limiter on its own connection: admission's short timeout is not the store's."""
    if not shared:
        return MemoryLimiter(metrics)
    return RedisLimiter(
        connect(settings, settings.redis_timeout),
        lease_seconds=settings.limiter_lease_seconds,
        breaker=Breaker(settings.breaker_failures, settings.breaker_cooldown_seconds),
        metrics=metrics,
    )


def _exported(cache: RegistryCache, metrics: Metrics) -> RegistryCache:
    """``cache``, its version and age read when ``/metrics`` is scraped, and each pool's
    GPU-hour price published on every load (for the dashboards' cost apportioning)."""
    metrics.registry_version.set_function(
        lambda: float(cache.snapshot.version) if cache.snapshot else -1.0
    )
    metrics.registry_age.set_function(lambda: time.monotonic() - cache.checked_at)

    def export_pool_prices(snapshot: Snapshot) -> None:
        for pool in snapshot.registry.pools:
            if pool.gpu_hour_price is not None:
                metrics.gpu_hour_price.labels(pool.name).set(pool.gpu_hour_price)

    cache.on_load.append(export_pool_prices)
    return cache
