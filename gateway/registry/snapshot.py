"""An indexed, read-only view of one registry version: what the hot path reads.

Built once per registry version, swapped whole on change; requests never lock and
never touch Redis for configuration.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gateway.registry.models import (
    Adapter,
    ApiKey,
    Mapping,
    Pool,
    Registry,
    Team,
)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Lookups by key id, by (team, task) and by adapter, for one registry version."""

    registry: Registry
    teams: dict[str, Team] = field(init=False)
    keys: dict[str, tuple[Team, ApiKey]] = field(init=False)
    mappings: dict[tuple[str | None, str], Mapping] = field(init=False)
    pools_by_adapter: dict[str, tuple[Pool, ...]] = field(init=False)
    adapters: dict[str, Adapter] = field(init=False)

    def __post_init__(self) -> None:
        reg = self.registry
        set_ = object.__setattr__  # frozen dataclass: fill the derived indexes once
        set_(self, "teams", {t.name: t for t in reg.teams})
        set_(self, "keys", {k.id: (t, k) for t in reg.teams for k in t.keys})
        set_(self, "mappings", {(m.team, m.task): m for m in reg.mappings})
        set_(self, "adapters", {a.id: a for a in reg.adapters})
        by_adapter: dict[str, list[Pool]] = {}
        for pool in reg.pools:
            for adapter in (pool.base_model, *sorted(pool.adapter_ids)):
                by_adapter.setdefault(adapter, []).append(pool)
        set_(self, "pools_by_adapter", {a: tuple(p) for a, p in by_adapter.items()})

    @property
    def version(self) -> int:
        """The registry version this snapshot was built from."""
        return self.registry.version

    def mapping(self, team: str, task: str) -> Mapping | None:
        """The team's own mapping of ``task``, else the org default, else ``None``."""
        return self.mappings.get((team, task)) or self.mappings.get((None, task))

    def tasks(self, team: str) -> list[str]:
        """Every task ``team`` can name in ``model``, sorted."""
        return sorted({task for owner, task in self.mappings if owner in (None, team)})
