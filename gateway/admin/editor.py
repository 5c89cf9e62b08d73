"""Applying one registry change: read, edit, validate, compare-and-set, audit, refresh."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from gateway.admin.audit import AuditLog
from gateway.admin.callers import Caller
from gateway.admin.changes import Change
from gateway.errors import Conflict, Unprocessable
from gateway.registry import Registry
from gateway.registry.cache import RegistryCache
from gateway.registry.store import VersionConflict

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
            registry = validated(edited)
            try:
                await self.cache.store.save(registry, expected_version=current.version)
            except VersionConflict:
                continue  # someone else changed it first: redo the edit on theirs
            await self.audit.append(caller.actor, action, team, target, before, after)
            await self.cache.refresh()
            return after
        raise Conflict("The registry is changing too fast; retry.")


def validated(registry: Registry) -> Registry:
    """``registry`` with every record and cross-reference checked, or 422 saying why."""
    try:
        return Registry.model_validate(registry.model_dump())
    except ValidationError as exc:
        messages = [str(e["msg"]).removeprefix("Value error, ") for e in exc.errors()]
        raise Unprocessable("; ".join(messages)) from None
