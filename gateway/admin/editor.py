"""Applying one registry change: read, edit, validate, compare-and-set, audit, refresh."""

from __future__ import annotations

from typing import Any

from gateway.admin.audit import AuditLog
from gateway.admin.callers import Caller
from gateway.admin.changes import Change
from gateway.errors import Conflict, Unprocessable
from gateway.keys import fingerprint
from gateway.store.base import VersionConflict
from gateway.store.cache import RegistryCache
from gateway.store.validation import InvalidRegistry, validated

ATTEMPTS = 5


class Editor:
    """Serializes changes through the store's version check, so concurrent admins on any
    replicas never overwrite each other; every applied change is audited."""

    def __init__(self, cache: RegistryCache, audit: AuditLog, pepper: bytes) -> None:
        self.cache = cache
        self.audit = audit
        self._fingerprint = fingerprint(pepper) if pepper else None

    async def apply(
        self, caller: Caller, action: str, team: str | None, target: str, change: Change
    ) -> Any:
        """Apply ``change``; returns the audited ``after`` of the touched object."""
        for _ in range(ATTEMPTS):
            current = await self.cache.store.load()
            edited, before, after = change(current)
            try:
                registry = validated(edited)
            except InvalidRegistry as exc:
                raise Unprocessable(str(exc)) from None
            if self._fingerprint is not None:  # the keys it holds are hashed with ours
                registry = registry.model_copy(update={"pepper_fingerprint": self._fingerprint})
            try:
                await self.cache.store.save(registry, expected_version=current.version)
            except VersionConflict:
                continue  # someone else changed it first: redo the edit on theirs
            await self.audit.append(caller.actor, action, team, target, before, after)
            await self.cache.refresh()
            return after
        raise Conflict("The registry is changing too fast; retry.")
