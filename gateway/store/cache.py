"""The registry as every replica holds it: one snapshot in memory, swapped whole.

With a shared store, a watcher reloads on every announced change (pub/sub) and checks
the version every ``poll_seconds`` as a safety net for missed messages; if the store is
unreachable, requests keep being served from the last snapshot.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Protocol, runtime_checkable

from gateway.registry.snapshot import Snapshot
from gateway.store.base import RegistryStore

log = logging.getLogger("gateway.registry")


@runtime_checkable
class Announcing(Protocol):
    """A store that announces its changes."""

    def changes(self) -> AsyncIterator[int]: ...


class RegistryCache:
    """The current ``Snapshot`` of a store; requests read ``current()`` and never wait."""

    def __init__(self, store: RegistryStore) -> None:
        self.store = store
        self.snapshot: Snapshot | None = None
        self.on_load: list[Callable[[Snapshot], None]] = []
        """Called with every newly loaded snapshot."""
        self.checked_at = 0.0
        """``time.monotonic()`` of the last load or successful version check."""
        self._tasks: list[asyncio.Task[None]] = []
        self.listening = asyncio.Event()
        """Set while the change feed is subscribed."""

    async def refresh(self) -> Snapshot:
        """Load the store's registry if its version changed; returns the current snapshot.

        A version older than the one held means the store lost its data (a Redis
        restarted without persistence, a flush): the held snapshot stays, loudly, rather
        than every key in the organization becoming invalid at once.
        """
        version = await self.store.version()
        self.checked_at = time.monotonic()
        if self.snapshot is None or version != self.snapshot.version:
            loaded = await self.store.load()
            if self.snapshot is not None and loaded.version < self.snapshot.version:
                log.error(
                    "registry store went back from version %d to %d; keeping %d",
                    self.snapshot.version,
                    loaded.version,
                    self.snapshot.version,
                )
                return self.snapshot
            self.snapshot = Snapshot(loaded)
            log.info("registry version %d loaded", self.snapshot.version)
            for listener in self.on_load:
                listener(self.snapshot)
        return self.snapshot

    def current(self) -> Snapshot:
        """The snapshot requests use."""
        assert self.snapshot is not None, "RegistryCache.refresh() was not awaited"
        return self.snapshot

    def watch(self, poll_seconds: float) -> None:
        """Keep the snapshot current in the background (shared stores only)."""
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(self._poll(poll_seconds)))
        if isinstance(self.store, Announcing):
            self._tasks.append(loop.create_task(self._listen(self.store, poll_seconds)))

    async def stop(self) -> None:
        """Stop watching and close the store."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.store.close()

    async def _poll(self, seconds: float) -> None:
        while True:
            await asyncio.sleep(seconds)
            await self._try_refresh()

    async def _listen(self, store: Announcing, retry_seconds: float) -> None:
        while True:
            try:
                async for _version in store.changes():
                    self.listening.set()
                    await self._try_refresh()
            except Exception as exc:  # any failure: keep the snapshot, resubscribe later
                log.warning("registry change feed lost: %s", type(exc).__name__)
            self.listening.clear()
            await asyncio.sleep(retry_seconds)

    async def _try_refresh(self) -> None:
        try:
            await self.refresh()
        except Exception as exc:  # keep serving the last snapshot
            log.warning("registry refresh failed: %s", type(exc).__name__)
