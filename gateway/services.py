"""Everything the two planes share, built once from the settings and fixed after start.

The one place that decides between Redis and memory: with ``LGW_REDIS_URL`` the
registry, the limiter and the usage tally live in Redis, shared by every replica;
without it (or with a store given, as tests and the demo do) they live in this process.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field

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
        if registry.has_keys and stored is not None and stored != keys.fingerprint(self.pepper):
            raise StartRefused(
                "LGW_KEY_PEPPER is not the pepper the stored API keys were hashed with "
                f"(fingerprint {keys.fingerprint(self.pepper)}, the keys' {stored}): every "
                "key would be refused; start with the deployment's pepper"
            )

    async def start(self) -> None:
        """Load the registry, open the upstream pool, start the limiter and the tally."""
        self.registry.on_load.append(self._export_pool_prices)
        await self.preflight()
        await self.upstream.start()
        await self.accounting.start()
        await self.limiter.start()
        if isinstance(self.registry.store, RedisStore):
            self.registry.watch(self.settings.registry_poll_seconds)
        self.ready.set()

    async def stop(self) -> None:
        """Stop background work and close connections."""
        self.ready.clear()
        await self.accounting.close()  # before the store's client closes: it flushes there
        await self.registry.stop()
        await self.limiter.close()
        await self.upstream.close()

    def _export_pool_prices(self, snapshot: Snapshot) -> None:
        """Publish each pool's GPU-hour price (for the dashboards' cost apportioning)."""
        for pool in snapshot.registry.pools:
            if pool.gpu_hour_price is not None:
                self.metrics.gpu_hour_price.labels(pool.name).set(pool.gpu_hour_price)


def build_services(
    settings: Settings, store: RegistryStore | None = None, telemetry: Telemetry | None = None
) -> Services:
    """The services for ``settings``: Redis-backed when ``LGW_REDIS_URL`` is set."""
    if store is None and settings.redis_url:
        store = RedisStore(connect(settings, None))
    store = store or InMemoryStore()
    metrics, rng = Metrics(), random.Random()  # noqa: S311 - load spreading, not secrets
    registry = _exported(RegistryCache(store), metrics)
    limiter = _limiter(settings, metrics)
    usage = UsageTally(store.redis if isinstance(store, RedisStore) else None)
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
        pepper=secret.get_secret_value().encode() if secret else b"",
    )


def _limiter(settings: Settings, metrics: Metrics) -> Limiter:
    if not settings.redis_url:
        return MemoryLimiter(metrics)
    return RedisLimiter(
        connect(settings, settings.redis_timeout),
        lease_seconds=settings.limiter_lease_seconds,
        breaker=Breaker(settings.breaker_failures, settings.breaker_cooldown_seconds),
        metrics=metrics,
    )


def _exported(cache: RegistryCache, metrics: Metrics) -> RegistryCache:
    """``cache``, its version and age read when ``/metrics`` is scraped."""
    metrics.registry_version.set_function(
        lambda: float(cache.snapshot.version) if cache.snapshot else -1.0
    )
    metrics.registry_age.set_function(lambda: time.monotonic() - cache.checked_at)
    return cache
