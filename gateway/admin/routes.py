"""The admin REST API (``/admin/v1``): every handler identifies its caller first, checks
the caller may touch the object, then reads the cached registry or edits the store."""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from litestar import Controller, Request, delete, get, patch, post, put
from litestar.params import FromPath, FromQuery, JSONBody, QueryParameter

from gateway.admin import changes
from gateway.admin.audit import Query
from gateway.admin.callers import Caller, identify
from gateway.admin.editor import Editor
from gateway.admin.schemas import (
    AuditEntry,
    KeyCreated,
    KeyIn,
    KeyOut,
    MappingIn,
    MappingOut,
    Page,
    RotateIn,
    TeamIn,
    TeamOut,
    TeamPatch,
    UsageOut,
)
from gateway.admin.upstreams import check_endpoints
from gateway.errors import NotFound
from gateway.plane import DataPlane
from gateway.registry import Adapter, Pool, Registry, Snapshot
from gateway.registry.models import may_use

AnyRequest = Request[Any, Any, Any]
Limit = Annotated[int, QueryParameter(ge=1, le=500, description="Page size.")]
After = Annotated[
    str | None, QueryParameter(description="Return items after this one (the `next` value).")
]


def _context(request: AnyRequest) -> tuple[Caller, DataPlane, Snapshot, Editor]:
    plane: DataPlane = request.app.state.plane
    snapshot = plane.registry.current()
    caller = identify(request.headers.get("authorization"), plane.settings, snapshot, plane.pepper)
    return caller, plane, snapshot, request.app.state.editor


def _page(items: list[tuple[str, Any]], after: str | None, limit: int) -> Page:
    """Items sorted by name, those after the cursor, one page of them."""
    rest = [
        (name, item)
        for name, item in sorted(items, key=lambda p: p[0])
        if after is None or name > after
    ]
    page = rest[:limit]
    return Page(data=[item for _, item in page], next=page[-1][0] if len(rest) > limit else None)


def _team(snapshot: Snapshot, name: FromPath[str]) -> Any:
    found = snapshot.teams.get(name)
    if found is None:
        raise NotFound("No such team.")
    return found


class TeamRoutes(Controller):
    """Teams: the org admin manages them; a team admin reads its own."""

    path = "/admin/v1/teams"
    tags = ["teams"]

    @get("/")
    async def list_teams(
        self, request: AnyRequest, limit: Limit = 100, after: After = None
    ) -> Page:
        caller, _, snapshot, _ = _context(request)
        teams = [t for t in snapshot.registry.teams if caller.is_org or t.name == caller.team]
        return _page([(t.name, TeamOut.of(t)) for t in teams], after, limit)

    @post("/")
    async def create_team(self, request: AnyRequest, data: JSONBody[TeamIn]) -> TeamOut:
        caller, _, _, editor = _context(request)
        caller.require_org()
        await editor.apply(
            caller, "team.create", data.name, data.name, lambda r: changes.add_team(r, data)
        )
        return TeamOut.of(_team(editor.cache.current(), data.name))

    @get("/{team:str}")
    async def get_team(self, request: AnyRequest, team: FromPath[str]) -> TeamOut:
        caller, _, snapshot, _ = _context(request)
        caller.require_team(team)
        return TeamOut.of(_team(snapshot, team))

    @patch("/{team:str}")
    async def update_team(
        self, request: AnyRequest, team: FromPath[str], data: JSONBody[TeamPatch]
    ) -> TeamOut:
        caller, _, _, editor = _context(request)
        caller.require_org()
        await editor.apply(
            caller, "team.update", team, team, lambda r: changes.patch_team(r, team, data)
        )
        return TeamOut.of(_team(editor.cache.current(), team))

    @delete("/{team:str}")
    async def delete_team(self, request: AnyRequest, team: FromPath[str]) -> None:
        caller, _, _, editor = _context(request)
        caller.require_org()
        await editor.apply(
            caller, "team.delete", team, team, lambda r: changes.delete_team(r, team)
        )


