"""Where the registry lives. The in-memory store serves the single-node demo mode;
a Redis store (shared by every replica) implements the same interface.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

from gateway.registry.models import Registry


class RegistryStore(Protocol):
    """Holds the current registry version; every replica caches what ``load`` returns."""

    async def load(self) -> Registry:
        """The current registry, whole."""
        ...

    async def version(self) -> int:
        """The current version number, cheap to poll."""
        ...

    async def save(self, registry: Registry) -> Registry:
        """Replace the registry; returns it stamped with the next version number."""
        ...


class InMemoryStore:
    """A process-local store: one replica only (demo and tests)."""

    def __init__(self, registry: Registry | None = None) -> None:
        self._registry = registry or Registry()
        self._lock = asyncio.Lock()

    async def load(self) -> Registry:
        return self._registry

    async def version(self) -> int:
        return self._registry.version

    async def save(self, registry: Registry) -> Registry:
        async with self._lock:
            stamped = registry.model_copy(update={"version": self._registry.version + 1})
            self._registry = stamped
            return stamped
