"""Active checks of every replica, in the background: health, capacity and load.

Every ``interval`` seconds each known replica gets ``GET /health`` (TGI binds its port
only after warm-up, and after an error its ``/health`` runs a real forward pass) and
``GET /metrics`` (``tgi_queue_size``, ``tgi_batch_current_size``); ``GET /info`` once for
``max_concurrent_requests``. A replica that fails its probe takes no new requests until
a probe passes again; a redirect is a failed probe, never followed. Whatever one replica
answers (garbage included) is that replica's failure, logged and counted
(``lgw_probe_failures_total``); a round never stops the next one
(``lgw_probe_rounds_total`` keeps rising). Nothing here is on a request's path.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import socket
from urllib.parse import urlsplit

import aiohttp

from gateway.backends import DIALECTS
from gateway.metrics import Metrics
from gateway.registry import Pool
from gateway.store.cache import RegistryCache
from gateway.upstream.balancer import Balancer, Replica

log = logging.getLogger("gateway.probes")
_LOAD = re.compile(
    rb"^(tgi_queue_size|tgi_batch_current_size)(?:\{[^}]*\})? ([0-9.e+]+)$", re.MULTILINE
)


class ProbeFailed(Exception):
    """A replica answered a probe wrongly; ``reason`` is the metric's label."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Prober:
    """Probes every replica of every pool in the current registry."""

    def __init__(
        self,
        balancer: Balancer,
        registry: RegistryCache,
        interval: float,
        metrics: Metrics,
        timeout: float = 1.0,
    ) -> None:
        self._balancer, self._registry, self._metrics = balancer, registry, metrics
        self._interval = interval
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        """Probe once (so the first requests know which replicas answer), then keep
        probing in the background."""
        self._session = aiohttp.ClientSession(timeout=self._timeout)
        await self.probe_all()
        self._task = asyncio.get_running_loop().create_task(self._forever())

    async def stop(self) -> None:
        """Stop probing."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._session is not None:
            await self._session.close()

    async def _forever(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.probe_all()
            except Exception:  # a registry or DNS surprise: log it, probe again next round
                log.exception("probe round failed")

    async def probe_all(self) -> None:
        """One round over every replica of every pool."""
        for pool in self._registry.current().registry.pools:
            if DIALECTS[pool.dialect].lists_adapters:
                await self._check_loaded(pool)
            if pool.discovery == "dns":
                found = await resolve_endpoints(pool.endpoints)
                if found:  # keep the last answer when DNS has none right now
                    self._balancer.resolved[pool.name] = found
            self._balancer.replicas(pool)  # follow endpoint changes
        await asyncio.gather(*(self.probe(pool, r) for pool, r in self._balancer.all_replicas()))
        self._metrics.probe_rounds.inc()

    async def _check_loaded(self, pool: Pool) -> None:
        """vLLM lists its LoRA modules: note declared adapters no replica has loaded."""
        assert self._session is not None
        loaded: set[str] = set()
        for replica in self._balancer.replicas(pool):
            if replica.denied:
                continue  # never contacted, not even to ask what it loaded
            try:
                listed = json.loads(await self._get(f"{replica.url}/v1/models"))
                loaded |= {str(m.get("id")) for m in listed.get("data", [])}
            except Exception:  # noqa: S112 - the health probes judge and count the replica
                continue
        if not loaded:
            return  # nobody answered: the health probes deal with that
        missing = frozenset(pool.adapter_ids - loaded)
        if missing and missing != self._balancer.missing.get(pool.name):
            log.error(
                "pool %s declares adapters its replicas have not loaded: %s",
                pool.name,
                ", ".join(sorted(missing)),
            )
        self._balancer.missing[pool.name] = missing

    async def probe(self, pool: str, replica: Replica) -> None:
        """Health, then load and, once, capacity; any failure is this replica's alone.
        A replica the allowlist denies is never contacted."""
        if replica.denied:
            replica.probe_ok = False
            return
        try:
            await self._get(f"{replica.url}/health")
            replica.queue = _load(await self._get(f"{replica.url}/metrics"))
            if replica.capacity is None:
                replica.capacity = _capacity(await self._get(f"{replica.url}/info"))
            replica.probe_ok = True
        except Exception as exc:  # whatever a replica answers must not stop the others
            replica.probe_ok = False
            reason = _reason(exc)
            self._metrics.probe_failures.labels(pool, reason).inc()
            log.warning("probe of %s failed: %s", replica.url, reason)

    async def _get(self, url: str) -> bytes:
        """The body of a 200 answer; redirects are never followed."""
        assert self._session is not None
        async with self._session.get(url, allow_redirects=False) as response:
            if response.status != 200:
                raise ProbeFailed("status")
            return await response.read()


def _reason(exc: Exception) -> str:
    if isinstance(exc, ProbeFailed):
        return exc.reason
    if isinstance(exc, aiohttp.ClientError | TimeoutError | OSError):
        return "unreachable"
    return "malformed"


def _load(metrics: bytes) -> float:
    """TGI's queue plus its running batch, from its Prometheus text."""
    return sum(float(value) for _, value in _LOAD.findall(metrics))


def _capacity(info: bytes) -> int | None:
    """``max_concurrent_requests`` from TGI's ``/info``, when it says."""
    parsed = json.loads(info)
    capacity = parsed.get("max_concurrent_requests") if isinstance(parsed, dict) else None
    return capacity if isinstance(capacity, int) and capacity > 0 else None


async def resolve_endpoints(endpoints: tuple[str, ...]) -> tuple[str, ...]:
    """One base URL per address the endpoints' host names resolve to, in a stable order."""
    loop = asyncio.get_running_loop()
    urls: set[str] = set()
    for endpoint in endpoints:
        parts = urlsplit(endpoint)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            infos = await loop.getaddrinfo(parts.hostname, port, type=socket.SOCK_STREAM)
        except OSError:
            log.warning("cannot resolve a pool endpoint's host")
            continue
        for *_, address in infos:
            host = str(address[0])
            urls.add(f"{parts.scheme}://{f'[{host}]' if ':' in host else host}:{port}")
    return tuple(sorted(urls))