class KeyRoutes(Controller):
    """A team's API keys: shown once, listed by id and name, revoked or rotated."""

    path = "/admin/v1/teams/{team:str}/keys"
    tags = ["keys"]

    @get("/")
    async def list_keys(
        self, request: AnyRequest, team: FromPath[str], limit: Limit = 100, after: After = None
    ) -> Page:
        caller, _, snapshot, _ = _context(request)
        caller.require_team(team)
        return _page([(k.id, KeyOut.of(k)) for k in _team(snapshot, team).keys], after, limit)

    @post("/")
    async def create_key(
        self, request: AnyRequest, team: FromPath[str], data: JSONBody[KeyIn]
    ) -> KeyCreated:
        caller, plane, _, editor = _context(request)
        caller.require_team(team)
        minted: list[str] = []

        def change(registry: Registry) -> changes.Edit:
            edit, plaintext = changes.add_key(registry, team, data, plane.pepper)
            minted[:] = [plaintext]
            return edit

        after = await editor.apply(caller, "key.create", team, data.name, change)
        return KeyCreated(
            **KeyOut.of(
                changes.find_key(editor.cache.current().registry, team, after["id"])
            ).model_dump(),
            key=minted[0],
        )

    @get("/{key_id:str}")
    async def get_key(
        self, request: AnyRequest, team: FromPath[str], key_id: FromPath[str]
    ) -> KeyOut:
        caller, _, snapshot, _ = _context(request)
        caller.require_team(team)
        return KeyOut.of(changes.find_key(snapshot.registry, team, key_id))

    @delete("/{key_id:str}")
    async def revoke_key(
        self, request: AnyRequest, team: FromPath[str], key_id: FromPath[str]
    ) -> None:
        caller, _, _, editor = _context(request)
        caller.require_team(team)
        await editor.apply(
            caller, "key.revoke", team, key_id, lambda r: changes.revoke_key(r, team, key_id)
        )

    @post("/{key_id:str}/rotate")
    async def rotate_key(
        self,
        request: AnyRequest,
        team: FromPath[str],
        key_id: FromPath[str],
        data: JSONBody[RotateIn],
    ) -> KeyCreated:
        caller, plane, _, editor = _context(request)
        caller.require_team(team)
        minted: list[str] = []

        def change(registry: Registry) -> changes.Edit:
            edit, plaintext = changes.rotate_key(
                registry, team, key_id, data.grace_seconds, plane.pepper
            )
            minted[:] = [plaintext]
            return edit

        after = await editor.apply(caller, "key.rotate", team, key_id, change)
        new = changes.find_key(editor.cache.current().registry, team, after["new"]["id"])
        return KeyCreated(**KeyOut.of(new).model_dump(), key=minted[0])


class MappingRoutes(Controller):
    """A team's (task -> adapter) mappings."""

    path = "/admin/v1/teams/{team:str}/mappings"
    tags = ["mappings"]

    @get("/")
    async def list_mappings(
        self, request: AnyRequest, team: FromPath[str], limit: Limit = 100, after: After = None
    ) -> Page:
        caller, _, snapshot, _ = _context(request)
        caller.require_team(team)
        _team(snapshot, team)
        own = [m for m in snapshot.registry.mappings if m.team == team]
        return _page([(m.task, MappingOut.of(m)) for m in own], after, limit)

    @get("/{task:str}")
    async def get_mapping(
        self, request: AnyRequest, team: FromPath[str], task: FromPath[str]
    ) -> MappingOut:
        caller, _, snapshot, _ = _context(request)
        caller.require_team(team)
        mapping = snapshot.mappings.get((team, task))
        if mapping is None:
            raise NotFound("No such mapping.")
        return MappingOut.of(mapping)

    @put("/{task:str}")
    async def put_mapping(
        self,
        request: AnyRequest,
        team: FromPath[str],
        task: FromPath[str],
        data: JSONBody[MappingIn],
    ) -> MappingOut:
        caller, _, _, editor = _context(request)
        caller.require_team(team)
        await editor.apply(
            caller, "mapping.put", team, task, lambda r: changes.put_mapping(r, team, task, data)
        )
        return MappingOut.of(editor.cache.current().mappings[(team, task)])

    @delete("/{task:str}")
    async def delete_mapping(
        self, request: AnyRequest, team: FromPath[str], task: FromPath[str]
    ) -> None:
        caller, _, _, editor = _context(request)
        caller.require_team(team)
        await editor.apply(
            caller, "mapping.delete", team, task, lambda r: changes.delete_mapping(r, team, task)
        )


