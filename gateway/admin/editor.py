"""Applying one registry change: read, edit, validate, compare-and-set, audit, refresh."""

from __future__ import annotations

from typing import Any

from gateway.admin.audit import AuditLog
from gateway.admin.callers import Caller
from gateway.admin.changes import Change
from gateway.errors import Conflict, Unprocessable
from gateway.store.base import VersionConflict
from gateway.store.cache import RegistryCache
from gateway.store.validation import InvalidRegistry, validated

ATTEMPTS = 5


class Editor:
    """Serializes changes through the store's version check, so concurrent admins on any
    replicas never overwrite each other; every applied change is audited."""

    def __init__(self, cache: RegistryCache, audit: AuditLog) -> None:
        self.cache = cache
        self.audit = audit

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
            try:
                await self.cache.store.save(registry, expected_version=current.version)
            except VersionConflict:
                continue  # someone else changed it first: redo the edit on theirs
            await self.audit.append(caller.actor, action, team, target, before, after)
            await self.cache.refresh()
            return after
        raise Conflict("The registry is changing too fast; retry.")
