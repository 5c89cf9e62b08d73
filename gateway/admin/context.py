"""What every admin handler starts with: who calls, the plane, the registry, the editor;
and the paging every list shares."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Request
from litestar.params import FromPath, QueryParameter

from gateway.admin.callers import Caller, identify
from gateway.admin.editor import Editor
from gateway.admin.schemas import (
    Page,
)
from gateway.errors import NotFound
from gateway.plane import DataPlane
from gateway.registry import Snapshot

AnyRequest = Request[Any, Any, Any]
Limit = Annotated[int, QueryParameter(ge=1, le=500, description="Page size.")]
After = Annotated[
    str | None, QueryParameter(description="Return items after this one (the `next` value).")
]


def context(request: AnyRequest) -> tuple[Caller, DataPlane, Snapshot, Editor]:
    plane: DataPlane = request.app.state.plane
    snapshot = plane.registry.current()
    caller = identify(request.headers.get("authorization"), plane.settings, snapshot, plane.pepper)
    return caller, plane, snapshot, request.app.state.editor


def page(items: list[tuple[str, Any]], after: str | None, limit: int) -> Page:
    """Items sorted by name, those after the cursor, one page of them."""
    rest = [
        (name, item)
        for name, item in sorted(items, key=lambda p: p[0])
        if after is None or name > after
    ]
    page = rest[:limit]
    return Page(data=[item for _, item in page], next=page[-1][0] if len(rest) > limit else None)


def team_of(snapshot: Snapshot, name: FromPath[str]) -> Any:
    found = snapshot.teams.get(name)
    if found is None:
        raise NotFound("No such team.")
    return found
