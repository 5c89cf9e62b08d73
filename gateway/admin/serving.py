"""The admin REST API for what the organization runs: pools and adapter records."""

from __future__ import annotations

from litestar import Controller, delete, get, post, put
from litestar.params import FromPath, JSONBody

from gateway.admin import changes
from gateway.admin.dependencies import CallerParam, EditorParam, ServicesParam, SnapshotParam
from gateway.admin.paging import After, Limit, page
from gateway.admin.schemas import Page
from gateway.errors import NotFound
from gateway.policy import may_use
from gateway.registry import Adapter, Pool
from gateway.upstream.allowlist import check_endpoints


class PoolRoutes(Controller):
    """Pools (TGI deployments): the org admin only; endpoints must be allowlisted."""

    path = "/admin/v1/pools"
    tags = ["pools"]

    @get("/")
    async def list_pools(
        self,
        caller: CallerParam,
        snapshot: SnapshotParam,
        limit: Limit = 100,
        after: After = None,
    ) -> Page:
        caller.require_org()
        return page([(p.name, p) for p in snapshot.registry.pools], after, limit)

    @post("/")
    async def create_pool(
        self,
        caller: CallerParam,
        services: ServicesParam,
        editor: EditorParam,
        data: JSONBody[Pool],
    ) -> Pool:
        return await _put_pool(caller, services, editor, data.name, data, "pool.create")

    @get("/{name:str}")
    async def get_pool(
        self,
        caller: CallerParam,
        snapshot: SnapshotParam,
        name: FromPath[str],
    ) -> Pool:
        caller.require_org()
        found = next((p for p in snapshot.registry.pools if p.name == name), None)
        if found is None:
            raise NotFound("No such pool.")
        return found

    @put("/{name:str}")
    async def replace_pool(
        self,
        caller: CallerParam,
        services: ServicesParam,
        editor: EditorParam,
        name: FromPath[str],
        data: JSONBody[Pool],
    ) -> Pool:
        return await _put_pool(caller, services, editor, name, data, "pool.put")

    @delete("/{name:str}")
    async def delete_pool(
        self, caller: CallerParam, editor: EditorParam, name: FromPath[str]
    ) -> None:
        caller.require_org()
        await editor.apply(
            caller, "pool.delete", None, name, lambda r: changes.delete_record(r, "pools", name)
        )


class AdapterRoutes(Controller):
    """Adapter records (ownership, grants): the org admin writes; a team admin reads
    the adapters its team may use."""

    path = "/admin/v1/adapters"
    tags = ["adapters"]

    @get("/")
    async def list_adapters(
        self,
        caller: CallerParam,
        snapshot: SnapshotParam,
        limit: Limit = 100,
        after: After = None,
    ) -> Page:
        visible = [
            a for a in snapshot.registry.adapters if caller.is_org or may_use(a, caller.team)
        ]
        return page([(a.id, a) for a in visible], after, limit)

    @post("/")
    async def create_adapter(
        self,
        caller: CallerParam,
        editor: EditorParam,
        data: JSONBody[Adapter],
    ) -> Adapter:
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
    async def get_adapter(
        self,
        caller: CallerParam,
        snapshot: SnapshotParam,
        adapter_id: FromPath[str],
    ) -> Adapter:
        found = next(
            (a for a in snapshot.registry.adapters if a.id == adapter_id.lstrip("/")), None
        )
        if found is None or not (caller.is_org or may_use(found, caller.team)):
            raise NotFound("No such adapter.")
        return found

    @delete("/{adapter_id:path}")
    async def delete_adapter(
        self,
        caller: CallerParam,
        editor: EditorParam,
        adapter_id: FromPath[str],
    ) -> None:
        caller.require_org()
        ident = adapter_id.lstrip("/")
        await editor.apply(
            caller,
            "adapter.delete",
            None,
            ident,
            lambda r: changes.delete_record(r, "adapters", ident),
        )


async def _put_pool(
    caller: CallerParam,
    services: ServicesParam,
    editor: EditorParam,
    name: str,
    data: Pool,
    action: str,
) -> Pool:
    caller.require_org()
    if data.name != name:
        raise NotFound("The pool name in the body differs from the URL.")
    check_endpoints(data, services.settings)
    await editor.apply(caller, action, None, name, lambda r: changes.put_record(r, "pools", data))
    return data
