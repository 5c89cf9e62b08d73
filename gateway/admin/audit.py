"""The audit log: every registry change, who made it, before and after.

In Redis it is the stream ``lgw:audit`` (capped at about 100,000 entries); in
single-node mode a list in memory. Entries hold no secret: changes pass key records
through ``changes.public`` (no hash), and plaintext keys never reach this module.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Protocol

from redis.asyncio import Redis, RedisCluster

from gateway.admin.schemas import AuditEntry

STREAM = "lgw:audit"
MAX_ENTRIES = 100_000


@dataclass(frozen=True, slots=True)
class Query:
    """Filters of ``GET /admin/v1/audit``; ``before`` is the id to page back from."""

    team: str | None = None
    actor: str | None = None
    action: str | None = None
    since: datetime | None = None
    before: str | None = None
    limit: int = 100

    def matches(self, entry: AuditEntry) -> bool:
        """Whether ``entry`` passes every filter that is set."""
        return (
            (self.team is None or entry.team == self.team)
            and (self.actor is None or entry.actor == self.actor)
            and (self.action is None or entry.action == self.action)
            and (self.since is None or entry.at >= self.since)
        )


class AuditLog(Protocol):
    """Append-only change history."""

    async def append(
        self, actor: str, action: str, team: str | None, target: str, before: Any, after: Any
    ) -> None:
        """Record one change."""
        ...

    async def query(self, query: Query) -> list[AuditEntry]:
        """Newest first, filtered, at most ``query.limit``."""
        ...


def _entry(entry_id: str, fields: dict[str, Any]) -> AuditEntry:
    return AuditEntry(id=entry_id, **json.loads(fields["entry"]))


def _fields(
    actor: str, action: str, team: str | None, target: str, before: Any, after: Any
) -> dict[str, str]:
    at = datetime.now(UTC).isoformat()
    return {
        "entry": json.dumps(
            {
                "at": at,
                "actor": actor,
                "action": action,
                "team": team,
                "target": target,
                "before": before,
                "after": after,
            }
        )
    }


def _select(entries: Iterable[AuditEntry], query: Query) -> list[AuditEntry]:
    selected = []
    for entry in entries:
        if query.matches(entry):
            selected.append(entry)
            if len(selected) == query.limit:
                break
    return selected


class MemoryAudit:
    """The audit log of a single-node gateway."""

    def __init__(self) -> None:
        self._entries: list[AuditEntry] = []
        self._sequence = 0

    async def append(
        self, actor: str, action: str, team: str | None, target: str, before: Any, after: Any
    ) -> None:
        self._sequence += 1
        entry_id = f"{int(time.time() * 1000)}-{self._sequence}"
        self._entries.append(_entry(entry_id, _fields(actor, action, team, target, before, after)))
        del self._entries[:-MAX_ENTRIES]

    async def query(self, query: Query) -> list[AuditEntry]:
        newest_first = reversed(self._entries)
        if query.before is not None:
            newest_first = (e for e in newest_first if _older(e.id, query.before))
        return _select(newest_first, query)


def _older(entry_id: str, than: str) -> bool:
    def parts(value: str) -> tuple[int, int]:
        ms, _, seq = value.partition("-")
        return int(ms), int(seq or 0)

    try:
        return parts(entry_id) < parts(than)
    except ValueError:
        return False


class RedisAudit:
    """The audit log in a Redis stream, shared by every replica."""

    def __init__(self, redis: Redis | RedisCluster) -> None:
        self._redis = redis

    async def append(
        self, actor: str, action: str, team: str | None, target: str, before: Any, after: Any
    ) -> None:
        fields = _fields(actor, action, team, target, before, after)
        await self._redis.xadd(STREAM, fields, maxlen=MAX_ENTRIES, approximate=True)  # type: ignore[arg-type]

    async def query(self, query: Query) -> list[AuditEntry]:
        selected: list[AuditEntry] = []
        upper = f"({query.before}" if query.before else "+"
        while len(selected) < query.limit:
            batch: Any = await self._redis.xrevrange(STREAM, max=upper, min="-", count=500)
            if not batch:
                break
            entries = [_entry(str(entry_id), fields) for entry_id, fields in batch]
            remaining = replace(query, limit=query.limit - len(selected))
            selected += _select(entries, remaining)
            upper = f"({entries[-1].id}"
        return selected


def audit_log_for(redis: Redis | RedisCluster | None) -> AuditLog:
    """The audit log in the shared Redis, else (single node) in memory."""
    return RedisAudit(redis) if redis is not None else MemoryAudit()
