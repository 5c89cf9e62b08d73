"""Where the registry lives. The in-memory store serves the single-node demo mode;
a Redis store (shared by every replica) implements the same interface.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

from gateway.registry.models import Registry


class VersionConflict(Exception):
    """The registry changed since the version the caller read."""

    def __init__(self, current: int) -> None:
        super().__init__(f"the registry is at version {current}")
        self.current = current


class RegistryStore(Protocol):
    """Holds the current registry version; every replica caches what ``load`` returns."""

    async def load(self) -> Registry:
        """The current registry, whole."""
        ...

    async def version(self) -> int:
        """The current version number, cheap to poll."""
        ...

    async def save(self, registry: Registry, expected_version: int | None = None) -> Registry:
        """Replace the registry; returns it stamped with the next version number.

        With ``expected_version``, only if the stored version is still that one
        (``VersionConflict`` otherwise): two admins never silently overwrite each other.
        """
        ...

    async def close(self) -> None:
        """Release connections."""
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

    async def close(self) -> None:
        return None

    async def save(self, registry: Registry, expected_version: int | None = None) -> Registry:
        async with self._lock:
            if expected_version is not None and expected_version != self._registry.version:
                raise VersionConflict(self._registry.version)
            stamped = registry.model_copy(update={"version": self._registry.version + 1})
            self._registry = stamped
            return stamped
