"""What the data plane's handlers share: built once, started by the app's lifespan."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field

from gateway.admin.audit import AuditLog, MemoryAudit, RedisAudit
from gateway.balancer import Balancer, RetryBudget
from gateway.metrics import Metrics
from gateway.probes import Prober
from gateway.ratelimit import Limiter, MemoryLimiter
from gateway.registry import Snapshot
from gateway.registry.cache import RegistryCache
from gateway.registry.redis_store import RedisStore as RedisStoreType
from gateway.registry.store import InMemoryStore, RegistryStore
from gateway.settings import Settings
from gateway.telemetry import Telemetry, otlp_provider
from gateway.upstream import Upstream
from gateway.usage import Usage


@dataclass
class DataPlane:
    """Settings, the registry cache, the limiter, the upstream client, the balancer."""

    settings: Settings
    registry: RegistryCache
    upstream: Upstream
    metrics: Metrics = field(default_factory=Metrics)
    limiter: Limiter = field(init=False)
    rng: random.Random = field(default_factory=random.Random)
    audit: AuditLog = field(default_factory=MemoryAudit)
    usage: Usage = field(default_factory=Usage)
    telemetry: Telemetry = field(default_factory=Telemetry)
    balancer: Balancer = field(init=False)
    retry_budget: RetryBudget = field(default_factory=RetryBudget)
    prober: Prober | None = None
    """Where admin changes are recorded."""
    ready: bool = False
    """True once the registry is loaded and the upstream pool is open."""
    pepper: bytes = field(init=False, repr=False)
    """The key-hash pepper (empty when no key exists, so nothing can match)."""

    def __post_init__(self) -> None:
        self.limiter = MemoryLimiter(self.metrics)
        self.balancer = Balancer(
            eject_after=self.settings.eject_after_failures,
            base_ejection=self.settings.ejection_seconds,
            rng=self.rng,
        )
        self._export_registry_state()
        secret = self.settings.key_pepper
        self.pepper = secret.get_secret_value().encode() if secret else b""

    def _export_registry_state(self) -> None:
        """Registry version, its age, and pool GPU prices, read when ``/metrics`` is scraped."""
        cache, m = self.registry, self.metrics
        m.registry_version.set_function(
            lambda: float(cache.snapshot.version) if cache.snapshot else -1.0
        )
        m.registry_age.set_function(lambda: time.monotonic() - cache.checked_at)

    def export_pool_prices(self, snapshot: Snapshot) -> None:
        """Publish each pool's GPU-hour price (for the dashboards' cost apportioning)."""
        for pool in snapshot.registry.pools:
            if pool.gpu_hour_price is not None:
                self.metrics.gpu_hour_price.labels(pool.name).set(pool.gpu_hour_price)

    async def start(self) -> None:
        """Load the registry, open the upstream pool, connect the shared limiter."""
        self.registry.on_load.append(self.export_pool_prices)
        await self.registry.refresh()
        await self.upstream.start()
        self.usage.start()
        self.prober = Prober(self.balancer, self.registry, self.settings.probe_interval)
        await self.prober.start()
        if self.settings.redis_url:
            from gateway.ratelimit_redis import Breaker, RedisLimiter
            from gateway.redis_client import connect

            s = self.settings
            self.registry.watch(s.registry_poll_seconds)
            self.limiter = RedisLimiter(
                connect(s, s.redis_timeout),
                lease_seconds=s.limiter_lease_seconds,
                breaker=Breaker(s.breaker_failures, s.breaker_cooldown_seconds),
                metrics=self.metrics,
            )
            await self.limiter.warm()
        self.ready = True

    async def stop(self) -> None:
        """Stop background work and close connections."""
        self.ready = False
        if self.prober is not None:
            await self.prober.stop()
        await self.usage.close()  # before the store's client closes: it flushes there
        self.telemetry.shutdown()
        await self.registry.stop()
        await self.limiter.close()
        await self.upstream.close()


def create_plane(settings: Settings, store: RegistryStore | None = None) -> DataPlane:
    """The plane for ``settings``: the Redis registry when ``LGW_REDIS_URL`` is set."""
    if store is None and settings.redis_url:
        from gateway.redis_client import connect
        from gateway.registry.redis_store import RedisStore

        store = RedisStore(connect(settings, None))
    audit: AuditLog = MemoryAudit()
    usage = Usage()
    if isinstance(store, RedisStoreType):
        audit, usage = RedisAudit(store.redis), Usage(store.redis)
    cache = RegistryCache(store or InMemoryStore())
    telemetry = Telemetry(otlp_provider()) if settings.otlp_endpoint else Telemetry()
    return DataPlane(
        settings=settings,
        registry=cache,
        upstream=Upstream(settings),
        audit=audit,
        usage=usage,
        telemetry=telemetry,
    )
