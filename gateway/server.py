"""Running both planes in one process: uvicorn (uvloop + httptools), one event loop."""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
from collections.abc import Coroutine, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn
from litestar import Litestar

from gateway.app import create_admin_app, create_app
from gateway.connections import ConnectionGuard, uvicorn_options
from gateway.errors import StartRefused
from gateway.services import Services
from gateway.settings import Settings

log = logging.getLogger("gateway")
ADMIN_CONNECTIONS = 1024
"""The admin plane's own bound: operators and scrapers, not the public."""


class PlaneServer(uvicorn.Server):
    """A uvicorn server that leaves signals to its runner (two servers share one process)."""

    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    @property
    def port(self) -> int:
        """The port actually bound (useful when configured as 0)."""
        return int(self.servers[0].sockets[0].getsockname()[1])


class GranianServer:
    """One plane under Granian's embedded server (``LGW_SERVER=granian``), with the
    interface the runner uses: ``serve()``, ``started``, ``port``, ``should_exit``."""

    def __init__(self, app: Litestar, host: str, port: int) -> None:
        from granian.constants import Interfaces
        from granian.server.embed import Server

        self.port = port or _free_port(host)  # Granian does not report a port 0 back
        self._host = host
        self._server = Server(
            app, address=host, port=self.port, interface=Interfaces.ASGI, log_enabled=False
        )
        self.started = False
        self._should_exit = False

    @property
    def should_exit(self) -> bool:
        return self._should_exit

    @should_exit.setter
    def should_exit(self, value: bool) -> None:
        self._should_exit = value
        if value:
            self._server.stop()  # type: ignore[no-untyped-call,unused-ignore]

    async def serve(self) -> None:
        serving = asyncio.ensure_future(self._server.serve())
        for _ in range(1000):  # bounded: it listens within milliseconds
            if serving.done() or await _listening(self._host, self.port):
                break
            await asyncio.sleep(0.01)  # polling the port, bounded above
        self.started = not serving.done()
        await serving


def _free_port(host: str) -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


async def _listening(host: str, port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection(host, port)
    except OSError:
        return False
    writer.close()
    return True


def plane_server(
    app: Litestar,
    host: str,
    port: int,
    grace: float,
    kind: str = "uvicorn",
    guard: dict[str, Any] | None = None,
) -> PlaneServer | GranianServer:
    """A server for one plane with the production settings; ``guard``: the uvicorn
    options of its ``ConnectionGuard``."""
    if kind == "granian":
        return GranianServer(app, host, port)
    options: dict[str, Any] = {"http": "httptools", **(guard or {})}
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        loop="uvloop",
        lifespan="on",
        access_log=False,
        log_config=None,  # the CLI configured logging (uvicorn's would close our handlers)
        log_level="warning",
        timeout_graceful_shutdown=int(grace),
        server_header=False,
        proxy_headers=False,  # nothing here reads the client address; one layer less
        **options,
    )
    return PlaneServer(config)


def check_ports_free(host: str, ports: Iterable[int]) -> None:
    """``StartRefused`` when a port is taken: checked before anything is printed or
    written, so a second demo or gateway leaves the running one (and its keys) alone."""
    for port in ports:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers do
            try:
                probe.bind((host, port))
            except OSError as exc:
                raise StartRefused(
                    f"port {port} on {host} is taken ({exc.strerror}): is another gateway or "
                    "demo running? Choose others with --port and --admin-port"
                ) from None


def plane_servers(settings: Settings, services: Services) -> list[PlaneServer | GranianServer]:
    """The data-plane and admin-plane servers of one replica."""
    s, grace, kind = settings, settings.shutdown_grace_seconds, settings.server
    data = _guard(s, services, "data", s.max_connections)
    admin = _guard(s, services, "admin", min(s.max_connections, ADMIN_CONNECTIONS))
    return [
        plane_server(create_app(s, services), s.host, s.port, grace, kind, data),
        plane_server(create_admin_app(s, services), s.host, s.admin_port, grace, kind, admin),
    ]


def _guard(settings: Settings, services: Services, plane: str, limit: int) -> dict[str, Any]:
    guard = ConnectionGuard(
        plane,
        limit,
        settings.header_timeout_seconds,
        settings.body_timeout_seconds,
        settings.client_write_timeout_seconds,
        services.metrics,
    )
    return uvicorn_options(guard, settings.keepalive_seconds)


async def run_until_signalled(servers: list[PlaneServer | GranianServer]) -> None:
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
