"""Stage 2, resolve: the task in ``model`` -> the adapter -> a pool that loaded it -> a replica."""

from __future__ import annotations

import random
from dataclasses import dataclass

from gateway.auth import Principal
from gateway.errors import ModelNotFound, UpstreamUnavailable
from gateway.registry import Adapter, Pool, Price, Snapshot, Target
from gateway.registry.models import price_of

_FREE = Price()


@dataclass(frozen=True, slots=True)
class Route:
    """Where one request goes: task, adapter, pool and (per try) the replica's URL."""

    task: str
    adapter: str
    pool: Pool
    endpoint: str = ""
    price: Price = _FREE
    """What its tokens cost (the adapter's prices, else the pool's)."""


@dataclass(frozen=True, slots=True)
class Candidate:
    """What a task resolves to before policy: the adapter and every pool that loaded it."""

    task: str
    adapter: str
    record: Adapter | None
    """The adapter's registry record (ownership, grants, prices), if it has one."""
    pools: tuple[Pool, ...]


def resolve(principal: Principal, task: str, snapshot: Snapshot, rng: random.Random) -> Candidate:
    """The adapter for ``task`` and the pools serving it; ``ModelNotFound`` when the team
    has no such task.

    The adapter always comes from the registry, never from the client, and only pools
    that loaded it are candidates: TGI would answer an unknown id with the base model.
    """
    mapping = snapshot.mapping(principal.team.name, task)
    if mapping is None:
        raise ModelNotFound(
            f"The model '{_printable(task)}' does not exist or you do not have access to it.",
            param="model",
        )
    adapter = pick_target(mapping.choices, rng).adapter
    return candidate(snapshot, task, adapter)


def candidate(snapshot: Snapshot, task: str, adapter: str) -> Candidate:
    """The candidate pools of ``adapter`` for ``task``."""
    return Candidate(
        task, adapter, snapshot.adapters.get(adapter), snapshot.pools_by_adapter.get(adapter, ())
    )


def choose(found: Candidate, pools: tuple[Pool, ...], rng: random.Random) -> Route:
    """One of ``pools`` (those policy allows) for the candidate; the replica is picked
    for each try by the balancer (``gateway/upstream/retries.py``)."""
    if not pools:
        raise UpstreamUnavailable("No backend currently serves this model.")
    pool = pools[0] if len(pools) == 1 else rng.choice(pools)
    return Route(found.task, found.adapter, pool, price=price_of(found.record, pool))


def pick_target(targets: tuple[Target, ...], rng: random.Random) -> Target:
    """A weighted random choice among a mapping's targets (canary splits)."""
    if len(targets) == 1:
        return targets[0]
    return rng.choices(targets, weights=[t.weight for t in targets])[0]


def _printable(name: str) -> str:
    """The client's own ``model`` string, trimmed for echoing in an error message:
    printable ASCII only (no control characters reach a message, a log or a terminal)."""
    return "".join(c if c.isascii() and c.isprintable() else "?" for c in name[:64])
