"""Usage at a glance: tokens and cost per team and adapter, per hour, for
``GET /admin/v1/usage`` (a team admin's own spend without Prometheus).

Requests add to an in-process tally (no I/O on the request path); a background task
flushes it every ``FLUSH_SECONDS`` into Redis hashes ``lgw:{<team>}:usage:<YYYYMMDDHH>``
(fields ``<adapter> in|out|cost``, kept ``RETENTION_DAYS``), or into memory in single-
node mode. A replica that dies loses at most its last second of tallies.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from redis.asyncio import Redis, RedisCluster

from gateway.redis_client import team_key

log = logging.getLogger("gateway.usage")
FLUSH_SECONDS = 1.0
RETENTION_DAYS = 40
MAX_QUERY_HOURS = 31 * 24
_FIELDS = ("in", "out", "cost")
Cell = tuple[str, str, str]  # hour, team, adapter


@dataclass(frozen=True, slots=True)
class UsageRow:
    """Totals of one (team, adapter) over the queried period."""

    team: str
    adapter: str
    input_tokens: int
    output_tokens: int
    cost: float


def hour_of(moment: datetime) -> str:
    """The hour bucket of a moment (UTC)."""
    return moment.astimezone(UTC).strftime("%Y%m%d%H")


def _key(team: str, hour: str) -> str:
    return team_key(team, "usage", hour)


class UsageTally:
    """The tally and where it is kept."""

    def __init__(self, redis: Redis | RedisCluster | None = None) -> None:
        self._redis = redis
        self._pending: dict[Cell, list[float]] = defaultdict(lambda: [0, 0, 0.0])
        self._kept: dict[Cell, list[float]] = defaultdict(lambda: [0, 0, 0.0])
        self._task: asyncio.Task[None] | None = None

    def add(
        self, team: str, adapter: str, input_tokens: int, output_tokens: int, cost: float
    ) -> None:
        """Count one request's tokens and cost (no I/O)."""
        cell = self._pending[(hour_of(datetime.now(UTC)), team, adapter)]
        cell[0] += input_tokens
        cell[1] += output_tokens
        cell[2] += cost

    def start(self) -> None:
        """Begin flushing in the background."""
        self._task = asyncio.get_running_loop().create_task(self._flush_forever())

    async def close(self) -> None:
        """Stop, flushing what is pending."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.flush()

    async def _flush_forever(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_SECONDS)
            try:
                await self.flush()
            except Exception as exc:  # Redis away: the tally is kept for the next try
                log.warning("usage flush failed: %s", type(exc).__name__)

    async def flush(self) -> None:
        """Move the pending tally to where it is kept."""
        pending, self._pending = self._pending, defaultdict(lambda: [0, 0, 0.0])
        if self._redis is None:
            for cell, values in pending.items():
                _add(self._kept[cell], values)
            return
        try:
            await self._write(pending)
        except BaseException:
            for cell, values in pending.items():  # put back, to be retried
                _add(self._pending[cell], values)
            raise

    async def _write(self, pending: dict[Cell, list[float]]) -> None:
        assert self._redis is not None
        async with self._redis.pipeline(transaction=False) as pipe:
            for (hour, team, adapter), (tokens_in, tokens_out, cost) in pending.items():
                key = _key(team, hour)
                pipe.hincrby(key, f"{adapter} in", int(tokens_in))
                pipe.hincrby(key, f"{adapter} out", int(tokens_out))
                pipe.hincrbyfloat(key, f"{adapter} cost", cost)
                pipe.expire(key, RETENTION_DAYS * 86400)
            await pipe.execute()

    async def totals(
        self, teams: list[str], adapter: str | None, since: datetime
    ) -> list[UsageRow]:
        """Totals per (team, adapter) since ``since`` (whole hours), for ``teams``."""
        hours = _hours_since(since)
        sums: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0, 0, 0.0])
        for (team, cell_adapter), values in (await self._read(teams, hours)).items():
            if adapter is None or cell_adapter == adapter:
                _add(sums[(team, cell_adapter)], values)
        return [
            UsageRow(team, name, int(v[0]), int(v[1]), round(v[2], 9))
            for (team, name), v in sorted(sums.items())
        ]

    async def _read(self, teams: list[str], hours: list[str]) -> dict[tuple[str, str], list[float]]:
        found: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0, 0, 0.0])
        if self._redis is None:
            for (hour, team, adapter), values in self._kept.items():
                if team in teams and hour in hours:
                    _add(found[(team, adapter)], values)
            return found
        async with self._redis.pipeline(transaction=False) as pipe:
            cells = [(team, hour) for team in teams for hour in hours]
            for team, hour in cells:
                pipe.hgetall(_key(team, hour))
            replies = await pipe.execute()
        for (team, _), fields in zip(cells, replies, strict=True):
            for field, amount in fields.items():
                name, _, kind = str(field).rpartition(" ")
                found[(team, name)][_FIELDS.index(kind)] += float(amount)
        return found


def _add(total: list[float], amounts: list[float]) -> None:
    """Add a tally (input tokens, output tokens, cost) into another."""
    for i, amount in enumerate(amounts):
        total[i] += amount


def _hours_since(since: datetime) -> list[str]:
    now = datetime.now(UTC)
    start = max(since.astimezone(UTC), now - timedelta(hours=MAX_QUERY_HOURS))
    hours, moment = [], start.replace(minute=0, second=0, microsecond=0)
    while moment <= now:
        hours.append(hour_of(moment))
        moment += timedelta(hours=1)
    return hours
