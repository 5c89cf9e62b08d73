"""The paging every admin list shares: sorted by name, a cursor, a page size."""

from __future__ import annotations

from typing import Annotated, Any

from litestar.params import QueryParameter

from gateway.admin.schemas import Page

Limit = Annotated[int, QueryParameter(ge=1, le=500, description="Page size.")]
After = Annotated[
    str | None, QueryParameter(description="Return items after this one (the `next` value).")
]


def page(items: list[tuple[str, Any]], after: str | None, limit: int) -> Page:
    """Items sorted by name, those after the cursor, one page of them."""
    rest = [
        (name, item)
        for name, item in sorted(items, key=lambda p: p[0])
        if after is None or name > after
    ]
    page = rest[:limit]
    return Page(data=[item for _, item in page], next=page[-1][0] if len(rest) > limit else None)
