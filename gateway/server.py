"""Running both planes in one process: uvicorn (uvloop + httptools), one event loop."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn
from litestar import Litestar

from gateway.app import create_admin_app, create_app
from gateway.plane import DataPlane
from gateway.settings import Settings

log = logging.getLogger("gateway")


class PlaneServer(uvicorn.Server):
    """A uvicorn server that leaves signals to its runner (two servers share one process)."""

    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    @property
    def port(self) -> int:
        """The port actually bound (useful when configured as 0)."""
        return int(self.servers[0].sockets[0].getsockname()[1])


def plane_server(app: Litestar, host: str, port: int, grace: float) -> PlaneServer:
    """A uvicorn server for one plane with the production settings."""
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=False,
        log_config=None,  # the CLI configured logging (uvicorn's would close our handlers)
        log_level="warning",
        timeout_graceful_shutdown=int(grace),
        server_header=False,
        proxy_headers=False,  # nothing here reads the client address; one layer less
    )
    return PlaneServer(config)


def plane_servers(settings: Settings, plane: DataPlane) -> list[PlaneServer]:
    """The data-plane and admin-plane servers of one replica."""
    grace = settings.shutdown_grace_seconds
    return [
        plane_server(create_app(settings, plane), settings.host, settings.port, grace),
        plane_server(create_admin_app(settings, plane), settings.host, settings.admin_port, grace),
    ]


async def run_until_signalled(servers: list[PlaneServer]) -> None:
    """Serve until SIGINT or SIGTERM, then drain every server together."""
    loop = asyncio.get_running_loop()

    def stop() -> None:
        for server in servers:
            server.should_exit = True

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop)
    try:
        await asyncio.gather(*(server.serve() for server in servers))
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def run(main: Coroutine[Any, Any, None]) -> None:
    """Run a coroutine on uvloop (the event loop production uses)."""
    import uvloop

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main)