class PoolRoutes(Controller):
    """Pools (TGI deployments): the org admin only; endpoints must be allowlisted."""

    path = "/admin/v1/pools"
    tags = ["pools"]

    @get("/")
    async def list_pools(
        self, request: AnyRequest, limit: Limit = 100, after: After = None
    ) -> Page:
        caller, _, snapshot, _ = _context(request)
        caller.require_org()
        return _page([(p.name, p) for p in snapshot.registry.pools], after, limit)

    @post("/")
    async def create_pool(self, request: AnyRequest, data: JSONBody[Pool]) -> Pool:
        return await self._put(request, data.name, data, "pool.create")

    @get("/{name:str}")
    async def get_pool(self, request: AnyRequest, name: FromPath[str]) -> Pool:
        caller, _, snapshot, _ = _context(request)
        caller.require_org()
        found = next((p for p in snapshot.registry.pools if p.name == name), None)
        if found is None:
            raise NotFound("No such pool.")
        return found

    @put("/{name:str}")
    async def replace_pool(
        self, request: AnyRequest, name: FromPath[str], data: JSONBody[Pool]
    ) -> Pool:
        return await self._put(request, name, data, "pool.put")

    @delete("/{name:str}")
    async def delete_pool(self, request: AnyRequest, name: FromPath[str]) -> None:
        caller, _, _, editor = _context(request)
        caller.require_org()
        await editor.apply(
            caller, "pool.delete", None, name, lambda r: changes.delete_record(r, "pools", name)
        )

    async def _put(self, request: AnyRequest, name: FromPath[str], data: Pool, action: str) -> Pool:
        caller, plane, _, editor = _context(request)
        caller.require_org()
        if data.name != name:
            raise NotFound("The pool name in the body differs from the URL.")
        check_endpoints(data, plane.settings)
        await editor.apply(
            caller, action, None, name, lambda r: changes.put_record(r, "pools", data)
        )
        return data


class AdapterRoutes(Controller):
    """Adapter records (ownership, grants): the org admin writes; a team admin reads
    the adapters its team may use."""

    path = "/admin/v1/adapters"
    tags = ["adapters"]

    @get("/")
    async def list_adapters(
        self, request: AnyRequest, limit: Limit = 100, after: After = None
    ) -> Page:
        caller, _, snapshot, _ = _context(request)
        visible = [
            a for a in snapshot.registry.adapters if caller.is_org or may_use(a, caller.team)
        ]
        return _page([(a.id, a) for a in visible], after, limit)

    @post("/")
    async def create_adapter(self, request: AnyRequest, data: JSONBody[Adapter]) -> Adapter:
        caller, _, _, editor = _context(request)
        caller.require_org()
        await editor.apply(
            caller,
            "adapter.put",
            data.owner,
            data.id,
            lambda r: changes.put_record(r, "adapters", data),
        )
        return data

    @get("/{adapter_id:path}")
    async def get_adapter(self, request: AnyRequest, adapter_id: FromPath[str]) -> Adapter:
        caller, _, snapshot, _ = _context(request)
        found = next(
            (a for a in snapshot.registry.adapters if a.id == adapter_id.lstrip("/")), None
        )
        if found is None or not (caller.is_org or may_use(found, caller.team)):
            raise NotFound("No such adapter.")
        return found

    @delete("/{adapter_id:path}")
    async def delete_adapter(self, request: AnyRequest, adapter_id: FromPath[str]) -> None:
        caller, _, _, editor = _context(request)
        caller.require_org()
        ident = adapter_id.lstrip("/")
        await editor.apply(
            caller,
            "adapter.delete",
            None,
            ident,
            lambda r: changes.delete_record(r, "adapters", ident),
        )


class AuditRoutes(Controller):
    """The change history; a team admin sees its own team's entries only."""

    path = "/admin/v1/audit"
    tags = ["audit"]

    @get("/")
    async def list_audit(
        self,
        request: AnyRequest,
        team: FromQuery[str | None] = None,
        actor: FromQuery[str | None] = None,
        action: FromQuery[str | None] = None,
        since: FromQuery[datetime | None] = None,
        before: FromQuery[str | None] = None,
        limit: Limit = 100,
    ) -> list[AuditEntry]:
        caller, _, _, editor = _context(request)
        if not caller.is_org:
            if team is not None and team != caller.team:
                return []
            team = caller.team
        query = Query(
            team=team, actor=actor, action=action, since=since, before=before, limit=limit
        )
        return await editor.audit.query(query)


class UsageRoutes(Controller):
    """Token and cost totals per team and adapter; a team admin sees its own team only."""

    path = "/admin/v1/usage"
    tags = ["usage"]

    @get("/")
    async def usage(
        self,
        request: AnyRequest,
        team: FromQuery[str | None] = None,
        adapter: FromQuery[str | None] = None,
        since: FromQuery[datetime | None] = None,
    ) -> list[UsageOut]:
        caller, plane, snapshot, _ = _context(request)
        teams = sorted(snapshot.teams) if caller.is_org else [str(caller.team)]
        if team is not None:
            teams = [t for t in teams if t == team]
        start = datetime.now(UTC) - DAY if since is None else since
        start = start if start.tzinfo else start.replace(tzinfo=UTC)
        await plane.usage.flush()  # include this replica's last second
        rows = await plane.usage.totals(teams, adapter, start)
        return [UsageOut(**asdict(row)) for row in rows]


ROUTES = [TeamRoutes, KeyRoutes, MappingRoutes, PoolRoutes, AdapterRoutes, AuditRoutes, UsageRoutes]
DAY = timedelta(days=1)
