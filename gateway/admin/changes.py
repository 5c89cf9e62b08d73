"""Registry edits as pure functions: the current registry in, the next one out.

Each returns ``(registry, before, after)`` where before/after are what the audit log
records about the touched object (``None`` when it did not or no longer exists), with
key hashes already removed. Cross-record rules (a mapping names an adapter a pool
serves and the team may use, unique names...) are checked when the result is
validated (``gateway/store/validation.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import ValidationError

from gateway import keys as keygen
from gateway.admin.schemas import KeyIn, MappingIn, TeamIn, TeamPatch
from gateway.errors import Conflict, NotFound, Unprocessable
from gateway.registry import Adapter, ApiKey, Mapping, Pool, Registry, Team

Edit = tuple[Registry, Any, Any]


def public(value: Any) -> Any:
    """A record as the audit log may hold it: JSON, with every key hash removed."""
    if value is None:
        return None
    data = value.model_dump(mode="json")
    if isinstance(value, Team):
        data["keys"] = [{k: v for k, v in key.items() if k != "hash"} for key in data["keys"]]
    if isinstance(value, ApiKey):
        data.pop("hash")
    return data


def team(registry: Registry, name: str) -> Team:
    """The team, or 404."""
    found = next((t for t in registry.teams if t.name == name), None)
    if found is None:
        raise NotFound("No such team.")
    return found


def _replace_team(registry: Registry, name: str, new: Team | None) -> Registry:
    teams = tuple(new if t.name == name else t for t in registry.teams if new or t.name != name)
    return registry.model_copy(update={"teams": teams})


def add_team(registry: Registry, body: TeamIn) -> Edit:
    if any(t.name == body.name for t in registry.teams):
        raise Conflict("A team with this name exists.")
    new = Team(
        name=body.name,
        limits=body.limits,
        on_limiter_failure=body.on_limiter_failure,
        policy=body.policy,
    )
    return registry.model_copy(update={"teams": (*registry.teams, new)}), None, public(new)


def patch_team(registry: Registry, name: str, body: TeamPatch) -> Edit:
    old = team(registry, name)
    given = {field: getattr(body, field) for field in body.model_fields_set}
    new = old.model_copy(update={k: v for k, v in given.items() if v is not None})
    return _replace_team(registry, name, new), public(old), public(new)


def delete_team(registry: Registry, name: str) -> Edit:
    """The team, its keys, its mappings and its grants. Adapters it owns must be deleted
    or given to another team first: dropping the owner would make them shared."""
    old = team(registry, name)
    if any(a.owner == name for a in registry.adapters):
        raise Conflict("The team owns adapters: delete them or change their owner first.")
    mappings = tuple(m for m in registry.mappings if m.team != name)
    adapters = tuple(
        a.model_copy(update={"grants": tuple(g for g in a.grants if g != name)})
        for a in registry.adapters
    )
    registry = _replace_team(registry, name, None).model_copy(
        update={"mappings": mappings, "adapters": adapters}
    )
    return registry, public(old), None


def add_key(registry: Registry, name: str, body: KeyIn, pepper: bytes) -> tuple[Edit, str]:
    """A new key for the team; also returns its plaintext (shown once)."""
    if not pepper:
        raise Conflict("No key can be created: LGW_KEY_PEPPER is not set on the gateway.")
    old = team(registry, name)
    minted = keygen.mint(pepper)
    key = ApiKey(
        id=minted.id,
        name=body.name,
        hash=minted.hash,
        role=body.role,
        expires_at=body.expires_at,
        limits=body.limits,
    )
    new = old.model_copy(update={"keys": (*old.keys, key)})
    return (_replace_team(registry, name, new), None, public(key)), minted.plaintext


def find_key(registry: Registry, name: str, key_id: str) -> ApiKey:
    """The team's key, or 404 (also for another team's key)."""
    found = next((k for k in team(registry, name).keys if k.id == key_id), None)
    if found is None:
        raise NotFound("No such key.")
    return found


def revoke_key(registry: Registry, name: str, key_id: str) -> Edit:
    old = find_key(registry, name, key_id)
    owner = team(registry, name)
    new = owner.model_copy(update={"keys": tuple(k for k in owner.keys if k.id != key_id)})
    return _replace_team(registry, name, new), public(old), None


def rotate_key(
    registry: Registry, name: str, key_id: str, grace_seconds: int, pepper: bytes
) -> tuple[Edit, str]:
    """A new key with the old one's name, role and limits; the old one expires after the
    grace period (or sooner, if it already would)."""
    old = find_key(registry, name, key_id)
    now = datetime.now(UTC)
    if old.expires_at is not None and old.expires_at <= now:
        raise Conflict("The key has expired: create a new key instead of rotating it.")
    ends = now + timedelta(seconds=grace_seconds)
    if old.expires_at is not None:
        ends = min(ends, old.expires_at)
    retiring = old.model_copy(update={"expires_at": ends})
    owner = team(registry, name)
    keys = tuple(retiring if k.id == key_id else k for k in owner.keys)
    registry = _replace_team(registry, name, owner.model_copy(update={"keys": keys}))
    body = KeyIn(name=old.name, role=old.role, expires_at=old.expires_at, limits=old.limits)
    (registry, _, created), plaintext = add_key(registry, name, body, pepper)
    return (registry, public(old), {"retiring": public(retiring), "new": created}), plaintext


def put_mapping(registry: Registry, team_name: str | None, task: str, body: MappingIn) -> Edit:
    if team_name is not None:
        team(registry, team_name)
    try:
        new = Mapping(team=team_name, task=task, adapter=body.adapter, targets=body.targets)
    except ValidationError as exc:  # neither or both forms, a bad adapter id or task name
        messages = (
            f"{'.'.join(map(str, e['loc'])) or 'mapping'}: {e['msg']}" for e in exc.errors()
        )
        raise Unprocessable("; ".join(messages)) from None
    old = _mapping(registry, team_name, task)
    others = tuple(m for m in registry.mappings if m is not old)
    return registry.model_copy(update={"mappings": (*others, new)}), public(old), public(new)


def delete_mapping(registry: Registry, team_name: str | None, task: str) -> Edit:
    old = _mapping(registry, team_name, task)
    if old is None:
        raise NotFound("No such mapping.")
    others = tuple(m for m in registry.mappings if m is not old)
    return registry.model_copy(update={"mappings": others}), public(old), None


def _mapping(registry: Registry, team_name: str | None, task: str) -> Mapping | None:
    return next((m for m in registry.mappings if (m.team, m.task) == (team_name, task)), None)


def put_record(registry: Registry, section: str, new: Pool | Adapter) -> Edit:
    """Create or replace a pool (by name) or an adapter (by id)."""
    ident = _ident(new)
    records: tuple[Any, ...] = getattr(registry, section)
    old = next((r for r in records if _ident(r) == ident), None)
    kept = tuple(r for r in records if r is not old)
    return registry.model_copy(update={section: (*kept, new)}), public(old), public(new)


def delete_record(registry: Registry, section: str, ident: str) -> Edit:
    records: tuple[Any, ...] = getattr(registry, section)
    old = next((r for r in records if _ident(r) == ident), None)
    if old is None:
        raise NotFound("No such record.")
    kept = tuple(r for r in records if r is not old)
    return registry.model_copy(update={section: kept}), public(old), None


def _ident(record: Pool | Adapter) -> str:
    return record.name if isinstance(record, Pool) else record.id


Change = Callable[[Registry], Edit]
