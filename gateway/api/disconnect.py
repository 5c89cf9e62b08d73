"""Abandoned requests stop: a client that hangs up cancels the work done for it."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, TypeVar

from litestar import Request

from gateway.errors import ClientDisconnected

T = TypeVar("T")


async def unless_disconnected(request: Request[Any, Any, Any], work: Awaitable[T]) -> T:
    """``work``'s result, or ``ClientDisconnected`` (and ``work`` cancelled) if the client
    hangs up first: an abandoned request must not keep a GPU busy.

    ``work`` runs in this task (a task of its own would cost every request); a watcher
    task cancels this one when the client leaves.
    """
    current = asyncio.current_task()
    assert current is not None
    watching, hung_up = True, False

    def hang_up(watcher: asyncio.Task[None]) -> None:
        nonlocal hung_up
        # The callback may run after ``work`` is over: then it must not cancel anything.
        if watching and not watcher.cancelled() and watcher.exception() is None:
            hung_up = True
            current.cancel()

    watcher = asyncio.ensure_future(_disconnect(request))
    watcher.add_done_callback(hang_up)
    try:
        return await work
    except asyncio.CancelledError:
        if hung_up and current.uncancel() == 0:  # our cancellation, not the server's
            raise ClientDisconnected("The client closed the connection.") from None
        raise
    finally:
        watching = False
        watcher.cancel()


async def _disconnect(request: Request[Any, Any, Any]) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass
