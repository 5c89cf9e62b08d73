"""The admin REST API's history: the audit log of changes, and usage totals."""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime, timedelta

from litestar import Controller, get
from litestar.params import FromQuery

from gateway.admin.audit import Query
from gateway.admin.dependencies import CallerParam, EditorParam, ServicesParam, SnapshotParam
from gateway.admin.paging import Limit
from gateway.admin.schemas import AuditEntry, UsageOut

DAY = timedelta(days=1)


class AuditRoutes(Controller):
    """The change history; a team admin sees its own team's entries only."""

    path = "/admin/v1/audit"
    tags = ["audit"]

    @get("/")
    async def list_audit(
        self,
        caller: CallerParam,
        editor: EditorParam,
        team: FromQuery[str | None] = None,
        actor: FromQuery[str | None] = None,
        action: FromQuery[str | None] = None,
        since: FromQuery[datetime | None] = None,
        before: FromQuery[str | None] = None,
        limit: Limit = 100,
    ) -> list[AuditEntry]:
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
        caller: CallerParam,
        services: ServicesParam,
        snapshot: SnapshotParam,
        team: FromQuery[str | None] = None,
        adapter: FromQuery[str | None] = None,
        since: FromQuery[datetime | None] = None,
    ) -> list[UsageOut]:
        teams = sorted(snapshot.teams) if caller.is_org else [str(caller.team)]
        if team is not None:
            teams = [t for t in teams if t == team]
        start = datetime.now(UTC) - DAY if since is None else since
        start = start if start.tzinfo else start.replace(tzinfo=UTC)
        await services.accounting.usage.flush()  # include this replica's last second
        rows = await services.accounting.usage.totals(teams, adapter, start)
        return [UsageOut(**asdict(row)) for row in rows]
