"""The registry as every replica holds it: one snapshot in memory, swapped whole."""

from __future__ import annotations

from gateway.registry.snapshot import Snapshot
from gateway.registry.store import RegistryStore


class RegistryCache:
    """The current ``Snapshot`` of a store; requests read ``snapshot`` and never wait."""

    def __init__(self, store: RegistryStore) -> None:
        self.store = store
        self.snapshot: Snapshot | None = None

    async def refresh(self) -> Snapshot:
        """Load the store's registry if its version changed; returns the current snapshot."""
        if self.snapshot is None or await self.store.version() != self.snapshot.version:
            self.snapshot = Snapshot(await self.store.load())
        return self.snapshot

    def current(self) -> Snapshot:
        """The snapshot requests use."""
        assert self.snapshot is not None, "RegistryCache.refresh() was not awaited"
        return self.snapshot
