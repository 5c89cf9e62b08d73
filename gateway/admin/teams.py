"""The admin REST API for teams, their keys and their mappings."""

from __future__ import annotations

from litestar import Controller, delete, get, patch, post, put
from litestar.params import FromPath, JSONBody

from gateway.admin import changes
from gateway.admin.dependencies import CallerParam, EditorParam, ServicesParam, SnapshotParam
from gateway.admin.paging import After, Limit, page
from gateway.admin.schemas import (
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
)
from gateway.errors import NotFound
from gateway.registry import Registry, Team


class TeamRoutes(Controller):
    """Teams: the org admin manages them; a team admin reads its own."""

    path = "/admin/v1/teams"
    tags = ["teams"]

    @get("/")
    async def list_teams(
        self,
        caller: CallerParam,
        snapshot: SnapshotParam,
        limit: Limit = 100,
        after: After = None,
    ) -> Page:
        teams = [t for t in snapshot.registry.teams if caller.is_org or t.name == caller.team]
        return page([(t.name, TeamOut.of(t)) for t in teams], after, limit)

    @post("/")
    async def create_team(
        self,
        caller: CallerParam,
        editor: EditorParam,
        data: JSONBody[TeamIn],
    ) -> TeamOut:
        caller.require_org()
        await editor.apply(
            caller, "team.create", data.name, data.name, lambda r: changes.add_team(r, data)
        )
        return TeamOut.of(team_of(editor.cache.current(), data.name))

    @get("/{team:str}")
    async def get_team(
        self,
        caller: CallerParam,
        snapshot: SnapshotParam,
        team: FromPath[str],
    ) -> TeamOut:
        caller.require_team(team)
        return TeamOut.of(team_of(snapshot, team))

    @patch("/{team:str}")
    async def update_team(
        self,
        caller: CallerParam,
        editor: EditorParam,
        team: FromPath[str],
        data: JSONBody[TeamPatch],
    ) -> TeamOut:
        caller.require_org()
        await editor.apply(
            caller, "team.update", team, team, lambda r: changes.patch_team(r, team, data)
        )
        return TeamOut.of(team_of(editor.cache.current(), team))

    @delete("/{team:str}")
    async def delete_team(
        self, caller: CallerParam, editor: EditorParam, team: FromPath[str]
    ) -> None:
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
        self,
        caller: CallerParam,
        snapshot: SnapshotParam,
        team: FromPath[str],
        limit: Limit = 100,
        after: After = None,
    ) -> Page:
        caller.require_team(team)
        return page([(k.id, KeyOut.of(k)) for k in team_of(snapshot, team).keys], after, limit)

    @post("/")
    async def create_key(
        self,
        caller: CallerParam,
        services: ServicesParam,
        editor: EditorParam,
        team: FromPath[str],
        data: JSONBody[KeyIn],
    ) -> KeyCreated:
        caller.require_team(team)
        minted: list[str] = []

        def change(registry: Registry) -> changes.Edit:
            edit, plaintext = changes.add_key(registry, team, data, services.pepper)
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
        self,
        caller: CallerParam,
        snapshot: SnapshotParam,
        team: FromPath[str],
        key_id: FromPath[str],
    ) -> KeyOut:
        caller.require_team(team)
        return KeyOut.of(changes.find_key(snapshot.registry, team, key_id))

    @delete("/{key_id:str}")
    async def revoke_key(
        self,
        caller: CallerParam,
        editor: EditorParam,
        team: FromPath[str],
        key_id: FromPath[str],
    ) -> None:
        caller.require_team(team)
        await editor.apply(
            caller, "key.revoke", team, key_id, lambda r: changes.revoke_key(r, team, key_id)
        )

    @post("/{key_id:str}/rotate")
    async def rotate_key(
        self,
        caller: CallerParam,
        services: ServicesParam,
        editor: EditorParam,
        team: FromPath[str],
        key_id: FromPath[str],
        data: JSONBody[RotateIn],
    ) -> KeyCreated:
        caller.require_team(team)
        minted: list[str] = []

        def change(registry: Registry) -> changes.Edit:
            edit, plaintext = changes.rotate_key(
                registry, team, key_id, data.grace_seconds, services.pepper
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
        self,
        caller: CallerParam,
        snapshot: SnapshotParam,
        team: FromPath[str],
        limit: Limit = 100,
        after: After = None,
    ) -> Page:
        caller.require_team(team)
        team_of(snapshot, team)
        own = [m for m in snapshot.registry.mappings if m.team == team]
        return page([(m.task, MappingOut.of(m)) for m in own], after, limit)

    @get("/{task:str}")
    async def get_mapping(
        self,
        caller: CallerParam,
        snapshot: SnapshotParam,
        team: FromPath[str],
        task: FromPath[str],
    ) -> MappingOut:
        caller.require_team(team)
        mapping = snapshot.mappings.get((team, task))
        if mapping is None:
            raise NotFound("No such mapping.")
        return MappingOut.of(mapping)

    @put("/{task:str}")
    async def put_mapping(
        self,
        caller: CallerParam,
        editor: EditorParam,
        team: FromPath[str],
        task: FromPath[str],
        data: JSONBody[MappingIn],
    ) -> MappingOut:
        caller.require_team(team)
        await editor.apply(
            caller, "mapping.put", team, task, lambda r: changes.put_mapping(r, team, task, data)
        )
        return MappingOut.of(editor.cache.current().mappings[(team, task)])

    @delete("/{task:str}")
    async def delete_mapping(
        self,
        caller: CallerParam,
        editor: EditorParam,
        team: FromPath[str],
        task: FromPath[str],
    ) -> None:
        caller.require_team(team)
        await editor.apply(
            caller, "mapping.delete", team, task, lambda r: changes.delete_mapping(r, team, task)
        )


def team_of(snapshot: SnapshotParam, name: str) -> Team:
    """The team, or 404."""
    found = snapshot.teams.get(name)
    if found is None:
        raise NotFound("No such team.")
    return found
