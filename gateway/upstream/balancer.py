"""Which replica of a pool gets the next request, and which replicas are out.

Picking: power of two choices on load (the gateway's own in-flight count per replica):
two available replicas at random, the less loaded wins. It needs no global view and
avoids the herd that "always the least loaded" causes across many gateway replicas.

Passive outlier ejection (as Envoy's): after ``eject_after`` consecutive failures a
replica is out for ``base_ejection x n`` seconds (n = its ejections so far), but never
more than ``max_ejected_share`` of a pool at once. When the time is up it is on
probation: one more failure ejects it again at once; a success clears its record.
Overload answers (TGI 429) are load, not failure: they do not eject.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from gateway.errors import UpstreamOverloaded, UpstreamUnavailable
from gateway.registry import Pool


@dataclass(eq=False)
class Replica:
    """One endpoint of a pool and what this process knows about it."""

    url: str
    inflight: int = 0
    failures: int = 0
    ejections: int = 0
    ejected_until: float = 0.0
    probation: bool = False
    probe_ok: bool = True
    """The last active health probe answered (TGI's ``/health``)."""
    queue: float = 0.0
    """Requests waiting or batching at the replica (``tgi_queue_size`` +
    ``tgi_batch_current_size``, scraped): load from every gateway, not just this one."""
    capacity: int | None = None
    """TGI's ``max_concurrent_requests`` (from ``/info``): past it TGI answers 429."""
    denied: bool = False
    """Never contacted: the allowlist forbids its address (``allowlist.speakable``)."""

    def available(self, now: float) -> bool:
        """Not ejected, answering its probes, and below its concurrency limit."""
        saturated = self.capacity is not None and self.inflight >= self.capacity
        return now >= self.ejected_until and self.probe_ok and not saturated

    @property
    def load(self) -> float:
        """What the pick compares: this gateway's in-flight plus the replica's own queue."""
        return self.inflight + self.queue


class Balancer:
    """Replica state of every pool, shared by all requests of this process."""

    def __init__(
        self,
        *,
        eject_after: int = 5,
        base_ejection: float = 30.0,
        max_ejected_share: float = 0.5,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
        speakable: Callable[[str], bool] = lambda url: True,
    ) -> None:
        self.eject_after, self.base_ejection = eject_after, base_ejection
        self.max_ejected_share = max_ejected_share
        self._rng = rng or random.Random()  # noqa: S311 - load spreading, not secrecy
        self._clock = clock
        self._speakable = speakable
        self._pools: dict[str, dict[str, Replica]] = {}
        self._endpoints: dict[str, tuple[str, ...]] = {}
        self.missing: dict[str, frozenset[str]] = {}
        """Declared adapters a pool's replicas do not list as loaded (vLLM ``/v1/models``)."""
        self.resolved: dict[str, tuple[str, ...]] = {}
        """Replica URLs found by DNS for pools with ``discovery: dns``."""

    def all_replicas(self) -> list[tuple[str, Replica]]:
        """Every replica of every pool seen so far, with its pool's name (what the prober
        visits)."""
        return [(name, r) for name, known in self._pools.items() for r in known.values()]

    def replicas(self, pool: Pool) -> list[Replica]:
        """The pool's replicas, following its current endpoint list (kept state by URL)."""
        endpoints = pool.endpoints
        if pool.discovery == "dns" and self.resolved.get(pool.name):
            endpoints = self.resolved[pool.name]
        known = self._pools.setdefault(pool.name, {})
        if self._endpoints.get(pool.name) != endpoints:  # a tuple compare, usually identity
            self._pools[pool.name] = known = {
                url: known.get(url) or Replica(url, denied=not self._speakable(url))
                for url in endpoints
            }
            self._endpoints[pool.name] = endpoints
        return list(known.values())

    def pick(
        self, pool: Pool, exclude: frozenset[str] = frozenset(), adapter: str | None = None
    ) -> Replica:
        """A replica to try (not in ``exclude``), or a fast 503 when none is available."""
        if adapter is not None and adapter in self.missing.get(pool.name, ()):
            raise UpstreamUnavailable(
                "This model is not loaded by its backend right now.", headers={"Retry-After": "5"}
            )
        now = self._clock()
        candidates = [r for r in self.replicas(pool) if r.url not in exclude and not r.denied]
        ready = [r for r in candidates if r.available(now)]
        if not ready and not any(r.probe_ok for r in candidates):
            # Panic mode (as Envoy's): when probes fail everywhere, trust them less than
            # the requests themselves, and try what passive ejection has not ruled out.
            ready = [r for r in candidates if now >= r.ejected_until]
        if not ready:
            raise UpstreamOverloaded(
                "No replica of the model can take the request now; retry shortly.",
                headers={"Retry-After": "1"},
            )
        if len(ready) == 1:
            return ready[0]
        first, second = self._rng.sample(ready, 2)
        return first if first.load <= second.load else second

    def started(self, replica: Replica) -> None:
        """A request is now in flight on ``replica``."""
        replica.inflight += 1

    def finished(
        self, pool: Pool, replica: Replica, healthy: bool | None, down: bool = False
    ) -> None:
        """The request on ``replica`` ended: a success (True), a failure of the replica
        (False) or neither, such as an overload answer or a client that left (None).
        ``down``: the replica refused the connection, so it is ejected at once."""
        replica.inflight -= 1
        if healthy:
            replica.failures, replica.ejections, replica.probation = 0, 0, False
        elif healthy is False:
            self.failed(pool, replica, down)

    def failed(self, pool: Pool, replica: Replica, down: bool = False) -> None:
        """Count a failure of ``replica``; eject it when it keeps failing."""
        now = self._clock()
        if replica.ejected_until > now:
            return
        replica.failures = self.eject_after if down else replica.failures + 1
        if replica.probation and replica.ejected_until <= now:
            replica.failures = max(replica.failures, self.eject_after)
        if replica.failures >= self.eject_after and self._may_eject(pool, now):
            replica.ejections += 1
            replica.ejected_until = now + self.base_ejection * replica.ejections
            replica.failures, replica.probation = 0, True

    def _may_eject(self, pool: Pool, now: float) -> bool:
        replicas = self.replicas(pool)
        ejected = sum(1 for r in replicas if not r.available(now))
        return (ejected + 1) <= self.max_ejected_share * len(replicas)


class RetryBudget:
    """Retries may be at most ``ratio`` of the requests in flight (but ``minimum`` are
    always allowed), so a sick pool does not get a retry storm."""

    def __init__(self, ratio: float = 0.2, minimum: int = 3) -> None:
        self.ratio, self.minimum = ratio, minimum
        self.active = 0
        self.retrying = 0

    def allows(self) -> bool:
        """Whether one more retry may start now."""
        return self.retrying < max(self.minimum, int(self.active * self.ratio))
